"""The same API assertions against the emulator and the real control plane: the real server is the judge.

Each test runs twice: ``emulated`` (``server.EmulatedCluster``, or ``cluster.SimCluster``
where controllers must act) and ``real`` (the session's kube-apiserver v1.28.4 with
kube-controller-manager and kube-scheduler; marker ``real``). Every test works in a
fresh namespace. Raw HTTP through the real Python client, so both servers see the
same requests.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from aegis import shadow
from aegis.sim import cluster, controlplane, server

pytestmark = pytest.mark.integration

SERVERS = [pytest.param("emulated", id="emulated"), pytest.param("real", id="real", marks=pytest.mark.real)]


@dataclasses.dataclass
class Api:
    """Raw requests to one server; ``call`` answers (status code, decoded body)."""

    name: str
    client: kubernetes.client.ApiClient
    namespaces: list[str] = dataclasses.field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        method_, url, headers, data, _ = self.client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(method_, url, header_params=headers, body=data, _request_timeout=30)
            response.read()
            status, text = response.status, (response.data or b"").decode()
        except kubernetes.client.ApiException as exc:
            status, text = exc.status, exc.body.decode() if isinstance(exc.body, bytes) else (exc.body or "")
        try:
            return status, json.loads(text) if text.strip() else None
        except ValueError:
            return status, text

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, answer = self.call(method, path, body, **kwargs)
        assert status < 400, f"{self.name}: {method} {path} -> {status} {answer}"
        return answer

    def get(self, path: str) -> Any:
        status, answer = self.call("GET", path)
        return answer if status == 200 else None

    def namespace(self) -> str:
        name = f"diff-{uuid.uuid4().hex[:8]}"
        self.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.namespaces.append(name)
        return name

    def bind(self, ns: str, pod: str, node: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        self.ok("POST", f"/api/v1/namespaces/{ns}/pods/{pod}/binding", binding)

    def node(self) -> str:
        """A Node object (no kubelet behind it): pods bound to it are what graceful deletion needs."""
        name = f"diff-node-{uuid.uuid4().hex[:6]}"
        self.ok("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        return name


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def emulated_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    path = tmp_path_factory.mktemp("diff-api") / "kubeconfig"
    with server.EmulatedCluster(path):
        yield path


@pytest.fixture(scope="module")
def emulated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    path = tmp_path_factory.mktemp("diff-cluster") / "kubeconfig"
    with cluster.SimCluster(path, cluster.ClusterOptions(analyzer=False)):
        yield path


def _client(name: str, kubeconfig: pathlib.Path) -> Iterator[Api]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    api = Api(name, client)
    try:
        yield api
    finally:
        for ns in api.namespaces:  # tidy up; what is left Terminating goes on its own
            api.call("DELETE", f"/api/v1/namespaces/{ns}")
        client.close()


@pytest.fixture(params=SERVERS)
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API alone: the emulated API server, or the real control plane."""
    if request.param == "real":
        plane: controlplane.ControlPlane = request.getfixturevalue("real_control_plane")
        yield from _client("real", plane.kubeconfig)
    else:
        yield from _client("emulated", request.getfixturevalue("emulated_api"))


@pytest.fixture(params=SERVERS)
def ctl(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API with controllers: the emulated cluster, or the real control plane."""
    if request.param == "real":
        plane: controlplane.ControlPlane = request.getfixturevalue("real_control_plane")
        yield from _client("real", plane.kubeconfig)
    else:
        yield from _client("emulated", request.getfixturevalue("emulated_cluster"))


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}, **extra},
        "data": {"k": "v"},
    }


def deployment(name: str, replicas: int = 1, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]},
        ]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def pod(name: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod no scheduler takes (the tests bind it themselves): on the real control plane the default scheduler
    would otherwise try it first and write a PodScheduled=False status at any moment, an extra watch event."""
    container: dict[str, Any] = {"name": "app", "image": "nginx:1.27"}
    if resources is not None:
        container["resources"] = resources
    spec = {"containers": [container], "schedulerName": "bound-by-the-test"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# --- reading -------------------------------------------------------------------------------------


def test_list_items_carry_no_kind(api: Api) -> None:
    ns = api.namespace()
    for name in ("a", "b"):
        api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap(name))
    listing = api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert (listing["kind"], listing["apiVersion"]) == ("ConfigMapList", "v1")
    assert listing["metadata"]["resourceVersion"]
    mine = [item for item in listing["items"] if item["metadata"]["name"] in ("a", "b")]
    assert len(mine) == 2
    assert all("kind" not in item and "apiVersion" not in item for item in listing["items"])
    one = api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps/a")
    assert (one["kind"], one["apiVersion"]) == ("ConfigMap", "v1")
    deployments = api.ok("GET", f"/apis/apps/v1/namespaces/{ns}/deployments")
    assert (deployments["kind"], deployments["apiVersion"]) == ("DeploymentList", "apps/v1")
    # A watch's events carry kind and apiVersion on their objects.
    status, text = api.call(
        "GET", f"/api/v1/namespaces/{ns}/configmaps", query={"watch": "true", "timeoutSeconds": "1"}
    )
    assert status == 200
    lines = [json.loads(line) for line in (text if isinstance(text, str) else json.dumps(text)).splitlines() if line]
    objects = [event["object"] for event in lines if event["object"]["metadata"]["name"] in ("a", "b")]
    assert {o["metadata"]["name"] for o in objects} == {"a", "b"}
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in objects)


