"""The real operator (`kopf run -m handlers`, real HTTP, the real `kubernetes` client) against the
emulated Kubernetes API: a K8sGPT Result becomes a diagnosed Incident in the workload's namespace."""

from __future__ import annotations

import time

from tests import factories
from tests.integration.conftest import Kube, Operator, wait_for

NS = "shop"
IMAGE = "registry.example.com/shop/frontend:v2.3.9"
PULL_TEXT = f'Back-off pulling image "{IMAGE}"'


def arrange_broken_frontend(kube: Kube) -> tuple[dict, dict, dict]:
    deploy = factories.deployment(NS, "frontend", IMAGE)
    kube.create(deploy)
    rs = factories.replicaset(deploy, "7b9c6d5f4")
    kube.create(rs)
    pod_a = factories.pod(rs, "x8k2p", state=factories.image_pull_backoff(IMAGE))
    pod_b = factories.pod(rs, "q4wzl", state=factories.image_pull_backoff(IMAGE))
    for body in (pod_a, pod_b):
        kube.create(body)
    for index, pod in enumerate((pod_a, pod_b)):
        name = pod["metadata"]["name"]
        kube.create(
            factories.event(
                NS,
                f"{name}.{index}a",
                kind="Pod",
                obj=name,
                reason="Failed",
                message=f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = '
                f'failed to pull and unpack image "{IMAGE}": not found',
            )
        )
        kube.create(
            factories.event(
                NS, f"{name}.{index}b", kind="Pod", obj=name, reason="BackOff", message=PULL_TEXT, type_="Normal"
            )
        )
    return deploy, pod_a, pod_b


def settled(kube: Kube, phase: str = "Diagnosed") -> list[dict]:
    items = kube.incidents(NS)
    return items if items and all((i.get("status") or {}).get("phase") == phase for i in items) else []


def test_result_becomes_diagnosed_incident_and_duplicates_join(kube: Kube, operator: Operator) -> None:
    deploy, pod_a, pod_b = arrange_broken_frontend(kube)
    operator.start()

    first = factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT])
    kube.create(first)
    items = wait_for(lambda: settled(kube), 30, what="a Diagnosed incident")
    assert len(items) == 1, items
    incident = items[0]
    assert incident["metadata"]["name"] == "deployment-frontend"
    assert incident["metadata"]["namespace"] == NS
    assert incident["spec"]["target"] == {
        "kind": "Deployment",
        "namespace": NS,
        "name": "frontend",
        "apiVersion": "apps/v1",
        "uid": deploy["metadata"]["uid"],
    }
    assert [ref["kind"] for ref in incident["spec"]["ownerChain"]] == ["Pod", "ReplicaSet"]
    status = incident["status"]
    assert status["diagnosis"]["category"] == "image-pull"
    assert status["diagnosis"]["source"] == "rules"
    assert IMAGE in status["diagnosis"]["summary"]
    assert "does not exist" in status["diagnosis"]["summary"]
    stages = [line["stage"] for line in status["timeline"]]
    assert stages == ["intake", "intake", "gather", "diagnose", "report"], status["timeline"]

    # K8sGPT rewrites the same Result every cycle: status lifecycle historical. Nothing changes.
    kube.custom.patch_namespaced_custom_object_status(
        "core.k8sgpt.ai",
        "v1alpha1",
        "k8sgpt-operator-system",
        "results",
        first["metadata"]["name"],
        {"status": {"lifecycle": "historical", "contentHash": "ab12"}},
    )
    time.sleep(2.0)
    assert kube.incidents(NS) == [incident]

    # A second pod of the same Deployment fails the same way: it joins the same Incident.
    kube.create(factories.result(NS, pod_b["metadata"]["name"], [PULL_TEXT], lifecycle="created"))
    joined = wait_for(
        lambda: [i for i in kube.incidents(NS) if len(i["spec"]["sources"]) == 2], 30, what="the second source to join"
    )
    assert len(kube.incidents()) == 1
    assert {s["object"] for s in joined[0]["spec"]["sources"]} == {
        f"{NS}/{pod_a['metadata']['name']}",
        f"{NS}/{pod_b['metadata']['name']}",
    }
    assert joined[0]["status"]["phase"] == "Diagnosed"

    assert operator.stop() == 0, operator.log()
    assert "Traceback" not in operator.log(), operator.log()
