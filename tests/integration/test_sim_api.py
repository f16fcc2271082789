"""The emulated API server behaves like kube-apiserver where AEGIS depends on it (real client, real HTTP)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import kubernetes
import pytest

from tests.integration.conftest import Kube

NS = "shop"


def deployment(name: str = "web", image: str = "nginx:1.27") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "MODE", "value": "prod"}],
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3600"]},
                    ]
                },
            },
        },
    }


@pytest.fixture()
def web(kube: Kube) -> dict[str, Any]:
    kube.namespace(NS)
    return kube.apps.create_namespaced_deployment(NS, deployment(), _preload_content=False).json()


def error_of(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


def test_create_sets_identity_and_defaults(web: dict[str, Any]) -> None:
    meta = web["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert web["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert web["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_create_conflicts_and_needs_a_namespace(kube: Kube, web: dict[str, Any]) -> None:
    status, body = error_of(lambda: kube.apps.create_namespaced_deployment(NS, deployment()))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'deployments.apps "web" already exists'
    other = deployment()
    other["metadata"]["namespace"] = "nowhere"
    status, body = error_of(lambda: kube.apps.create_namespaced_deployment("nowhere", other))
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')


def test_strategic_merge_keeps_the_sidecar_and_merges_env(kube: Kube, web: dict[str, Any]) -> None:
    patched = kube.apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "web", "image": "nginx:1.28", "env": [{"name": "DEBUG", "value": "1"}]}]
                    }
                }
            }
        },
        _preload_content=False,
    ).json()
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.28"), ("sidecar", "busybox:1.36")]
    assert containers[0]["env"] == [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}]
    assert patched["metadata"]["generation"] == 2
    # A $patch: delete directive removes one element by its merge key.
    patched = kube.apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
        _preload_content=False,
    ).json()
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["web"]


def test_merge_patch_replaces_lists_and_json_patch_edits_paths(kube: Kube, web: dict[str, Any]) -> None:
    api = kube.apps.api_client
    merged = kube.apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "redis:7.4"}]}}}},
        _content_type="application/merge-patch+json",
        _preload_content=False,
    ).json()
    assert [c["name"] for c in merged["spec"]["template"]["spec"]["containers"]] == ["only"]
    replaced = kube.apps.patch_namespaced_deployment(
        "web",
        NS,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 5},
            {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "redis:7.4"},
        ],
        _preload_content=False,
    ).json()
    assert replaced["spec"]["replicas"] == 5
    status, _ = error_of(
        lambda: kube.apps.patch_namespaced_deployment("web", NS, [{"op": "test", "path": "/spec/replicas", "value": 1}])
    )
    assert status == 422
    del api


def test_dry_run_validates_and_persists_nothing(kube: Kube, web: dict[str, Any]) -> None:
    before = kube.apps.read_namespaced_deployment("web", NS, _preload_content=False).json()
    dry = kube.apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"replicas": 7}}, dry_run="All", _preload_content=False
    ).json()
    assert dry["spec"]["replicas"] == 7
    after = kube.apps.read_namespaced_deployment("web", NS, _preload_content=False).json()
    assert after == before
    status, body = error_of(
        lambda: kube.apps.patch_namespaced_deployment(
            "web",
            NS,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "web",
                                    "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
                                }
                            ]
                        }
                    }
                }
            },
            dry_run="All",
        )
    )
    assert status == 422 and body["reason"] == "Invalid"
    assert "must be less than or equal to memory limit" in body["message"]
    status, body = error_of(
        lambda: kube.apps.patch_namespaced_deployment(
            "web", NS, {"spec": {"selector": {"matchLabels": {"app": "other"}}}}, dry_run="All"
        )
    )
    assert status == 422 and "field is immutable" in body["message"]


def test_stale_resource_version_is_a_conflict(kube: Kube, web: dict[str, Any]) -> None:
    old_version = web["metadata"]["resourceVersion"]
    kube.apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    status, body = error_of(
        lambda: kube.apps.patch_namespaced_deployment(
            "web", NS, {"metadata": {"resourceVersion": old_version}, "spec": {"replicas": 4}}
        )
    )
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    current = kube.apps.read_namespaced_deployment("web", NS, _preload_content=False).json()
    current["spec"]["replicas"] = 6
    replaced = kube.apps.replace_namespaced_deployment("web", NS, current, _preload_content=False).json()
    assert replaced["spec"]["replicas"] == 6
    status, _ = error_of(lambda: kube.apps.replace_namespaced_deployment("web", NS, current))
    assert status == 409  # the same PUT again carries an old resourceVersion


def test_status_is_written_only_through_the_status_subresource(kube: Kube, web: dict[str, Any]) -> None:
    kube.apps.patch_namespaced_deployment_status("web", NS, {"status": {"readyReplicas": 1}, "spec": {"replicas": 9}})
    obj = kube.apps.read_namespaced_deployment("web", NS, _preload_content=False).json()
    assert obj["status"]["readyReplicas"] == 1 and obj["spec"]["replicas"] == 2
    kube.apps.patch_namespaced_deployment("web", NS, {"status": {"readyReplicas": 2}, "spec": {"replicas": 3}})
    obj = kube.apps.read_namespaced_deployment("web", NS, _preload_content=False).json()
    assert obj["status"]["readyReplicas"] == 1 and obj["spec"]["replicas"] == 3
    assert obj["metadata"]["generation"] == 2


def test_server_side_apply_creates_merges_and_records_the_manager(kube: Kube, web: dict[str, Any]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": NS},
        "data": {"a": "1"},
    }
    created = kube.core.patch_namespaced_config_map(
        "settings",
        NS,
        body,
        field_manager="aegis",
        _content_type="application/apply-patch+yaml",
        _preload_content=False,
    ).json()
    assert created["data"] == {"a": "1"}
    applied = kube.apps.patch_namespaced_deployment(
        "web",
        NS,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 4}},
        field_manager="aegis",
        _content_type="application/apply-patch+yaml",
        _preload_content=False,
    ).json()
    assert applied["spec"]["replicas"] == 4
    assert len(applied["spec"]["template"]["spec"]["containers"]) == 2
    assert any(f["manager"] == "aegis" and f["operation"] == "Apply" for f in applied["metadata"]["managedFields"])


def test_label_and_field_selectors(kube: Kube, web: dict[str, Any]) -> None:
    kube.apps.create_namespaced_deployment(NS, deployment("api", "redis:7.4"))
    names = [d.metadata.name for d in kube.apps.list_namespaced_deployment(NS, label_selector="app=api").items]
    assert names == ["api"]
    names = [d.metadata.name for d in kube.apps.list_namespaced_deployment(NS, label_selector="app in (web,api)").items]
    assert names == ["api", "web"]
    assert [d.metadata.name for d in kube.apps.list_namespaced_deployment(NS, label_selector="app!=web").items] == [
        "api"
    ]
    for index, obj in enumerate(("web-1", "api-1")):
        kube.core.create_namespaced_event(
            NS,
            {
                "metadata": {"name": f"e{index}"},
                "involvedObject": {"kind": "Pod", "name": obj, "namespace": NS},
                "reason": "BackOff",
                "message": "m",
                "type": "Warning",
            },
        )
    events = kube.core.list_namespaced_event(NS, field_selector="involvedObject.name=web-1").items
    assert [e.metadata.name for e in events] == ["e0"]
    found = kube.apps.list_deployment_for_all_namespaces(field_selector="metadata.name=api").items
    assert [d.metadata.name for d in found] == ["api"]


def test_pod_logs_are_text_with_tail_and_previous(kube: Kube, sim: Any) -> None:
    kube.namespace(NS)
    kube.core.create_namespaced_pod(
        NS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}
    )
    sim.api.logs[(NS, "p", "app")] = {"current": ["one", "two", "three"], "previous": ["boom"]}
    assert kube.core.read_namespaced_pod_log("p", NS, tail_lines=2) == "two\nthree\n"
    assert kube.core.read_namespaced_pod_log("p", NS, container="app", previous=True) == "boom\n"
    sim.api.logs.clear()
    status, body = error_of(lambda: kube.core.read_namespaced_pod_log("p", NS))
    assert status == 400 and "is waiting to start" in body["message"]


def test_deleting_a_namespace_removes_its_objects(kube: Kube, web: dict[str, Any]) -> None:
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    deleted = kube.core.delete_namespace(NS, _preload_content=False).json()
    assert deleted["status"]["phase"] == "Terminating"

    def gone() -> bool:
        return NS not in [n.metadata.name for n in kube.core.list_namespace().items]

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()
    assert kube.apps.list_deployment_for_all_namespaces().items == []
    assert kube.core.list_config_map_for_all_namespaces().items == []


def test_owner_references_are_garbage_collected(kube: Kube, web: dict[str, Any]) -> None:
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": web["metadata"]["uid"],
        "controller": True,
    }
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "owned", "ownerReferences": [owner]}})
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "orphan-me", "ownerReferences": [owner]}})
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "free"}})
    kube.apps.delete_namespaced_deployment("web", NS)
    assert sorted(c.metadata.name for c in kube.core.list_namespaced_config_map(NS).items) == ["free"]
    # Orphan propagation keeps the dependents and drops the reference.
    kube.apps.create_namespaced_deployment(NS, deployment("api"))
    api_uid = kube.apps.read_namespaced_deployment("api", NS).metadata.uid
    owner["name"], owner["uid"] = "api", api_uid
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "kept", "ownerReferences": [owner]}})
    kube.apps.delete_namespaced_deployment("api", NS, propagation_policy="Orphan")
    kept = kube.core.read_namespaced_config_map("kept", NS)
    assert kept.metadata.owner_references is None


def test_finalizers_hold_deletion_until_removed(kube: Kube) -> None:
    kube.namespace(NS)
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["aegis.dev/x"]}})
    kube.core.delete_namespaced_config_map("held", NS)
    held = kube.core.read_namespaced_config_map("held", NS)
    assert held.metadata.deletion_timestamp is not None
    kube.core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    status, _ = error_of(lambda: kube.core.read_namespaced_config_map("held", NS))
    assert status == 404


def test_watch_streams_changes_and_resumes_from_a_resource_version(kube: Kube, web: dict[str, Any]) -> None:
    listing = kube.apps.list_namespaced_deployment(NS)
    seen: list[tuple[str, int]] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        for event in stream.stream(
            kube.apps.list_namespaced_deployment,
            NS,
            timeout_seconds=3,
            resource_version=listing.metadata.resource_version,
        ):
            seen.append((event["type"], event["object"].spec.replicas))
            if len(seen) == 2:
                stream.stop()

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)
    kube.apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    kube.apps.delete_namespaced_deployment("web", NS)
    thread.join(timeout=10)
    assert seen == [("MODIFIED", 3), ("DELETED", 3)]


def test_custom_resources_from_crds_and_kubectl(kube: Kube, sim: Any) -> None:
    import subprocess

    crds = [
        c.metadata.name
        for c in kubernetes.client.ApiextensionsV1Api(kube.core.api_client).list_custom_resource_definition().items
    ]
    assert crds == ["incidents.aegis.dev", "results.core.k8sgpt.ai"]
    status, _ = error_of(
        lambda: kube.custom.patch_namespaced_custom_object(
            "aegis.dev", "v1alpha1", "default", "incidents", "nope", {"spec": {}}
        )
    )
    assert status == 404
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(sim.kubeconfig), "get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "namespace/kube-system" in out.stdout.split()


def test_review_fidelity_points(kube: Kube, web: dict[str, Any]) -> None:
    """Pod spec immutability, eviction, dry-run delete-collection, Secret stringData, namespace labels."""
    kube.core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "p", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]}]},
        },
    )
    status, body = error_of(
        lambda: kube.core.patch_namespaced_pod(
            "p", NS, {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "2"}]}]}}
        )
    )
    assert status == 422 and "pod updates may not change fields" in body["message"]
    kube.core.patch_namespaced_pod("p", NS, {"spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]}})
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    kube.core.delete_collection_namespaced_config_map(NS, dry_run="All")
    assert [c.metadata.name for c in kube.core.list_namespaced_config_map(NS).items] == ["a"]
    kube.core.create_namespaced_pod_eviction("p", NS, {"metadata": {"name": "p", "namespace": NS}})
    assert [p.metadata.name for p in kube.core.list_namespaced_pod(NS).items] == []
    secret = kube.core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert secret.data == {"k": "dg=="} and secret.string_data is None
    labels = kube.core.read_namespace(NS).metadata.labels
    assert labels["kubernetes.io/metadata.name"] == NS


def test_a_watch_with_a_selector_sees_objects_leave_and_enter_it(kube: Kube, web: dict[str, Any]) -> None:
    listing = kube.apps.list_namespaced_deployment(NS, label_selector="tier=front")
    seen: list[tuple[str, str]] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        for event in stream.stream(
            kube.apps.list_namespaced_deployment,
            NS,
            label_selector="tier=front",
            timeout_seconds=3,
            resource_version=listing.metadata.resource_version,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                stream.stop()

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)
    kube.apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": "front"}}})
    kube.apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": "back"}}})
    thread.join(timeout=10)
    assert seen == [("ADDED", "web"), ("DELETED", "web")]


def test_namespace_deletion_waits_for_finalizers(kube: Kube) -> None:
    kube.namespace(NS)
    kube.core.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["example.com/x"]}})
    kube.core.delete_namespace(NS)
    time.sleep(0.5)
    assert kube.core.read_namespace(NS).status.phase == "Terminating"
    assert kube.core.read_namespaced_config_map("held", NS).metadata.deletion_timestamp is not None
    kube.core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if NS not in [n.metadata.name for n in kube.core.list_namespace().items]:
            return
        time.sleep(0.1)
    raise AssertionError("the namespace was not removed after its last finalizer went")


def test_custom_resources_are_pruned_to_their_crd_schema(kube: Kube) -> None:
    """As on a real cluster: what the Incident CRD declares survives every write path; anything else vanishes."""
    from tests import factories

    kube.namespace(NS)
    body = factories.incident(NS, "web", phase="Diagnosed")
    body.pop("status")
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        body["metadata"].pop(key)
    body["spec"]["approval"]["undeclared"] = "gone"
    body["spec"]["undeclared"] = {"a": 1}
    body["undeclared"] = True
    created = kube.custom.create_namespaced_custom_object("aegis.dev", "v1alpha1", NS, "incidents", body)
    assert "undeclared" not in created and "undeclared" not in created["spec"]
    assert "undeclared" not in created["spec"]["approval"] and created["spec"]["approval"]["decision"] == "Pending"

    llm = {
        "calls": 2,
        "cached": 1,
        "failed": 0,
        "inputTokens": 900,
        "outputTokens": 120,
        "latencyMs": 1500,
        "history": [{"purpose": "diagnose", "model": "qwen", "ok": True, "cached": False, "latencyMs": 1500}],
    }
    status = {
        "phase": "AwaitingApproval",
        "llm": llm,
        "diagnosis": {
            "category": "app-crash",
            "summary": "exits at start",
            "confidence": 0.8,
            "source": "llm",
            "explanation": "DATABASE_URL is unset, so the app exits",
            "undeclared": "gone",
        },
        "decision": {"verdict": "ask", "outcome": "pending", "expiresAt": "2026-11-21T11:00:00Z", "free": "kept"},
        "plan": {"chosen": {"actions": [{"kind": "set-env", "params": {"env": {"A": "1"}}}]}},
        "undeclared": {"x": 1},
    }
    name = body["metadata"]["name"]
    kube.custom.patch_namespaced_custom_object_status(
        "aegis.dev", "v1alpha1", NS, "incidents", name, {"status": status}
    )
    stored = kube.custom.get_namespaced_custom_object("aegis.dev", "v1alpha1", NS, "incidents", name)["status"]
    assert stored["llm"] == llm
    assert stored["diagnosis"]["explanation"] == "DATABASE_URL is unset, so the app exits"
    assert stored["decision"] == {
        "verdict": "ask",
        "outcome": "pending",
        "expiresAt": "2026-11-21T11:00:00Z",
        "free": "kept",  # decision preserves unknown fields
    }
    assert stored["plan"] == status["plan"]
    assert "undeclared" not in stored and "undeclared" not in stored["diagnosis"]

    # A spec update (merge patch and PUT) prunes too, and leaves the status alone.
    patched = kube.custom.patch_namespaced_custom_object(
        "aegis.dev", "v1alpha1", NS, "incidents", name, {"spec": {"approval": {"decision": "Approved", "x": 1}}}
    )
    assert patched["spec"]["approval"] == {"decision": "Approved", "reason": ""}
    patched["spec"]["signature"] = ["kept"]
    patched["spec"]["y"] = 2
    replaced = kube.custom.replace_namespaced_custom_object("aegis.dev", "v1alpha1", NS, "incidents", name, patched)
    assert replaced["spec"]["signature"] == ["kept"] and "y" not in replaced["spec"]
    assert replaced["status"]["llm"] == llm
