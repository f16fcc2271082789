"""Every action: the patch it renders, the pre-image it records, and that its undo restores the original.

Patches are applied with the emulator's patch semantics (strategic merge with merge keys, JSON patch, merge patch).
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pydantic
import pytest

from aegis import actions, models
from aegis.sim import patching
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def apply(obj: dict[str, Any], patch: Any, patch_type: str) -> dict[str, Any]:
    if patch_type == "strategic":
        return patching.strip_directives(patching.strategic_merge(obj, patch))
    if patch_type == "merge":
        return patching.merge_patch(obj, patch)
    if patch_type == "json":
        return patching.json_patch(obj, patch)
    raise AssertionError(patch_type)


def action(kind: str, target_kind: str = "Deployment", target: str = "web", **params: Any) -> models.Action:
    return models.Action(
        kind=kind, target=models.ObjectRef(kind=target_kind, namespace="shop", name=target), params=params
    )


def web() -> dict[str, Any]:
    deploy = factories.deployment("shop", "web", "nginx:1.27", memory_limit="64Mi")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": 80}]
    container["env"] = [{"name": "MODE", "value": "prod"}]
    container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}
    deploy["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.36"})
    return deploy


def roundtrip(obj: dict[str, Any], act: models.Action, ctx: actions.Context | None = None) -> dict[str, Any]:
    """Render, apply, check the undo restores the original; return the changed object."""
    result = actions.render(act, obj, ctx)
    changed = apply(obj, result.patch, result.patch_type)
    assert changed != obj, "the action changed nothing"
    restored = apply(changed, result.pre_image["undo"], result.patch_type)
    assert restored == obj, "the undo did not restore the pre-image"
    return changed


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


def test_set_image_changes_one_container_and_keeps_the_sidecar() -> None:
    obj = web()
    changed = roundtrip(obj, action("set-image", container="web", image="nginx:1.27.3"))
    assert containers(changed)["web"]["image"] == "nginx:1.27.3"
    assert containers(changed)["sidecar"]["image"] == "busybox:1.36"
    result = actions.render(action("set-image", container="web", image="nginx:1.27.3"), obj)
    assert result.action.risk == "low" and result.pre_image["fields"] == {"containers[web].image": "nginx:1.27"}
    with pytest.raises(actions.ActionError, match="not a valid image"):
        actions.render(action("set-image", container="web", image="nginx; rm -rf /"), obj)
    with pytest.raises(actions.ActionError, match="does not exist"):
        actions.render(action("set-image", container="db", image="postgres:16"), obj)


def test_rollback_restores_the_previous_revisions_template() -> None:
    obj = web()
    good = copy.deepcopy(obj["spec"]["template"])
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.277"
    old_rs = factories.replicaset({**obj, "spec": {**obj["spec"], "template": good}}, "6d4cf56db6")
    new_rs = factories.replicaset(obj, "7b9c6d5f4f")
    old_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    for rs in (old_rs, new_rs):
        rs["metadata"]["ownerReferences"][0]["uid"] = obj["metadata"]["uid"]
    ctx = actions.Context(replica_sets=(new_rs, old_rs))
    changed = roundtrip(obj, action("rollback"), ctx)
    assert containers(changed)["web"]["image"] == "nginx:1.27"
    assert "pod-template-hash" not in changed["spec"]["template"]["metadata"]["labels"]
    with pytest.raises(actions.ActionError, match="no earlier revision"):
        actions.render(action("rollback"), obj, actions.Context(replica_sets=(new_rs,)))


def test_set_env_adds_or_replaces_by_name() -> None:
    obj = web()
    changed = roundtrip(obj, action("set-env", container="web", name="LOG_LEVEL", value="debug"))
    assert containers(changed)["web"]["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "LOG_LEVEL", "value": "debug"},
    ]
    changed = roundtrip(
        obj,
        action("set-env", container="web", name="MODE", valueFrom={"configMapKeyRef": {"name": "web", "key": "mode"}}),
    )
    assert containers(changed)["web"]["env"] == [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "web", "key": "mode"}}}
    ]
    assert actions.render(action("set-env", container="web", name="A", value="1"), obj).action.risk == "medium"


def test_set_resources_is_bounded_and_reversible() -> None:
    obj = web()
    changed = roundtrip(
        obj, action("set-resources", container="web", limits={"memory": "256Mi"}, requests={"memory": "128Mi"})
    )
    assert containers(changed)["web"]["resources"] == {"limits": {"memory": "256Mi"}, "requests": {"memory": "128Mi"}}
    with pytest.raises(actions.ActionError, match="more than 4x"):
        actions.render(action("set-resources", container="web", limits={"memory": "1Gi"}), obj)
    with pytest.raises(actions.ActionError, match="would exceed"):
        actions.render(action("set-resources", container="web", requests={"memory": "128Mi"}), obj)
    added_cpu = roundtrip(obj, action("set-resources", container="web", requests={"cpu": "100m"}))
    assert containers(added_cpu)["web"]["resources"]["requests"] == {"memory": "64Mi", "cpu": "100m"}


def test_set_probe_points_at_a_declared_port() -> None:
    obj = web()
    changed = roundtrip(obj, action("set-probe", container="web", probe="livenessProbe", port="http"))
    assert containers(changed)["web"]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    changed = roundtrip(obj, action("set-probe", container="web", probe="livenessProbe", port=80, path="/"))
    assert containers(changed)["web"]["livenessProbe"]["httpGet"] == {"path": "/", "port": 80}
    with pytest.raises(actions.ActionError, match="not declared"):
        actions.render(action("set-probe", container="web", probe="livenessProbe", port=9999), obj)
    with pytest.raises(actions.ActionError, match="has no readinessProbe"):
        actions.render(action("set-probe", container="web", probe="readinessProbe", port=80), obj)


def test_scale_restart_and_node_selector() -> None:
    obj = web()
    assert roundtrip(obj, action("scale", replicas=3))["spec"]["replicas"] == 3
    assert actions.render(action("scale", replicas=0), obj).action.risk == "high"
    restarted = roundtrip(obj, action("restart"), actions.Context(now=NOW))
    assert restarted["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-11-21T10:00:00Z"
    }
    pinned = copy.deepcopy(obj)
    pinned["spec"]["template"]["spec"]["nodeSelector"] = {"accelerator": "t4", "zone": "a"}
    freed = roundtrip(pinned, action("set-node-selector", nodeSelector=None))
    assert "nodeSelector" not in freed["spec"]["template"]["spec"]
    moved = roundtrip(pinned, action("set-node-selector", nodeSelector={"zone": "a"}))
    assert moved["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "a"}


def test_patch_service_selector_and_target_port() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "selector": {"app": "check-out", "tier": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}],
        },
    }
    fixed = roundtrip(service, action("patch-service", "Service", "checkout", selector={"app": "checkout"}))
    assert fixed["spec"]["selector"] == {"app": "checkout"}
    ported = roundtrip(service, action("patch-service", "Service", "checkout", targetPort="http"))
    assert ported["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_recreate_pvc_only_when_unbound() -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop", "uid": "u"},
        "spec": {
            "storageClassName": "fast-ssd",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}},
        },
        "status": {"phase": "Pending"},
    }
    result = actions.render(action("recreate-pvc", "PersistentVolumeClaim", "data", storageClassName="standard"), pvc)
    assert result.patch_type == "recreate"
    assert result.patch["spec"]["storageClassName"] == "standard"
    assert result.pre_image["fields"]["spec"]["storageClassName"] == "fast-ssd"
    bound = {**pvc, "status": {"phase": "Bound"}}
    with pytest.raises(actions.ActionError, match="lose its data"):
        actions.render(action("recreate-pvc", "PersistentVolumeClaim", "data", storageClassName="standard"), bound)


def test_targets_are_pinned_to_the_incident() -> None:
    incident = models.Incident(
        name="deployment-web",
        namespace="shop",
        fingerprint="f",
        target=models.ObjectRef(kind="Deployment", namespace="shop", name="web"),
        ownerChain=[models.ObjectRef(kind="ReplicaSet", namespace="shop", name="web-6d4cf56db6")],
    )
    related = [models.ObjectRef(kind="Service", namespace="shop", name="web")]
    actions.check_target(action("set-image", image="x:1"), incident, related)
    actions.check_target(action("patch-service", "Service", "web", selector={"a": "b"}), incident, related)
    for wrong in (
        action("set-image", target="other", image="x:1"),
        models.Action(
            kind="scale",
            target=models.ObjectRef(kind="Deployment", namespace="prod", name="web"),
            params={"replicas": 0},
        ),
        action("patch-service", "Service", "payments", selector={"a": "b"}),
    ):
        with pytest.raises(actions.ActionError, match="not this incident's workload"):
            actions.check_target(wrong, incident, related)
    with pytest.raises(actions.ActionError, match="applies to"):
        actions.check_target(action("rollback", "Service", "web"), incident, related)


def test_the_vocabulary_is_closed_and_complete() -> None:
    assert set(actions._RENDERERS) == set(models.ActionKind.__args__)  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError, match="kind"):  # a kind outside the vocabulary
        models.Action(kind="kubectl-exec", target=models.ObjectRef(kind="Pod", namespace="shop", name="p"))
