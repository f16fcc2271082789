"""LIST responses of a real API server carry ``kind``/``apiVersion`` on the list, not on each item: every listed
object gets them from what was listed (``aegis.kube.client``), and nothing downstream assumes ``obj["kind"]``
on a listed object (the shadow copy of a Service's backends ended Failed with ``KeyError: 'kind'``)."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from aegis import config, health, shadow
from aegis.kube import client
from graph import targets
from tests import factories
from tests.unit import real_shapes

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def _bare(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


DEPLOY = factories.deployment("shop", "web", "nginx:1.27")
# What kube-apiserver v1.28.4 answers (trimmed): the list's kind and apiVersion, items without them.
RESPONSES: dict[str, tuple[int, Any]] = {
    "/apis/apps/v1/namespaces/shop/deployments": (
        200,
        {
            "kind": "DeploymentList",
            "apiVersion": "apps/v1",
            "metadata": {"resourceVersion": "812"},
            "items": [_bare(DEPLOY)],
        },
    ),
    "/api/v1/namespaces/shop/pods": (
        200,
        {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "p", "labels": {}}}]},
    ),
    "/apis/storage.k8s.io/v1/storageclasses": (
        200,
        {"kind": "StorageClassList", "apiVersion": "storage.k8s.io/v1", "items": [{"metadata": {"name": "standard"}}]},
    ),
    "/apis/core.k8sgpt.ai/v1alpha1/namespaces/k8sgpt/results": (
        200,
        {"kind": "ResultList", "apiVersion": "core.k8sgpt.ai/v1alpha1", "items": [{"metadata": {"name": "r"}}]},
    ),
    "/api/v1/namespaces/shop/pods/web-1/log": (
        400,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": 'container "web" in pod "web-1" is waiting to start: PodInitializing',
            "reason": "BadRequest",
            "code": 400,
        },
    ),
    "/api/v1/namespaces/shop/pods/web-2/log": (
        500,
        {"kind": "Status", "status": "Failure", "message": "error trying to reach service: dial tcp", "code": 500},
    ),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = RESPONSES.get(self.path.split("?")[0], (404, {"kind": "Status", "code": 404}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def cluster() -> Iterator[client.Cluster]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = client.Cluster(kubernetes.client.ApiClient(configuration), config.Settings(kube_timeout_seconds=5))
    try:
        yield api
    finally:
        api.close()
        server.shutdown()
        server.server_close()


async def test_listed_objects_carry_their_kind_and_api_version(cluster: client.Cluster) -> None:
    [deploy] = await cluster.list("Deployment", "shop")
    assert (deploy["kind"], deploy["apiVersion"]) == ("Deployment", "apps/v1")
    assert deploy["metadata"]["name"] == "web"
    [pod] = await cluster.list("Pod", "shop")
    assert (pod["kind"], pod["apiVersion"]) == ("Pod", "v1")
    [storage_class] = await cluster.list_cluster("StorageClass")
    assert (storage_class["kind"], storage_class["apiVersion"]) == ("StorageClass", "storage.k8s.io/v1")
    [result] = await cluster.list_custom("core.k8sgpt.ai", "v1alpha1", "results", "k8sgpt")
    assert (result["kind"], result["apiVersion"]) == ("Result", "core.k8sgpt.ai/v1alpha1")


async def test_a_log_the_kubelet_cannot_serve_is_an_error_with_its_reason(cluster: client.Cluster) -> None:
    with pytest.raises(client.ClusterError, match="waiting to start") as waiting:
        await cluster.pod_log("shop", "web-1", "web", tail_lines=20)
    assert waiting.value.status == 400
    with pytest.raises(client.ClusterError) as proxy:
        await cluster.pod_log("shop", "web-2", "web", tail_lines=20, previous=True)
    assert proxy.value.status == 500
    assert await cluster.pod_log("shop", "web-3", "web", tail_lines=20) == []  # 404: no log, no error


def test_an_item_keeps_its_own_kind() -> None:
    items = client.listed_items({"kind": "EventList", "apiVersion": "v1", "items": [{"kind": "Event", "x": 1}, {}]})
    assert items == [{"kind": "Event", "x": 1, "apiVersion": "v1"}, {"apiVersion": "v1", "kind": "Event"}]


async def test_a_services_backends_listed_without_kind_are_copied_into_the_shadow() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster = real_shapes.RealShapedCluster(service, DEPLOY)
    backends = await targets.backends(_Deps(cluster), "shop", {"app": "web"})  # type: ignore[arg-type]
    assert list(backends) == ["Deployment/web"] and "kind" not in backends["Deployment/web"]  # as listed
    verifier = shadow.ShadowVerifier(cluster, config.Settings())  # type: ignore[arg-type]
    details: list[str] = []
    await verifier._copy("shop", "aegis-shadow-x-1-ab12-b", {"Service/web": service, **backends}, details)
    assert [(kind, body["metadata"]["name"]) for kind, _, body in cluster.created] == [
        ("Service", "web"),
        ("Deployment", "web"),
    ]
    assert health.with_kinds(backends)["Deployment/web"]["kind"] == "Deployment"


class _Deps:
    def __init__(self, cluster: real_shapes.RealShapedCluster) -> None:
        self.cluster = cluster