def test_label_and_field_selectors(api: Api) -> None:
    ns = api.namespace()
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("one", {"app": "shop", "tier": "web"}))
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("two", {"app": "shop", "tier": "db"}))
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("three", {"app": "blog"}))

    def names(**query: str) -> set[str]:
        return {
            i["metadata"]["name"] for i in api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps", query=query)["items"]
        }

    assert names(labelSelector="app=shop") == {"one", "two"}
    assert names(labelSelector="app=shop,tier!=db") == {"one"}
    assert names(labelSelector="tier in (web,db)") == {"one", "two"}
    assert names(labelSelector="!tier,app") == {"three"}
    assert names(fieldSelector="metadata.name=two") == {"two"}
    assert names(fieldSelector="metadata.name!=two", labelSelector="app") == {"one", "three"}
    status, answer = api.call("GET", f"/api/v1/namespaces/{ns}/configmaps", query={"labelSelector": "app in (("})
    assert status == 400 and answer["kind"] == "Status"


# --- writing -------------------------------------------------------------------------------------


def test_strategic_merge_keeps_the_sidecar(api: Api) -> None:
    ns = api.namespace()
    api.ok("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web"))
    patched = api.ok(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}}},
        content_type="application/strategic-merge-patch+json",
    )
    containers = {c["name"]: c["image"] for c in patched["spec"]["template"]["spec"]["containers"]}
    assert containers == {"app": "nginx:1.28", "sidecar": "busybox:1.36"}
    merged = api.ok(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.29"}]}}}},
        content_type="application/merge-patch+json",
    )
    assert [c["name"] for c in merged["spec"]["template"]["spec"]["containers"]] == ["app"]  # a JSON merge replaces


def test_dry_run_persists_nothing(api: Api) -> None:
    ns = api.namespace()
    created = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("dry"), query={"dryRun": "All"})
    assert created["metadata"]["name"] == "dry" and created["metadata"].get("uid")
    assert api.call("GET", f"/api/v1/namespaces/{ns}/configmaps/dry")[0] == 404
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("real"))
    patched = api.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/real",
        {"data": {"k": "changed"}},
        query={"dryRun": "All"},
        content_type="application/merge-patch+json",
    )
    assert patched["data"]["k"] == "changed"
    assert api.ok("GET", f"/api/v1/namespaces/{ns}/configmaps/real")["data"]["k"] == "v"
    api.ok("DELETE", f"/api/v1/namespaces/{ns}/configmaps/real", query={"dryRun": "All"})
    assert api.call("GET", f"/api/v1/namespaces/{ns}/configmaps/real")[0] == 200


def test_stale_resource_version_conflicts(api: Api) -> None:
    ns = api.namespace()
    first = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("cm"))
    second = {**first, "data": {"k": "second"}}
    api.ok("PUT", f"/api/v1/namespaces/{ns}/configmaps/cm", second)
    stale = {**first, "data": {"k": "stale"}}
    status, answer = api.call("PUT", f"/api/v1/namespaces/{ns}/configmaps/cm", stale)
    assert status == 409
    assert answer["reason"] == "Conflict"
    assert answer["message"] == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_status_subresource_splits_spec_and_status(api: Api) -> None:
    ns = api.namespace()
    api.ok("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", replicas=0))
    on_status = api.ok(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web/status",
        {"spec": {"replicas": 7}, "status": {"collisionCount": 3}},
        content_type="application/merge-patch+json",
    )
    assert on_status["spec"]["replicas"] == 0
    assert on_status["status"]["collisionCount"] == 3
    on_main = api.ok(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web",
        {"spec": {"replicas": 2}, "status": {"collisionCount": 9}},
        content_type="application/merge-patch+json",
    )
    assert on_main["spec"]["replicas"] == 2
    assert on_main["status"].get("collisionCount") == 3


