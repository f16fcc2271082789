"""The closed vocabulary of cluster-changing actions: typed, validated against the live target, pinned.

Each action kind validates its parameters against the live object, renders one
concrete patch (strategic merge, merge or JSON patch), carries a risk level, and
records the pre-image of exactly the fields it changes together with the patch
that restores them. ``render`` returns an ``ActionResult`` (the one record shared
by the audit trail, the Incident status and the LLM feedback); nothing here talks
to the cluster. Targets are pinned: only the incident's workload, its owner chain,
or the Service / PVC the workload uses — never another namespace or kind.

Called by the propose, verify and apply stages of the workflow (and their tests).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
from collections.abc import Callable
from typing import Any

from aegis import models, quantity

POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_IMAGE = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?$", re.I)
MAX_MEMORY_FACTOR = 4  # set-resources may raise memory at most this many times the current value
MAX_MEMORY = quantity.parse("16Gi")
MAX_REPLICAS = 50


class ActionError(ValueError):
    """An action that cannot be applied to this target as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What an action may need besides its target: its ReplicaSets (rollback), the default StorageClass, the time."""

    replica_sets: tuple[dict[str, Any], ...] = ()
    default_storage_class: str | None = None
    now: datetime.datetime = dataclasses.field(default_factory=lambda: datetime.datetime.now(tz=datetime.UTC))


@dataclasses.dataclass(frozen=True)
class Rendered:
    patch: Any
    patch_type: str  # strategic | merge | json | recreate
    undo: Any
    fields: dict[str, Any]  # path -> value before the change (the pre-image)
    risk: models.Risk


# --- target pinning ------------------------------------------------------------------------------


def allowed_targets(incident: models.Incident, related: list[models.ObjectRef]) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) an action of this incident may touch: the target, its owner chain, and the
    Services / PVCs the evidence tied to it."""
    refs = [incident.target, *incident.owner_chain, *related]
    return {(ref.kind, ref.namespace, ref.name) for ref in refs if ref.namespace == incident.namespace}


def check_target(action: models.Action, incident: models.Incident, related: list[models.ObjectRef]) -> None:
    key = (action.target.kind, action.target.namespace, action.target.name)
    if key not in allowed_targets(incident, related):
        raise ActionError(
            f"{action.kind} targets {action.target}, which is not this incident's workload, its "
            "owner chain, or a Service/PVC it uses"
        )
    if action.kind not in _RENDERERS:
        raise ActionError(f"{action.kind!r} is not in the action vocabulary")
    kinds = _TARGET_KINDS[action.kind]
    if action.target.kind not in kinds:
        raise ActionError(f"{action.kind} applies to {', '.join(sorted(kinds))}, not {action.target.kind}")


# --- helpers -------------------------------------------------------------------------------------


def _pod_spec_path(kind: str) -> list[str]:
    if kind in POD_TEMPLATE_KINDS:
        return ["spec", "template", "spec"]
    if kind == "CronJob":
        return ["spec", "jobTemplate", "spec", "template", "spec"]
    if kind == "Pod":
        return ["spec"]
    raise ActionError(f"{kind} has no pod template")


def _get(obj: dict[str, Any], path: list[str]) -> Any:
    value: Any = obj
    for part in path:
        value = (value or {}).get(part) if isinstance(value, dict) else None
    return value


def _nest(path: list[str], leaf: Any) -> dict[str, Any]:
    out: Any = leaf
    for part in reversed(path):
        out = {part: out}
    return out


def _container(obj: dict[str, Any], kind: str, name: str | None) -> tuple[int, dict[str, Any]]:
    containers = _get(obj, [*_pod_spec_path(kind), "containers"]) or []
    if name is None:
        if len(containers) != 1:
            raise ActionError(f"say which container: {[c.get('name') for c in containers]}")
        return 0, containers[0]
    for index, container in enumerate(containers):
        if container.get("name") == name:
            return index, container
    raise ActionError(f"container {name!r} does not exist (containers: {[c.get('name') for c in containers]})")


def _container_patch(kind: str, container: str, fields: dict[str, Any]) -> dict[str, Any]:
    return _nest(_pod_spec_path(kind), {"containers": [{"name": container, **fields}]})


# --- renderers -----------------------------------------------------------------------------------


