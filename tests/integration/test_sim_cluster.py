"""The emulated cluster's controllers, kubelet stand-in and K8sGPT analyzer, through the real client."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from aegis.sim import cluster
from tests.integration.conftest import Kube, wait_for

NS = "lab"


@pytest.fixture()
def lab(tmp_path: pathlib.Path) -> Iterator[tuple[cluster.SimCluster, Kube]]:
    options = cluster.ClusterOptions(speed=20, analyzer_interval=30)
    with cluster.SimCluster(tmp_path / "kubeconfig", options) as sim:
        api = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
        kube = Kube(api)
        kube.namespace(NS)
        yield sim, kube
        api.close()


def deploy(kube: Kube, name: str, container: dict[str, Any], replicas: int = 2, **pod_spec: Any) -> None:
    labels = {"app": name}
    kube.apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container], **pod_spec}},
            },
        },
    )


def pods(kube: Kube, app: str) -> list[Any]:
    return kube.core.list_namespaced_pod(NS, label_selector=f"app={app}").items


def events_for(kube: Kube, name: str) -> list[tuple[str, str, str]]:
    items = kube.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message) for e in items]


def available(kube: Kube, name: str) -> Callable[[], bool]:
    def check() -> bool:
        status = kube.apps.read_namespaced_deployment(name, NS).status
        return status.ready_replicas == 2 and status.updated_replicas == 2 and (status.replicas or 0) == 2

    return check


def waiting(kube: Kube, app: str, reason: str) -> Callable[[], Any]:
    def check() -> Any:
        for pod in pods(kube, app):
            for cs in pod.status.container_statuses or []:
                if cs.state.waiting and cs.state.waiting.reason == reason:
                    return pod, cs
        return None

    return check


def test_rollout_bad_tag_and_rollback_through_revisions(lab: tuple[cluster.SimCluster, Kube]) -> None:
    _, kube = lab
    deploy(
        kube,
        "web",
        {
            "name": "nginx",
            "image": "nginx:1.27",
            "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 2},
        },
    )
    wait_for(available(kube, "web"), 20, what="web to be available")
    first = kube.apps.list_namespaced_replica_set(NS).items
    assert [rs.metadata.annotations["deployment.kubernetes.io/revision"] for rs in first] == ["1"]

    kube.apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.277"}]}}}}
    )
    pod, status = wait_for(waiting(kube, "web", "ImagePullBackOff"), 20, what="ImagePullBackOff")
    assert status.state.waiting.message == 'Back-off pulling image "nginx:1.277"'
    messages = [m for _, _, m in events_for(kube, pod.metadata.name)]
    assert (
        'Failed to pull image "nginx:1.277": rpc error: code = NotFound desc = failed to pull and unpack image '
        '"docker.io/library/nginx:1.277": failed to resolve reference "docker.io/library/nginx:1.277": '
        "docker.io/library/nginx:1.277: not found"
    ) in messages
    assert "Error: ErrImagePull" in messages and 'Back-off pulling image "nginx:1.277"' in messages
    # The rollout stalls with the old pods serving (maxUnavailable 25% of 2 rounds down to 0).
    status = kube.apps.read_namespaced_deployment("web", NS).status
    assert status.ready_replicas == 2 and status.updated_replicas == 1
    revisions = {
        rs.metadata.name: rs.metadata.annotations["deployment.kubernetes.io/revision"]
        for rs in kube.apps.list_namespaced_replica_set(NS).items
    }
    assert sorted(revisions.values()) == ["1", "2"]

    # Rolling back = the old template again: the old ReplicaSet is reused and becomes revision 3.
    kube.apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}
    )
    wait_for(available(kube, "web"), 20, what="the rollback to finish")
    wait_for(lambda: len(pods(kube, "web")) == 2, 10, what="the bad pod to go")
    sets = {rs.metadata.name: rs for rs in kube.apps.list_namespaced_replica_set(NS).items}
    old = sets[first[0].metadata.name]
    assert old.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert old.spec.replicas == 2
    assert [rs.spec.replicas for name, rs in sets.items() if name != old.metadata.name] == [0]


def test_kubelet_failures_as_the_real_kubelet_reports_them(lab: tuple[cluster.SimCluster, Kube]) -> None:
    sim, kube = lab
    deploy(
        kube,
        "oom",
        {
            "name": "stress",
            "image": "polinux/stress",
            "command": ["stress"],
            "args": ["--vm", "1", "--vm-bytes", "150M", "--vm-hang", "1"],
            "resources": {"limits": {"memory": "100Mi"}},
        },
        replicas=1,
    )
    deploy(kube, "db", {"name": "postgres", "image": "postgres:16"}, replicas=1)
    deploy(
        kube,
        "cfg",
        {
            "name": "app",
            "image": "busybox:1.36",
            "command": ["sh", "-c", "sleep 3600"],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "t"}}}],
        },
        replicas=1,
    )
    deploy(
        kube,
        "live",
        {
            "name": "podinfo",
            "image": "ghcr.io/stefanprodan/podinfo:6.7.1",
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2, "failureThreshold": 2},
        },
        replicas=1,
    )

    pod, status = wait_for(waiting(kube, "oom", "CrashLoopBackOff"), 30, what="OOM crash loop")
    assert (status.last_state.terminated.reason, status.last_state.terminated.exit_code) == ("OOMKilled", 137)

    pod, status = wait_for(waiting(kube, "db", "CrashLoopBackOff"), 30, what="postgres crash loop")
    assert status.last_state.terminated.exit_code == 1
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, NS, previous=True)
    assert "You must specify POSTGRES_PASSWORD to a non-empty value for the" in log
    assert any(
        reason == "BackOff" and "Back-off restarting failed container postgres" in message
        for _, reason, message in events_for(kube, pod.metadata.name)
    )

    pod, status = wait_for(waiting(kube, "cfg", "CreateContainerConfigError"), 30, what="config error")
    assert status.state.waiting.message == 'secret "api-token" not found'
    kube.core.create_namespaced_secret(NS, {"metadata": {"name": "api-token"}, "stringData": {"t": "x"}})
    wait_for(
        lambda: all(cs.ready for p in pods(kube, "cfg") for cs in p.status.container_statuses or []),
        20,
        what="the container to start once the Secret exists",
    )

    pod, _ = wait_for(
        lambda: next(
            ((p, cs) for p in pods(kube, "live") for cs in p.status.container_statuses or [] if cs.restart_count >= 1),
            None,
        ),
        40,
        what="liveness restarts",
    )
    messages = [m for _, _, m in events_for(kube, pod.metadata.name)]
    assert any(
        m.startswith('Liveness probe failed: Get "http://') and m.endswith(":8080: connect: connection refused")
        for m in messages
    )
    assert "Container podinfo failed liveness probe, will be restarted" in messages

    # kubectl gets server-side tables, as from a real API server.
    import subprocess

    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(sim.kubeconfig), "get", "pods", "-n", NS, "-l", "app=db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], out.stderr
    # A crash-looping container cycles through these (0/1 Running: restarted, not yet marked ready, as a real
    # kubelet also shows for a moment); the point here is the server-side table's shape, read at any moment.
    assert row.split()[1:3] in (["0/1", "CrashLoopBackOff"], ["0/1", "Error"], ["1/1", "Running"], ["0/1", "Running"])


def test_services_claims_and_scheduling(lab: tuple[cluster.SimCluster, Kube]) -> None:
    _, kube = lab
    deploy(
        kube,
        "echo",
        {"name": "echo", "image": "hashicorp/http-echo:1.0", "ports": [{"name": "http", "containerPort": 5678}]},
    )
    kube.core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "good"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    kube.core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "bad-port"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "web"}]},
        },
    )
    wait_for(available(kube, "echo"), 20, what="echo")
    good = wait_for(lambda: kube.core.read_namespaced_endpoints("good", NS).subsets, 10, what="endpoints")
    assert len(good[0].addresses) == 2 and good[0].ports[0].port == 5678
    assert kube.core.read_namespaced_endpoints("bad-port", NS).subsets is None

    kube.core.create_namespaced_persistent_volume_claim(
        NS,
        {
            "metadata": {"name": "ok"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    kube.core.create_namespaced_persistent_volume_claim(
        NS,
        {
            "metadata": {"name": "fast"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "fast-ssd",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(
        lambda: kube.core.read_namespaced_persistent_volume_claim("ok", NS).status.phase == "Bound",
        10,
        what="the default class to bind",
    )
    wait_for(
        lambda: (
            ("Warning", "ProvisioningFailed", 'storageclass.storage.k8s.io "fast-ssd" not found')
            in events_for(kube, "fast")
        ),
        10,
        what="ProvisioningFailed",
    )
    assert kube.core.read_namespaced_persistent_volume_claim("fast", NS).status.phase == "Pending"

    deploy(
        kube, "big", {"name": "redis", "image": "redis:7.4", "resources": {"requests": {"memory": "16Gi"}}}, replicas=1
    )
    deploy(kube, "gpu", {"name": "w", "image": "traefik/whoami:v1.10"}, replicas=1, nodeSelector={"accelerator": "t4"})

    def unschedulable(app: str) -> str | None:
        for pod in pods(kube, app):
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return condition.message
        return None

    assert wait_for(lambda: unschedulable("big"), 10) == (
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption "
        "victims found for incoming pod."
    )
    assert wait_for(lambda: unschedulable("gpu"), 10) == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling."
    )


def test_k8sgpt_results_like_the_operator_writes_them(lab: tuple[cluster.SimCluster, Kube]) -> None:
    sim, kube = lab
    deploy(kube, "web", {"name": "nginx", "image": "nginx:1.277"}, replicas=1)

    def result() -> dict[str, Any] | None:
        items = kube.custom.list_namespaced_custom_object(
            "core.k8sgpt.ai", "v1alpha1", "k8sgpt-operator-system", "results"
        )["items"]
        return next((r for r in items if r["spec"]["kind"] == "Pod"), None)

    created = wait_for(result, 30, what="a Pod Result")
    pod_name = created["spec"]["name"].split("/")[1]
    assert created["metadata"]["name"] == f"{NS}{pod_name}".replace("-", "")
    assert created["metadata"]["labels"]["k8sgpts.k8sgpt.ai/name"] == "k8sgpt-sample"
    assert created["spec"]["parentObject"] == ""
    assert created["status"] in ({}, {"lifecycle": "updated", "contentHash": created["status"].get("contentHash")})
    historical = wait_for(
        lambda: (r := result()) and r["status"].get("lifecycle") == "historical" and r, 30, what="lifecycle historical"
    )
    assert len(historical["status"]["contentHash"]) == 64
    texts = [e["text"] for e in historical["spec"]["error"]]
    assert texts in (
        ['Back-off pulling image "nginx:1.277"'],
        [
            "rpc error: code = NotFound desc = failed to pull and unpack image "
            '"docker.io/library/nginx:1.277": failed to resolve reference "docker.io/library/nginx:1.277": '
            "docker.io/library/nginx:1.277: not found"
        ],
    )
    # Fixed: the next cycle deletes the Result.
    kube.apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}
    )
    wait_for(lambda: result() is None, 40, what="the Result to be deleted")
    assert sim.running is not None and sim.running.analyzer is not None and sim.running.analyzer.cycles >= 3


def test_pods_need_their_service_account_and_say_when_a_pull_secret_is_missing(
    lab: tuple[cluster.SimCluster, Kube],
) -> None:
    """A pod whose ServiceAccount is missing is refused (the ReplicaSet's FailedCreate) until it exists; a missing
    imagePullSecret is the kubelet's FailedToRetrieveImagePullSecret warning, and a public image is pulled anyway."""
    _, kube = lab
    sleeper = {"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3600"]}
    deploy(kube, "mailer", sleeper, replicas=1, serviceAccountName="mailer")

    def refused() -> str | None:
        for rs in kube.apps.list_namespaced_replica_set(NS, label_selector="app=mailer").items:
            for _, reason, message in events_for(kube, rs.metadata.name):
                if reason == "FailedCreate":
                    return message
        return None

    message = wait_for(refused, 20, what="FailedCreate for the missing ServiceAccount")
    assert message.startswith('Error creating: pods "mailer-') and message.endswith(
        f'is forbidden: error looking up service account {NS}/mailer: serviceaccount "mailer" not found'
    )
    assert pods(kube, "mailer") == []
    kube.core.create_namespaced_service_account(NS, {"metadata": {"name": "mailer"}})
    wait_for(
        lambda: any(cs.ready for p in pods(kube, "mailer") for cs in p.status.container_statuses or []),
        30,
        what="the pod once its ServiceAccount exists",
    )

    kube.core.create_namespaced_secret(
        NS,
        {
            "metadata": {"name": "present"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": '{"auths":{"registry.example":{"auth":"eDp5"}}}'},
        },
    )
    deploy(kube, "puller", sleeper, replicas=1, imagePullSecrets=[{"name": "regcred"}])
    deploy(kube, "pulled", sleeper, replicas=1, imagePullSecrets=[{"name": "present"}])
    for app in ("puller", "pulled"):
        wait_for(
            lambda app=app: any(cs.ready for p in pods(kube, app) for cs in p.status.container_statuses or []),
            30,
            what=f"{app} running (busybox is public)",
        )
    puller = pods(kube, "puller")[0].metadata.name
    assert (
        "Warning",
        "FailedToRetrieveImagePullSecret",
        "Unable to retrieve some image pull secrets (regcred); attempting to pull the image may not succeed.",
    ) in events_for(kube, puller)
    pulled = pods(kube, "pulled")[0].metadata.name
    assert not [e for e in events_for(kube, pulled) if e[1] == "FailedToRetrieveImagePullSecret"]