def test_generation_bumps_on_spec_changes_only(api: Api) -> None:
    ns = api.namespace()
    created = api.ok("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", replicas=0))
    assert created["metadata"]["generation"] == 1
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    relabelled = api.ok(
        "PATCH", path, {"metadata": {"labels": {"x": "y"}}}, content_type="application/merge-patch+json"
    )
    assert relabelled["metadata"]["generation"] == 1
    rescaled = api.ok("PATCH", path, {"spec": {"replicas": 1}}, content_type="application/merge-patch+json")
    assert rescaled["metadata"]["generation"] == 2
    status_only = api.ok(
        "PATCH", path + "/status", {"status": {"collisionCount": 1}}, content_type="application/merge-patch+json"
    )
    assert status_only["metadata"]["generation"] == 2


def test_server_side_apply_with_a_field_manager(api: Api) -> None:
    ns = api.namespace()
    path = f"/api/v1/namespaces/{ns}/configmaps/applied"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}
    status, created = api.call(
        "PATCH", path, body, query={"fieldManager": "aegis"}, content_type="application/apply-patch+yaml"
    )
    assert status == 201, created
    assert created["data"] == {"a": "1"}
    managers = {(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]}
    assert ("aegis", "Apply") in managers
    updated = api.ok(
        "PATCH",
        path,
        {**body, "data": {"a": "1", "b": "2"}},
        query={"fieldManager": "aegis"},
        content_type="application/apply-patch+yaml",
    )
    assert updated["data"] == {"a": "1", "b": "2"}
    status, answer = api.call("PATCH", path, body, content_type="application/apply-patch+yaml")
    assert status in (400, 422) and "fieldManager" in answer["message"]


# --- services ------------------------------------------------------------------------------------


def service(name: str, cluster_ip: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}], "selector": {"app": name}}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def test_cluster_ips_are_fresh_and_a_taken_one_is_refused(api: Api) -> None:
    ns = api.namespace()
    first = api.ok("POST", f"/api/v1/namespaces/{ns}/services", service("one"))
    second = api.ok("POST", f"/api/v1/namespaces/{ns}/services", service("two", ""))
    ips = [first["spec"]["clusterIP"], second["spec"]["clusterIP"]]
    assert ips[0] != ips[1]
    for ip, svc in zip(ips, (first, second), strict=True):
        assert ip.startswith("10.96.") and svc["spec"]["clusterIPs"] == [ip]
    status, answer = api.call("POST", f"/api/v1/namespaces/{ns}/services", service("copy", ips[0]))
    assert status == 422
    assert answer["reason"] == "Invalid"
    assert answer["message"] == (
        f'Service "copy" is invalid: spec.clusterIPs: Invalid value: []string{{"{ips[0]}"}}: '
        f"failed to allocate IP {ips[0]}: provided IP is already allocated"
    )
    headless = api.ok("POST", f"/api/v1/namespaces/{ns}/services", service("headless", "None"))
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["clusterIPs"] == ["None"]


# --- deleting ------------------------------------------------------------------------------------


def test_bound_pod_deletion_is_graceful(api: Api) -> None:
    ns = api.namespace()
    node = api.node()
    try:
        api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("loose"))
        gone = api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/loose")
        assert gone["metadata"]["name"] == "loose"
        assert api.call("GET", f"/api/v1/namespaces/{ns}/pods/loose")[0] == 404  # unbound: removed at once

        api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("bound"))
        api.bind(ns, "bound", node)
        bound = api.ok("GET", f"/api/v1/namespaces/{ns}/pods/bound")
        assert bound["spec"]["nodeName"] == node
        terminating = api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/bound")
        assert terminating["metadata"].get("deletionTimestamp")
        assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
        still = api.ok("GET", f"/api/v1/namespaces/{ns}/pods/bound")
        assert still["metadata"]["deletionTimestamp"] and still["metadata"]["deletionGracePeriodSeconds"] == 30
        shorter = api.ok(
            "DELETE",
            f"/api/v1/namespaces/{ns}/pods/bound",
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 10},
        )
        assert shorter["metadata"]["deletionGracePeriodSeconds"] == 10
        api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/bound", query={"gracePeriodSeconds": "0"})
        assert api.call("GET", f"/api/v1/namespaces/{ns}/pods/bound")[0] == 404
        # What a watcher saw: MODIFIED (Terminating), MODIFIED (a shorter grace), MODIFIED (grace 0), DELETED.
        status, text = api.call(
            "GET",
            f"/api/v1/namespaces/{ns}/pods",
            query={
                "watch": "true",
                "resourceVersion": bound["metadata"]["resourceVersion"],
                "timeoutSeconds": "1",
                "fieldSelector": "metadata.name=bound",
            },
        )
        assert status == 200 and isinstance(text, str)
        seen = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert [e["type"] for e in seen] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
        graces = [e["object"]["metadata"]["deletionGracePeriodSeconds"] for e in seen]
        assert graces == [30, 10, 0, 0]
    finally:
        api.call("DELETE", f"/api/v1/nodes/{node}")