def _set_image(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    image = str(action.params.get("image") or "").strip()
    if not image or not _IMAGE.match(image):
        raise ActionError(f"{image!r} is not a valid image reference")
    _, container = _container(live, action.target.kind, action.params.get("container"))
    old = container.get("image")
    if old == image:
        raise ActionError(f"container {container['name']} already runs {image}")
    name = container["name"]
    return Rendered(
        patch=_container_patch(action.target.kind, name, {"image": image}),
        patch_type="strategic",
        undo=_container_patch(action.target.kind, name, {"image": old}),
        fields={f"containers[{name}].image": old},
        risk="low",
    )


def _template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    return clean


def _revision(rs: dict[str, Any]) -> int:
    return int(((rs.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))


def _rollback(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    current = live["spec"]["template"]
    mine = [
        rs
        for rs in ctx.replica_sets
        if any(ref.get("uid") == live["metadata"].get("uid") for ref in rs["metadata"].get("ownerReferences") or [])
        or not live["metadata"].get("uid")
    ]
    wanted = action.params.get("revision")
    candidates = sorted(mine, key=_revision, reverse=True)
    target_rs = None
    for rs in candidates:
        template = _template_without_hash(rs["spec"]["template"])
        if wanted is not None and _revision(rs) != int(wanted):
            continue
        if template != _template_without_hash(current):
            target_rs = rs
            break
    if target_rs is None:
        raise ActionError(
            "there is no earlier revision to roll back to"
            if wanted is None
            else f"revision {wanted} does not exist or is the current one"
        )
    path = "/spec/template"
    return Rendered(
        patch=[{"op": "replace", "path": path, "value": _template_without_hash(target_rs["spec"]["template"])}],
        patch_type="json",
        undo=[{"op": "replace", "path": path, "value": copy.deepcopy(current)}],
        fields={"spec.template": copy.deepcopy(current), "revision": _revision(target_rs)},
        risk="low",
    )


def _set_env(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    name = str(action.params.get("name") or "")
    if not re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", name):
        raise ActionError(f"{name!r} is not a valid environment variable name")
    entry: dict[str, Any] = {"name": name}
    if "valueFrom" in action.params:
        source = action.params["valueFrom"] or {}
        if set(source) - {"configMapKeyRef", "secretKeyRef"} or len(source) != 1:
            raise ActionError("valueFrom must be one configMapKeyRef or secretKeyRef")
        entry["valueFrom"] = source
    elif "value" in action.params:
        entry["value"] = str(action.params["value"])
    else:
        raise ActionError("set-env needs a value or a valueFrom reference")
    _, container = _container(live, action.target.kind, action.params.get("container"))
    old = next((e for e in container.get("env") or [] if e.get("name") == name), None)
    cname = container["name"]
    if old and "value" in old and "valueFrom" in entry:
        entry["value"] = None  # a merge would otherwise keep both, which the API rejects
    if old and "valueFrom" in old and "value" in entry:
        entry["valueFrom"] = None
    undo_entry = copy.deepcopy(old) if old else {"name": name, "$patch": "delete"}
    if old and "value" in old and "valueFrom" in entry:
        undo_entry["valueFrom"] = None
    if old and "valueFrom" in old and "value" in entry:
        undo_entry["value"] = None
    return Rendered(
        patch=_container_patch(action.target.kind, cname, {"env": [entry]}),
        patch_type="strategic",
        undo=_container_patch(action.target.kind, cname, {"env": [undo_entry]}),
        fields={f"containers[{cname}].env[{name}]": old},
        risk="medium",
    )


def _set_resources(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    _, container = _container(live, action.target.kind, action.params.get("container"))
    old = copy.deepcopy(container.get("resources") or {})
    new = copy.deepcopy(old)
    risk: models.Risk = "low"
    for section in ("requests", "limits"):
        for resource, value in (action.params.get(section) or {}).items():
            if resource not in ("cpu", "memory") or not quantity.valid(value):
                raise ActionError(f"{section}.{resource}={value!r} is not a valid cpu/memory quantity")
            before = (old.get(section) or {}).get(resource)
            if resource == "memory":
                amount = quantity.parse(value)
                if amount > MAX_MEMORY:
                    raise ActionError(f"{section}.memory {value} is above the bound of 16Gi")
                if before is not None and amount > quantity.parse(before) * MAX_MEMORY_FACTOR:
                    raise ActionError(
                        f"{section}.memory {value} is more than {MAX_MEMORY_FACTOR}x the current {before}"
                    )
                if before is not None and amount < quantity.parse(before):
                    risk = "medium"  # lowering memory can cause the very OOM it is meant to fix
            new.setdefault(section, {})[resource] = value
    requests, limits = new.get("requests") or {}, new.get("limits") or {}
    for resource in set(requests) & set(limits):
        if quantity.parse(requests[resource]) > quantity.parse(limits[resource]):
            raise ActionError(
                f"requests.{resource} {requests[resource]} would exceed limits.{resource} {limits[resource]}"
            )
    if new == old:
        raise ActionError("set-resources changes nothing")
    undo: dict[str, Any] = {}
    for section in ("requests", "limits"):
        keys = set(new.get(section) or {}) | set(old.get(section) or {})
        if keys:
            undo[section] = {k: (old.get(section) or {}).get(k) for k in keys}
    cname = container["name"]
    return Rendered(
        patch=_container_patch(
            action.target.kind, cname, {"resources": {k: new[k] for k in new if k in ("requests", "limits")}}
        ),
        patch_type="strategic",
        undo=_container_patch(action.target.kind, cname, {"resources": undo}),
        fields={f"containers[{cname}].resources": old},
        risk=risk,
    )


def _set_probe(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    which = str(action.params.get("probe") or "")
    if which not in ("livenessProbe", "readinessProbe", "startupProbe"):
        raise ActionError("probe must be livenessProbe, readinessProbe or startupProbe")
    index, container = _container(live, action.target.kind, action.params.get("container"))
    probe = container.get(which)
    if not probe:
        raise ActionError(f"container {container['name']} has no {which}")
    handler = "httpGet" if "httpGet" in probe else "tcpSocket" if "tcpSocket" in probe else None
    if handler is None:
        raise ActionError(f"only httpGet and tcpSocket probes can be retargeted ({which} uses something else)")
    base = "/" + "/".join([*_pod_spec_path(action.target.kind), "containers", str(index)])
    patch: list[dict[str, Any]] = [{"op": "test", "path": f"{base}/name", "value": container["name"]}]
    undo: list[dict[str, Any]] = [{"op": "test", "path": f"{base}/name", "value": container["name"]}]
    fields: dict[str, Any] = {}
    declared = {p.get("containerPort") for p in container.get("ports") or []} | {
        p.get("name") for p in container.get("ports") or [] if p.get("name")
    }
    if "port" in action.params:
        port = action.params["port"]
        if declared and port not in declared:
            raise ActionError(
                f"port {port!r} is not declared by container {container['name']} ({sorted(map(str, declared))})"
            )
        path = f"{base}/{which}/{handler}/port"
        patch.append({"op": "replace", "path": path, "value": port})
        undo.append({"op": "replace", "path": path, "value": probe[handler].get("port")})
        fields[f"containers[{container['name']}].{which}.{handler}.port"] = probe[handler].get("port")
    if "path" in action.params:
        if handler != "httpGet" or not str(action.params["path"]).startswith("/"):
            raise ActionError("path applies to httpGet probes and must start with /")
        path = f"{base}/{which}/httpGet/path"
        patch.append({"op": "add", "path": path, "value": action.params["path"]})
        old = probe["httpGet"].get("path")
        undo.append(
            {"op": "replace", "path": path, "value": old} if old is not None else {"op": "remove", "path": path}
        )
        fields[f"containers[{container['name']}].{which}.httpGet.path"] = old
    if len(patch) == 1:
        raise ActionError("set-probe needs a port or a path")
    return Rendered(patch=patch, patch_type="json", undo=undo, fields=fields, risk="low")


def _scale(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    replicas = action.params.get("replicas")
    if not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise ActionError(f"replicas must be a whole number from 0 to {MAX_REPLICAS}")
    old = (live.get("spec") or {}).get("replicas", 1)
    if old == replicas:
        raise ActionError(f"already at {replicas} replicas")
    return Rendered(
        patch={"spec": {"replicas": replicas}},
        patch_type="merge",
        undo={"spec": {"replicas": old}},
        fields={"spec.replicas": old},
        risk="high" if replicas == 0 else "medium",
    )


def _restart(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    key = "kubectl.kubernetes.io/restartedAt"
    path = ["spec", "template", "metadata", "annotations"]
    annotations = _get(live, path)
    old = (annotations or {}).get(key)
    stamp = ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Rendered(
        patch=_nest(path, {key: stamp}),
        patch_type="strategic",
        undo=_nest(path, {key: old}) if annotations else _nest(path[:-1], {"annotations": None}),
        fields={f"template.annotations[{key}]": old},
        risk="low",
    )


def _patch_service(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    spec = live.get("spec") or {}
    patch: dict[str, Any] = {}
    undo: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if "selector" in action.params:
        selector = action.params["selector"]
        if not isinstance(selector, dict) or not selector or not all(isinstance(v, str) for v in selector.values()):
            raise ActionError("selector must be a non-empty map of labels")
        old = spec.get("selector") or {}
        patch["selector"] = {**{k: None for k in old if k not in selector}, **selector}
        undo["selector"] = {**{k: None for k in selector if k not in old}, **old}
        fields["spec.selector"] = old
    if "targetPort" in action.params:
        wanted = action.params["targetPort"]
        ports = spec.get("ports") or []
        which = action.params.get("port", ports[0].get("port") if len(ports) == 1 else None)
        current = next((p for p in ports if p.get("port") == which), None)
        if current is None:
            raise ActionError(f"say which Service port to change ({[p.get('port') for p in ports]})")
        patch["ports"] = [{"port": which, "targetPort": wanted}]
        undo["ports"] = [{"port": which, "targetPort": current.get("targetPort", which)}]
        fields[f"spec.ports[{which}].targetPort"] = current.get("targetPort")
    if not patch:
        raise ActionError("patch-service changes the selector and/or a targetPort")
    return Rendered(patch={"spec": patch}, patch_type="strategic", undo={"spec": undo}, fields=fields, risk="medium")


def _set_node_selector(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    selector = action.params.get("nodeSelector")
    if selector is not None and not (isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())):
        raise ActionError("nodeSelector must be a map of labels, or null to remove it")
    path = _pod_spec_path(action.target.kind)
    old = _get(live, [*path, "nodeSelector"]) or {}
    new = selector or {}
    if new == old:
        raise ActionError("nodeSelector is already that")
    patch = _nest(path, {"nodeSelector": {**{k: None for k in old if k not in new}, **new} if new else None})
    undo = _nest(path, {"nodeSelector": {**{k: None for k in new if k not in old}, **old} or None})
    return Rendered(patch=patch, patch_type="strategic", undo=undo, fields={"nodeSelector": old}, risk="medium")


def _recreate_pvc(action: models.Action, live: dict[str, Any], ctx: Context) -> Rendered:
    if (live.get("status") or {}).get("phase") == "Bound":
        raise ActionError("the claim is Bound: recreating it would lose its data")
    spec = copy.deepcopy(live.get("spec") or {})
    old_spec = copy.deepcopy(spec)
    if "storageClassName" in action.params:
        spec["storageClassName"] = action.params["storageClassName"]
    if "size" in action.params:
        if not quantity.valid(action.params["size"]):
            raise ActionError(f"size {action.params['size']!r} is not a quantity")
        spec.setdefault("resources", {}).setdefault("requests", {})["storage"] = action.params["size"]
    if spec == old_spec:
        raise ActionError("recreate-pvc changes nothing")
    spec.pop("volumeName", None)
    meta = live["metadata"]
    manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "labels": meta.get("labels") or {},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("pv.")},
        },
        "spec": spec,
    }
    before = {**manifest, "spec": old_spec}
    return Rendered(patch=manifest, patch_type="recreate", undo=before, fields={"spec": old_spec}, risk="medium")


Renderer = Callable[[models.Action, dict[str, Any], Context], Rendered]
_RENDERERS: dict[str, Renderer] = {
    "set-image": _set_image,
    "rollback": _rollback,
    "set-env": _set_env,
    "set-resources": _set_resources,
    "set-probe": _set_probe,
    "scale": _scale,
    "restart": _restart,
    "patch-service": _patch_service,
    "set-node-selector": _set_node_selector,
    "recreate-pvc": _recreate_pvc,
}
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
_TARGET_KINDS: dict[str, frozenset[str]] = {
    "set-image": _WORKLOADS | {"CronJob", "Pod"},
    "rollback": frozenset({"Deployment"}),
    "set-env": _WORKLOADS | {"CronJob"},
    "set-resources": _WORKLOADS | {"CronJob"},
    "set-probe": _WORKLOADS,
    "scale": frozenset({"Deployment", "StatefulSet"}),
    "restart": _WORKLOADS,
    "patch-service": frozenset({"Service"}),
    "set-node-selector": _WORKLOADS | {"CronJob"},
    "recreate-pvc": frozenset({"PersistentVolumeClaim"}),
}


def render(action: models.Action, live: dict[str, Any], ctx: Context | None = None) -> models.ActionResult:
    """Validate ``action`` against the live target and render its patch, risk and pre-image.

    Raises ``ActionError`` with the reason when the action does not fit the target.
    """
    if action.kind not in _RENDERERS:
        raise ActionError(f"{action.kind!r} is not in the action vocabulary")
    if live.get("kind") and live["kind"] != action.target.kind:
        raise ActionError(f"the live object is a {live['kind']}, not a {action.target.kind}")
    if action.target.kind not in _TARGET_KINDS[action.kind]:
        raise ActionError(
            f"{action.kind} applies to {', '.join(sorted(_TARGET_KINDS[action.kind]))}, not {action.target.kind}"
        )
    rendered = _RENDERERS[action.kind](action, live, ctx or Context())
    return models.ActionResult(
        action=action.model_copy(update={"risk": rendered.risk}),
        patch=rendered.patch,
        patchType=rendered.patch_type,
        preImage={"fields": rendered.fields, "undo": rendered.undo},
    )
