"""A Service reported while its pods were still starting joins its workload's incident; once that incident ends
(the pods became ready, nothing was wrong with them) the Service is looked at again and, since it is still broken
(its named targetPort matches no container port), gets an incident of its own. This was the root of the demo's
"service-named-port: no final phase" flake: the Service's Result never changed, so nobody looked again."""

from __future__ import annotations

from tests import factories
from tests.integration.conftest import Kube, Operator, wait_for

NS = "gateway"


def test_a_symptom_is_looked_at_again_when_its_incident_ends(kube: Kube, operator: Operator) -> None:
    deploy = factories.deployment(NS, "echo", "hashicorp/http-echo:1.0", replicas=1)
    deploy["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 5678}]
    kube.create(deploy)
    rs = factories.replicaset(deploy, "6b7f9c8d4")
    kube.create(rs)
    starting = {"running": {"startedAt": "2026-12-02T02:00:00Z"}}
    pod = factories.pod(rs, "k2x9q", state=starting, phase="Running")  # running, not ready yet
    kube.create(pod)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": NS},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "web"}]},  # no port "web"
        }
    )
    kube.create({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "echo", "namespace": NS}})
    operator.env["AEGIS_SETTLE_SECONDS"] = "1"
    operator.start()
    kube.create(factories.result(NS, "echo", ["Service has no endpoints, expected label app=echo"], kind="Service"))
    joined = wait_for(
        lambda: [i for i in kube.incidents(NS) if i["spec"]["target"]["kind"] == "Deployment"],
        30,
        what="the Service to join the Deployment's incident while its pod is not ready",
    )
    assert [s["kind"] for s in joined[0]["spec"]["sources"]] == ["Service"]

    # The pod becomes ready: the Deployment was only starting, and its incident ends with nothing to fix.
    ready = {"conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
    ready["containerStatuses"] = [{**pod["status"]["containerStatuses"][0], "ready": True, "started": True}]
    kube.core.patch_namespaced_pod_status(pod["metadata"]["name"], NS, {"status": ready})
    kube.apps.patch_namespaced_deployment_status(
        "echo", NS, {"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}}
    )

    service = wait_for(
        lambda: [
            i
            for i in kube.incidents(NS)
            if i["spec"]["target"]["kind"] == "Service" and (i.get("status") or {}).get("phase") == "Diagnosed"
        ],
        90,
        what="the Service's own incident once the Deployment's has ended",
    )
    assert service[0]["metadata"]["name"] == "service-echo"
    assert service[0]["status"]["diagnosis"]["category"] == "service-port-mismatch", service[0]["status"]
    deployment = next(i for i in kube.incidents(NS) if i["spec"]["target"]["kind"] == "Deployment")
    assert deployment["status"]["phase"] in ("Resolved", "Diagnosed"), deployment["status"]
    assert operator.stop() == 0, operator.log()
    assert "Traceback" not in operator.log(), operator.log()