def test_owner_reference_garbage_collection(api: Api) -> None:
    ns = api.namespace()
    owner = api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("owner"))
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("dependent", ownerReferences=[reference]))
    api.ok("DELETE", f"/api/v1/namespaces/{ns}/configmaps/owner", query={"propagationPolicy": "Background"})
    eventually(lambda: api.get(f"/api/v1/namespaces/{ns}/configmaps/dependent") is None, 20, "the dependent's GC")


def test_namespace_deletion(api: Api) -> None:
    ns = api.namespace()
    node = api.node()
    try:
        api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("inside"))
        api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("running"))
        api.bind(ns, "running", node)
        deleted = api.ok("DELETE", f"/api/v1/namespaces/{ns}")
        assert deleted["metadata"].get("deletionTimestamp")
        assert deleted["status"]["phase"] == "Terminating"
        # The namespace controller deletes the pod gracefully; the namespace waits for it (the kubelet's part).
        terminating = eventually(
            lambda: (p := api.get(f"/api/v1/namespaces/{ns}/pods/running")) and p["metadata"].get("deletionTimestamp"),
            20,
            "the pod to be Terminating",
        )
        assert terminating
        eventually(lambda: api.get(f"/api/v1/namespaces/{ns}/configmaps/inside") is None, 20, "the configmap to go")
        assert api.ok("GET", f"/api/v1/namespaces/{ns}")["status"]["phase"] == "Terminating"
        status, answer = api.call("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("late"))
        assert status == 403 and "because it is being terminated" in answer["message"]
        api.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/running", query={"gracePeriodSeconds": "0"})
        eventually(lambda: api.get(f"/api/v1/namespaces/{ns}") is None, 40, "the namespace to go")
    finally:
        api.call("DELETE", f"/api/v1/nodes/{node}")


# --- quota ---------------------------------------------------------------------------------------


def quota_ready(api: Api, ns: str, name: str) -> dict[str, Any]:
    """A new quota refuses creates until the quota controller computed its status (the emulator: at once)."""
    return eventually(
        lambda: (
            (q := api.get(f"/api/v1/namespaces/{ns}/resourcequotas/{name}"))
            and set((q.get("status") or {}).get("used") or {}) == set(q["spec"]["hard"])
            and q
        ),
        20,
        "the quota's status",
    )


def test_quota_admission(api: Api) -> None:
    ns = api.namespace()
    hard = {"pods": "1", "limits.cpu": "1"}
    api.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": hard}},
    )
    assert quota_ready(api, ns, "q")["status"] == {"hard": hard, "used": {"pods": "0", "limits.cpu": "0"}}
    status, answer = api.call("POST", f"/api/v1/namespaces/{ns}/pods", pod("bare"))
    assert (status, answer["reason"]) == (403, "Forbidden")
    assert answer["message"] == 'pods "bare" is forbidden: failed quota: q: must specify limits.cpu for: app'
    small = {"limits": {"cpu": "100m"}}
    api.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod("first", small))
    status, answer = api.call("POST", f"/api/v1/namespaces/{ns}/pods", pod("second", {"limits": {"cpu": "2"}}))
    assert status == 403
    assert answer["message"] == (
        'pods "second" is forbidden: exceeded quota: q, requested: limits.cpu=2,pods=1, '
        "used: limits.cpu=100m,pods=1, limited: limits.cpu=1,pods=1"
    )
    eventually(
        lambda: (
            api.ok("GET", f"/api/v1/namespaces/{ns}/resourcequotas/q")["status"]["used"]
            == {"pods": "1", "limits.cpu": "100m"}
        ),
        20,
        "the quota's usage",
    )


def test_quota_refusal_makes_replica_failure(ctl: Api) -> None:
    ns = ctl.namespace()
    ctl.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}},
    )
    quota_ready(ctl, ns, "q")
    ctl.ok("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", 2, {"aegis/none": "x"}))

    def failed_rs() -> dict[str, Any] | None:
        for rs in ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]:
            for condition in (rs.get("status") or {}).get("conditions") or []:
                if condition["type"] == "ReplicaFailure":
                    return {"rs": rs, "condition": condition}
        return None

    found = eventually(failed_rs, 30, "ReplicaFailure on the ReplicaSet")
    condition, rs_name = found["condition"], found["rs"]["metadata"]["name"]
    assert (condition["status"], condition["reason"]) == ("True", "FailedCreate")
    assert condition["message"].startswith(f'pods "{rs_name}-')
    assert condition["message"].endswith(
        "is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
    )
    assert found["rs"]["status"]["replicas"] == 1

    def failed_events() -> list[dict[str, Any]]:
        return [
            e
            for e in ctl.ok("GET", f"/api/v1/namespaces/{ns}/events")["items"]
            if e["reason"] == "FailedCreate" and e["involvedObject"]["name"] == rs_name
        ]

    event = eventually(failed_events, 20, "a FailedCreate event")[0]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "ReplicaSet"
    assert event["message"].startswith(f'Error creating: pods "{rs_name}-') and "exceeded quota: q" in event["message"]
    deploy = eventually(
        lambda: next(
            (
                c
                for c in (ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web").get("status") or {}).get(
                    "conditions"
                )
                or []
                if c["type"] == "ReplicaFailure"
            ),
            None,
        ),
        20,
        "ReplicaFailure on the Deployment",
    )
    assert deploy["reason"] == "FailedCreate"


