"""Reading the live objects a remediation may touch: the target, its Services and claims, and its history.

Used by the propose, verify and apply nodes (each reads fresh state: plans are
always rendered against what the cluster holds now).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aegis import actions, models
from aegis.rules import scheduling
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


async def quotas(deps: context.Deps, namespace: str, evidence: models.Evidence) -> dict[str, dict[str, Any]]:
    """The ResourceQuotas that refused the target's pods (the shadow must leave the same room to reproduce)."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.quota for r in scheduling.quota_refusals(evidence)):
        quota = await deps.cluster.get("ResourceQuota", namespace, name)
        if quota is not None:
            out[f"ResourceQuota/{name}"] = {**quota, "kind": "ResourceQuota"}
    return out


def plan_key(plan: dict[str, Any]) -> str:
    """A plan's identity: its actions and parameters."""
    return "|".join(
        f"{a['kind']}:{a['target']['kind']}/{a['target']['name']}:{sorted(a.get('params', {}).items())}"
        for a in plan.get("actions") or []
    )


def identity(obj: dict[str, Any] | None) -> dict[str, Any]:
    """What "the same object as verified" means: its uid and a digest of its spec (Services and claims have no
    generation; status updates must not count as changes)."""
    if not obj:
        return {}
    spec = json.dumps(obj.get("spec"), sort_keys=True, default=str)
    return {"uid": (obj.get("metadata") or {}).get("uid"), "spec": hashlib.sha256(spec.encode()).hexdigest()}


def patch_digest(results: list[models.ActionResult]) -> str:
    material = json.dumps([[r.action.kind, r.patch_type, r.patch] for r in results], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def mark(result: models.ActionResult, marker: str, live: dict[str, Any] | None = None) -> models.ActionResult:
    """The same change plus the idempotency marker annotation (and the live resourceVersion as precondition),
    in one request."""
    patch = result.patch
    version = ((live or {}).get("metadata") or {}).get("resourceVersion")
    if result.patch_type in ("strategic", "merge"):
        meta: dict[str, Any] = {**(patch.get("metadata") or {}), "annotations": {MARKER: marker}}
        if version:
            meta["resourceVersion"] = version
        patch = {**patch, "metadata": meta}
    elif result.patch_type == "json":
        ops: list[dict[str, Any]] = []
        if version:
            ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
        if not ((live or {}).get("metadata") or {}).get("annotations"):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        patch = [
            *ops,
            *patch,
            {"op": "add", "path": f"/metadata/annotations/{MARKER.replace('/', '~1')}", "value": marker},
        ]
    elif result.patch_type == "recreate":
        patch = {
            **patch,
            "metadata": {
                **patch["metadata"],
                "annotations": {**(patch["metadata"].get("annotations") or {}), MARKER: marker},
            },
        }
    return result.model_copy(update={"patch": patch})
