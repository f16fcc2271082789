"""Reading the live objects a remediation may touch: the target, its Services and claims, and its history.

Used by the propose, verify and apply nodes (each reads fresh state: plans are
always rendered against what the cluster holds now).
"""

from __future__ import annotations

from typing import Any

from aegis import actions, models
from graph import context

MARKER = "aegis.dev/applied"  # annotation that makes an apply idempotent across restarts


async def live_objects(
    deps: context.Deps, incident: models.Incident, evidence: models.Evidence
) -> tuple[dict[str, dict[str, Any]], list[models.ObjectRef], actions.Context]:
    """("Kind/name" -> live object, related refs for target pinning, action context)."""
    cluster = deps.cluster
    ns = incident.namespace
    objects: dict[str, dict[str, Any]] = {}
    related: list[models.ObjectRef] = []
    target = await cluster.get(incident.target.kind, ns, incident.target.name)
    if target is not None:
        objects[f"{incident.target.kind}/{incident.target.name}"] = target
    for claim in evidence.claims:
        pvc = await cluster.get("PersistentVolumeClaim", ns, claim.name)
        if pvc is not None:
            objects[f"PersistentVolumeClaim/{claim.name}"] = pvc
            related.append(models.ObjectRef(kind="PersistentVolumeClaim", namespace=ns, name=claim.name))
    replica_sets: tuple[dict[str, Any], ...] = ()
    if incident.target.kind == "Deployment" and target is not None:
        selector = (target.get("spec") or {}).get("selector")
        uid = target["metadata"].get("uid")
        replica_sets = tuple(
            rs
            for rs in await cluster.list("ReplicaSet", ns, selector=selector)
            if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])
        )
    default_class = None
    if any(c.storage_class_exists is False for c in evidence.claims):
        for sc in await cluster.list_cluster("StorageClass"):
            if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                default_class = sc["metadata"]["name"]
    ctx = actions.Context(replica_sets=replica_sets, default_storage_class=default_class, now=deps.clock())
    return objects, related, ctx


async def backends(deps: context.Deps, namespace: str, selector: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Deployments in ``namespace`` whose pods a Service with ``selector`` would select."""
    out: dict[str, dict[str, Any]] = {}
    for deploy in await deps.cluster.list("Deployment", namespace):
        labels = ((deploy.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            out[f"Deployment/{deploy['metadata']['name']}"] = deploy
    return out


def plan_key(plan: dict[str, Any]) -> str:
    """A plan's identity: its actions and parameters."""
    return "|".join(
        f"{a['kind']}:{a['target']['kind']}/{a['target']['name']}:{sorted(a.get('params', {}).items())}"
        for a in plan.get("actions") or []
    )


def mark(result: models.ActionResult, marker: str) -> models.ActionResult:
    """The same change plus the idempotency marker annotation, in one request."""
    patch = result.patch
    if result.patch_type in ("strategic", "merge"):
        patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "annotations": {MARKER: marker}}}
    elif result.patch_type == "json":
        patch = [*patch, {"op": "add", "path": f"/metadata/annotations/{MARKER.replace('/', '~1')}", "value": marker}]
    elif result.patch_type == "recreate":
        patch = {
            **patch,
            "metadata": {
                **patch["metadata"],
                "annotations": {**(patch["metadata"].get("annotations") or {}), MARKER: marker},
            },
        }
    return result.model_copy(update={"patch": patch})