# --- controllers ---------------------------------------------------------------------------------


def test_deployment_makes_replica_set_and_pods(ctl: Api) -> None:
    ns = ctl.namespace()
    ctl.ok("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", 2, {"aegis/none": "x"}))
    deploy = ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web")

    def replica_sets() -> list[dict[str, Any]]:
        return ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]

    rs = eventually(replica_sets, 20, "a ReplicaSet")[0]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Deployment",
        "web",
        deploy["metadata"]["uid"],
        True,
    )
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    def pods() -> list[dict[str, Any]]:
        items = ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
        return items if len(items) == 2 else []

    for item in eventually(pods, 20, "two pods"):
        assert item["metadata"]["name"].startswith(f"web-{pod_hash}-")
        assert item["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert item["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert item["status"]["phase"] == "Pending"  # nodeSelector matches no node, on both

    # Background GC: the Deployment's ReplicaSet and its (unbound) pods go with it.
    ctl.ok("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/web", query={"propagationPolicy": "Background"})
    eventually(lambda: not replica_sets(), 30, "the ReplicaSet's GC")
    eventually(lambda: not ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"], 30, "the pods' GC")


def job(name: str, backoff: int, completions: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "completions": completions,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"aegis/none": "x"},  # never runs: the test plays the kubelet
                    "containers": [{"name": "task", "image": "busybox:1.36", "command": ["true"]}],
                }
            },
        },
    }


def test_job_counts_pods_and_finishes(ctl: Api) -> None:
    ns = ctl.namespace()
    created = ctl.ok("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job("once", backoff=0))
    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert created["metadata"]["labels"]["job-name"] == "once"
    assert (created["spec"]["parallelism"], created["spec"]["completionMode"]) == (1, "NonIndexed")
    ctl.ok("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job("fine", backoff=3))

    def job_pods(name: str) -> list[dict[str, Any]]:
        query = {"labelSelector": f"job-name={name}"}
        return ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods", query=query)["items"]

    first = eventually(lambda: job_pods("once"), 20, "the Job's pod")[0]
    labels = first["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == uid and labels["batch.kubernetes.io/job-name"] == "once"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert first["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
    ctl.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{first['metadata']['name']}/status",
        {"status": {"phase": "Failed"}},
        content_type="application/merge-patch+json",
    )
    fine = eventually(lambda: job_pods("fine"), 20, "the other Job's pod")[0]
    ctl.ok(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{fine['metadata']['name']}/status",
        {"status": {"phase": "Succeeded"}},
        content_type="application/merge-patch+json",
    )

    def condition(name: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        found = ctl.ok("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
        for c in (found.get("status") or {}).get("conditions") or []:
            if c["type"] == kind and c["status"] == "True":
                return found, c
        return None

    failed, why = eventually(lambda: condition("once", "Failed"), 30, "the Job to fail")
    assert (why["reason"], why["message"]) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert failed["status"]["failed"] == 1 and "active" not in failed["status"]
    done, _ = eventually(lambda: condition("fine", "Complete"), 30, "the Job to complete")
    assert done["status"]["succeeded"] == 1 and done["status"].get("completionTime")
    reasons = eventually(
        lambda: (
            {
                (e["involvedObject"]["name"], e["reason"])
                for e in ctl.ok("GET", f"/api/v1/namespaces/{ns}/events")["items"]
                if e["involvedObject"]["kind"] == "Job"
            }
            >= {("once", "SuccessfulCreate"), ("once", "BackoffLimitExceeded"), ("fine", "Completed")}
        ),
        20,
        "the Job events",
    )
    assert reasons
    eventually(  # the tracking finalizer goes once a pod is counted
        lambda: all(not p["metadata"].get("finalizers") for p in job_pods("once") + job_pods("fine")),
        20,
        "the finalizers to go",
    )


def test_terminating_pod_is_replaced_at_once(ctl: Api) -> None:
    ns = ctl.namespace()
    node = ctl.node()
    labels = {"app": "solo"}
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"aegis/none": "x"},  # only our binding places it
                    "containers": [{"name": "app", "image": "nginx:1.27"}],
                },
            },
        },
    }
    try:
        ctl.ok("POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", replica_set)

        def live() -> list[dict[str, Any]]:
            items = ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
            return [p for p in items if not p["metadata"].get("deletionTimestamp")]

        first = eventually(live, 20, "the ReplicaSet's pod")[0]["metadata"]["name"]
        ctl.bind(ns, first, node)
        terminating = ctl.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/{first}")
        assert terminating["metadata"]["deletionTimestamp"]
        # A Terminating pod is no replica: the replacement comes at once, not after the grace period.
        replacement = eventually(lambda: [p for p in live() if p["metadata"]["name"] != first], 10, "a replacement")
        assert len(replacement) == 1
        rs = eventually(
            lambda: (
                (r := ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets/solo"))
                and r["status"].get("replicas") == 1
                and r
            ),
            10,
            "status.replicas 1",
        )
        assert rs["status"]["replicas"] == 1
        old = ctl.get(f"/api/v1/namespaces/{ns}/pods/{first}")
        assert old is None or old["metadata"]["deletionTimestamp"]  # the emulated kubelet may have finished it
    finally:
        ctl.call("DELETE", f"/api/v1/nodes/{node}")


# --- pod identity: ServiceAccounts, typed Secrets -----------------------------------------------------


def test_a_pod_needs_its_service_account(api: Api) -> None:
    """The ServiceAccount admission plugin: a pod naming a ServiceAccount that does not exist is refused."""
    ns = api.namespace()
    body = pod("mailer")
    body["spec"]["serviceAccountName"] = "mailer"
    status, answer = api.call("POST", f"/api/v1/namespaces/{ns}/pods", body)
    assert (status, answer["reason"]) == (403, "Forbidden")
    assert answer["message"] == (
        f'pods "mailer" is forbidden: error looking up service account {ns}/mailer: serviceaccount "mailer" not found'
    )
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mailer"}}
    api.ok("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", account)
    created = api.ok("POST", f"/api/v1/namespaces/{ns}/pods", body)
    assert created["spec"]["serviceAccountName"] == "mailer"


def _secret(name: str, kind: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": kind, "data": encoded}


def test_typed_secrets_hold_their_keys_and_registry_credentials_are_json(api: Api) -> None:
    """What a shadow's placeholder mirror of a Secret must satisfy: the keys of its type, and JSON for registry
    credentials (a registry credential mounted as a file, say by an image builder, is mirrored too)."""
    ns = api.namespace()
    path = f"/api/v1/namespaces/{ns}/secrets"
    docker = "kubernetes.io/dockerconfigjson"
    status, answer = api.call("POST", path, _secret("no-key", docker, {"config.json": "{}"}))
    assert status == 422 and "data[.dockerconfigjson]: Required value" in answer["message"], answer
    status, answer = api.call("POST", path, _secret("not-json", docker, {".dockerconfigjson": shadow.PLACEHOLDER}))
    assert status == 422, answer
    assert (
        'data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": '
        "invalid character 'a' looking for beginning of value"
    ) in answer["message"]
    status, answer = api.call("POST", path, _secret("tls", "kubernetes.io/tls", {}))
    assert status == 422 and "data[tls.crt]: Required value" in answer["message"], answer
    status, answer = api.call("POST", path, _secret("basic", "kubernetes.io/basic-auth", {}))
    assert status == 422 and "data[username]: Required value" in answer["message"], answer
    # The shadow's mirrors of typed Secrets are accepted.
    for name, kind, keys in (
        ("regcred", docker, [".dockerconfigjson"]),
        ("legacy", "kubernetes.io/dockercfg", [".dockercfg"]),
        ("smtp", "kubernetes.io/basic-auth", ["username", "password"]),
        ("opaque", "Opaque", ["token"]),
    ):
        live = _secret(name, kind, {key: '{"auths":{"registry.example":{"auth":"eDp5"}}}' for key in keys})
        mirror = {**live, "data": shadow.placeholder_data(live)}
        assert set(mirror["data"]) == set(keys)
        api.ok("POST", path, mirror)


def _statefulset(name: str, policy: str, account: str | None = None) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "nodeSelector": {"aegis/none": "x"},  # never scheduled: its pod stays Pending, never Running and Ready
        "containers": [{"name": "app", "image": "nginx:1.27", "env": [{"name": "V", "value": "1"}]}],
    }
    if account:
        spec["serviceAccountName"] = account
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "podManagementPolicy": policy,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def test_statefulset_replaces_a_pod_that_is_not_ready_only_in_parallel(ctl: Api) -> None:
    """A template fix reaches a StatefulSet's broken pod with Parallel; OrderedReady waits for it to be Ready
    (kubernetes#67250). A pod refused at admission is a FailedCreate event on the StatefulSet."""
    ns = ctl.namespace()
    base = f"/apis/apps/v1/namespaces/{ns}/statefulsets"
    for name, policy in (("ordered", "OrderedReady"), ("parallel", "Parallel")):
        ctl.ok("POST", base, _statefulset(name, policy))
    ctl.ok("POST", base, _statefulset("nosa", "OrderedReady", account="cache"))

    def revision(pod_name: str) -> str | None:
        found = ctl.get(f"/api/v1/namespaces/{ns}/pods/{pod_name}")
        return None if found is None else found["metadata"]["labels"].get("controller-revision-hash")

    def settled(name: str) -> str | None:
        sts = ctl.ok("GET", f"{base}/{name}")
        update = (sts.get("status") or {}).get("updateRevision")
        return update if update and revision(f"{name}-0") == update else None

    before = {name: eventually(lambda n=name: settled(n), 30, f"{name}-0") for name in ("ordered", "parallel")}
    fix = [{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "2"}]
    for name in ("ordered", "parallel"):
        ctl.ok("PATCH", f"{base}/{name}", fix, content_type="application/json-patch+json")
    after = eventually(
        lambda: (r := settled("parallel")) and r != before["parallel"] and r, 30, "parallel-0 on the new revision"
    )
    assert after != before["parallel"]
    time.sleep(3)  # the controller has long acted on both
    assert revision("ordered-0") == before["ordered"], "OrderedReady replaced a pod that was never Ready"
    assert ctl.ok("GET", f"{base}/ordered")["status"]["updateRevision"] != before["ordered"]

    def failed() -> list[str]:
        return [
            e["message"]
            for e in ctl.ok("GET", f"/api/v1/namespaces/{ns}/events")["items"]
            if e["reason"] == "FailedCreate" and e["involvedObject"]["name"] == "nosa" and e["type"] == "Warning"
        ]

    assert eventually(failed, 20, "FailedCreate on the StatefulSet")[0] == (
        f'create Pod nosa-0 in StatefulSet nosa failed error: pods "nosa-0" is forbidden: '
        f'error looking up service account {ns}/cache: serviceaccount "cache" not found'
    )
    assert ctl.get(f"/api/v1/namespaces/{ns}/pods/nosa-0") is None


# --- DaemonSets ------------------------------------------------------------------------------------------------

DAEMON_TOLERATIONS = [  # what kube-controller-manager adds to every daemon pod, in its order
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def ready_node(api: Api, labels: dict[str, str], taints: list[dict[str, str]]) -> str:
    """A Node that is Ready and has room, with exactly these labels and taints (the real API server taints a new
    node ``not-ready``: replaced here, as our node side does)."""
    name = api.node()
    merge = "application/merge-patch+json"
    api.ok(
        "PATCH",
        f"/api/v1/nodes/{name}",
        {"metadata": {"labels": labels}, "spec": {"taints": taints or None}},
        content_type=merge,
    )
    room = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
    api.ok(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        {"status": {"capacity": room, "allocatable": room, "conditions": [ready]}},
        content_type=merge,
    )
    return name


def play_kubelet(ctl: Api, ns: str, good_image: str) -> None:
    """Where no kubelet runs (the real control plane's test nodes), do what one would: finish deleted pods, run
    bound pods of the image that exists (Ready); a pod of any other image stays Pending, as one that cannot pull.
    The emulated cluster's kubelet stand-in does this itself."""
    if ctl.name != "real":
        return
    for pod in ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"]:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            ctl.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", query={"gracePeriodSeconds": "0"})
        elif (
            pod["spec"].get("nodeName")
            and pod["spec"]["containers"][0]["image"] == good_image
            and (pod.get("status") or {}).get("phase") != "Running"
        ):
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            ctl.call(
                "PATCH",
                f"/api/v1/namespaces/{ns}/pods/{name}/status",
                {"status": status},
                content_type="application/strategic-merge-patch+json",
            )


def test_daemonset_runs_one_pod_per_eligible_node_and_stalls_on_a_bad_image(ctl: Api) -> None:
    """What AEGIS relies on about DaemonSets: one pod per node that matches and tolerates (a node with a taint
    the template does not tolerate gets none), each controlled by the DaemonSet and pinned to its node; and a
    rolling update to an image that never runs replaces one pod (maxUnavailable 1) and stops there, with the
    status counting it."""
    ns = ctl.namespace()
    key = f"aegis-diff.io/agents-{uuid.uuid4().hex[:6]}"  # only this test's nodes are selected
    nodes = {
        "plain": ready_node(ctl, {key: "yes"}, []),
        "tainted": ready_node(
            ctl, {key: "yes"}, [{"key": "aegis-diff/dedicated", "value": "db", "effect": "NoSchedule"}]
        ),
        "tolerated": ready_node(ctl, {key: "yes"}, [{"key": "aegis-diff/edge", "effect": "NoSchedule"}]),
        "unselected": ready_node(ctl, {}, []),
    }
    toleration = {"key": "aegis-diff/edge", "operator": "Exists", "effect": "NoSchedule"}
    labels = {"app": "agent"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {key: "yes"},
                    "tolerations": [toleration],
                    "containers": [{"name": "agent", "image": "nginx:1.27"}],
                },
            },
        },
    }
    base = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
    try:
        created = ctl.ok("POST", base, body)
        assert created["spec"]["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
        }
        assert created["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
        assert created["status"] == {
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
        }

        def live() -> list[dict[str, Any]]:
            items = ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
            return [p for p in items if not p["metadata"].get("deletionTimestamp")]

        def bound() -> list[dict[str, Any]]:
            pods = live()
            return pods if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods) else []

        pods = eventually(bound, 30, "a pod on each eligible node, bound")
        assert {p["spec"]["nodeName"] for p in pods} == {nodes["plain"], nodes["tolerated"]}
        pod_hash = pods[0]["metadata"]["labels"]["controller-revision-hash"]
        for pod in pods:
            meta = pod["metadata"]
            assert meta["name"].startswith("agent-") and len(meta["name"]) == len("agent-") + 5
            assert meta["labels"] == {
                "app": "agent",
                "controller-revision-hash": pod_hash,
                "pod-template-generation": "1",
            }
            assert meta["ownerReferences"] == [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "agent",
                    "uid": created["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms == {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pod["spec"]["nodeName"]]}]}
                ]
            }
            assert pod["spec"]["tolerations"] == [toleration, *DAEMON_TOLERATIONS]
        revisions = ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
        assert [(r["metadata"]["name"], r["revision"]) for r in revisions] == [(f"agent-{pod_hash}", 1)]
        assert revisions[0]["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]

        def status_is(wanted: dict[str, int], good: str = "nginx:1.27") -> dict[str, Any] | None:
            play_kubelet(ctl, ns, good)
            ds = ctl.ok("GET", f"{base}/agent")
            return ds if ds.get("status") == wanted else None

        rolled_out = {
            "observedGeneration": 1,
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberMisscheduled": 0,
            "numberReady": 2,
            "updatedNumberScheduled": 2,
            "numberAvailable": 2,
        }
        eventually(lambda: status_is(rolled_out), 30, f"the status of a rolled-out DaemonSet: {rolled_out}")

        bad = {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "nginx:1.277"}]}}}}
        changed = ctl.ok("PATCH", f"{base}/agent", bad, content_type="application/strategic-merge-patch+json")
        assert changed["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"
        stalled = {
            "observedGeneration": 2,
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberMisscheduled": 0,
            "numberReady": 1,
            "updatedNumberScheduled": 1,
            "numberAvailable": 1,
            "numberUnavailable": 1,
        }
        eventually(lambda: status_is(stalled), 40, f"the status of a stalled rollout: {stalled}")
        time.sleep(3)  # the controller has long acted: maxUnavailable 1 keeps the other node's old pod
        assert status_is(stalled), ctl.ok("GET", f"{base}/agent")["status"]
        pods = live()
        by_image = {p["spec"]["containers"][0]["image"]: p for p in pods}
        assert len(pods) == 2 and set(by_image) == {"nginx:1.27", "nginx:1.277"}
        old, new = by_image["nginx:1.27"], by_image["nginx:1.277"]
        assert old["metadata"]["labels"]["controller-revision-hash"] == pod_hash
        assert new["metadata"]["labels"]["controller-revision-hash"] != pod_hash
        assert new["metadata"]["labels"]["pod-template-generation"] == "2"
        assert {old["spec"]["nodeName"], new["spec"]["nodeName"]} == {nodes["plain"], nodes["tolerated"]}
        revisions = ctl.ok("GET", f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
        assert sorted(r["revision"] for r in revisions) == [1, 2]
        reasons = [
            e["reason"]
            for e in ctl.ok("GET", f"/api/v1/namespaces/{ns}/events")["items"]
            if e["involvedObject"]["kind"] == "DaemonSet"
        ]
        assert reasons.count("SuccessfulCreate") == 3 and reasons.count("SuccessfulDelete") == 1, reasons
    finally:
        ctl.call("DELETE", f"{base}/agent")
        for pod in ctl.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"]:  # no kubelet finishes them (real)
            ctl.call(
                "DELETE", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}", query={"gracePeriodSeconds": "0"}
            )
        for name in nodes.values():
            ctl.call("DELETE", f"/api/v1/nodes/{name}")
