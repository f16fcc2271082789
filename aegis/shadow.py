"""Shadow verification: reproduce the failure and prove the fix in isolated namespaces before production.

For one plan, two namespaces are created (``aegis-shadow-<id>-b`` and ``-c``), each
labelled with its incident and an expiry, capped by a ResourceQuota and isolated
by a default-deny NetworkPolicy (configurable). Both receive copies of what the
workload needs — referenced ConfigMaps, Secrets mirrored as keys with placeholder
values (unless copying is enabled), the Services and claims involved — and the
workload itself, names and labels unchanged. The **baseline** stays as production
is now and must reproduce the failure; the **candidate** gets the plan through the
very patch that production would get (``apply_to``, also used by the apply and
confirm stages, with ``undo``). Health is judged by ``aegis.health``'s fixed rules.
The namespaces are deleted in every case; the janitor (``graph.engine``) removes
any left behind by a crash (``expired``).

Called by the verify stage of the workflow.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import hashlib
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from aegis import config, health, models, quantity
from aegis import metrics as aegis_metrics
from aegis.kube import client

logger = logging.getLogger("aegis.shadow")

LABEL_SHADOW = "aegis.dev/shadow"
LABEL_INCIDENT = "aegis.dev/incident"
LABEL_EXPIRES = "aegis.dev/expires"  # unix seconds
PLACEHOLDER = "aegis-shadow-placeholder"
# The kinds AEGIS never changes (models.UNCHANGED_KINDS) are never rehearsed either, and why.
_NOT_REHEARSED = {
    "DaemonSet": "a copy would run a pod on every node, with the original's host access",
    "Job": "a copy would run the job, and its side effects, again; there is no rollout to judge",
    "CronJob": "a copy would run the job, and its side effects, again; there is no rollout to judge",
}


def expired(namespace: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether a shadow namespace is past its expiry label (unlabelled or unreadable: expired)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_SHADOW) != "true":
        return False
    try:
        return now.timestamp() >= int(labels.get(LABEL_EXPIRES, "0"))
    except ValueError:
        return True


def remaining(namespaces: list[dict[str, Any]], now: datetime.datetime) -> list[str]:
    """The names of listed shadow namespaces that stay: neither terminating nor expired (the janitor's to delete)."""
    return [
        ns["metadata"]["name"]
        for ns in namespaces
        if not ns["metadata"].get("deletionTimestamp") and not expired(ns, now)
    ]


def namespace_names(incident: models.Incident, attempt: int) -> tuple[str, str]:
    """Fresh names per run (a retried run never collides with a namespace that is still terminating)."""
    digest = hashlib.sha256(f"{incident.namespace}/{incident.name}/{incident.uid}".encode()).hexdigest()[:8]
    base = f"aegis-shadow-{digest}-{attempt}-{secrets.token_hex(2)}"
    return f"{base}-b", f"{base}-c"


def _clean(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of ``obj`` that can be created anew in ``namespace``."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    out["metadata"] = {
        "name": meta["name"],
        "namespace": namespace,
        "labels": dict(meta.get("labels") or {}),
        "annotations": {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if not k.startswith(
                ("deployment.kubernetes.io/", "kubectl.kubernetes.io/last-applied", "pv.kubernetes.io/")
            )
        },
    }
    out.pop("status", None)
    spec = out.get("spec") or {}
    if out.get("kind") == "Service":  # never a real load balancer, node port or external IP
        for key in (
            "clusterIP",
            "clusterIPs",
            "healthCheckNodePort",
            "loadBalancerIP",
            "externalIPs",
            "loadBalancerSourceRanges",
            "externalTrafficPolicy",
            "externalName",
        ):
            spec.pop(key, None)
        if spec.get("type") != "ClusterIP":
            spec["type"] = "ClusterIP"
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    if out.get("kind") == "PersistentVolumeClaim":
        spec.pop("volumeName", None)
    if out.get("kind") in health.WORKLOADS and "replicas" in spec:
        spec["replicas"] = min(int(spec.get("replicas") or 1), 1)  # one replica proves the fix, cheaply
    return out


_COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")


def _format_quantity(amount: Any) -> str:
    return str(int(amount)) if amount == int(amount) else f"{int(amount * 1000)}m"


def quota_room(quota: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A ResourceQuota for a shadow namespace that leaves the room production's quota leaves now (its hard
    compute limits minus what is used): a pod the quota refuses in production is refused in the shadow too,
    and a fix that fits production's room fits the shadow's. Counts (pods, services…) are left to the shadow's
    own quota."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    used = (quota.get("status") or {}).get("used") or {}
    room: dict[str, str] = {}
    for key in _COMPUTE:
        if key in hard:
            left = quantity.parse(hard[key]) - quantity.parse(used.get(key, "0"))
            room[key] = _format_quantity(max(left, quantity.parse("0")))
    name = (quota.get("metadata") or {}).get("name") or "quota"
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": f"aegis-room-{name}"[:63], "namespace": namespace},
        "spec": {"hard": room},
    }


def _dicts(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a nested document (a workload, a pod template, a patch), depth first."""
    if isinstance(node, list):
        for item in node:
            yield from _dicts(item)
    elif isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)


def _references(obj: Any) -> tuple[set[str], set[str], set[str]]:
    """ConfigMaps, Secrets and claims named anywhere in a workload, a pod template or a patch."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    claims: set[str] = set()
    for node in _dicts(obj):
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            if key in ("configMap", "configMapRef", "configMapKeyRef") and value.get("name"):
                config_maps.add(value["name"])
            elif key in ("secretRef", "secretKeyRef") and value.get("name"):
                secrets.add(value["name"])
            elif key == "secret" and value.get("secretName"):
                secrets.add(value["secretName"])
            elif key == "persistentVolumeClaim" and value.get("claimName"):
                claims.add(value["claimName"])
    return config_maps, secrets, claims


def _pod_identity(obj: Any) -> tuple[set[str], set[str]]:
    """imagePullSecrets and non-default ServiceAccounts named in workloads' pod templates or in patches (a rollback
    may return to a template that pulls with other credentials or runs as another account)."""
    pull: set[str] = set()
    accounts: set[str] = set()
    for node in _dicts(obj):
        refs = node.get("imagePullSecrets")
        if isinstance(refs, list):
            pull.update(ref["name"] for ref in refs if isinstance(ref, dict) and ref.get("name"))
        # A pod spec's account (``serviceAccount`` is its deprecated alias); a JSON patch may set it alone.
        account = node.get("serviceAccountName") or node.get("serviceAccount")
        if str(node.get("path", "")).endswith(("/serviceAccountName", "/serviceAccount")):
            account = node.get("value")
        if isinstance(account, str) and account and account != "default":
            accounts.add(account)
    return pull, accounts


# Typed Secrets whose values the API server parses: their placeholders must parse too (a registry credential
# mounted as a file, e.g. by an image builder, is refused as "invalid character 'a' looking for beginning of value").
_PLACEHOLDERS = {
    ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"): '{"auths":{}}',
    ("kubernetes.io/dockercfg", ".dockercfg"): "{}",
}


def placeholder_data(secret: dict[str, Any]) -> dict[str, str]:
    """The keys of ``secret`` with placeholder values (base64) that the API server accepts for its type."""
    kind = secret.get("type") or "Opaque"
    return {
        key: base64.b64encode(_PLACEHOLDERS.get((kind, key), PLACEHOLDER).encode()).decode()
        for key in (secret.get("data") or {})
    }


class ShadowVerifier:
    """Rehearses a plan in a baseline and a candidate namespace, and judges both with a ``health.Observer``."""

    def __init__(
        self, cluster: client.Cluster, settings: config.Settings, metrics: aegis_metrics.Metrics | None = None
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.observer = health.Observer(cluster, settings)
        self.metrics = metrics  # counts the shadow namespaces that exist (aegis_shadow_namespaces_active)

    async def verify(
        self,
        incident: models.Incident,
        plan: models.Plan,
        results: list[models.ActionResult],
        objects: dict[str, dict[str, Any]],
        attempt: int,
        now: datetime.datetime,
    ) -> models.Verification:
        """Run baseline and candidate side by side; always tear both namespaces down.

        ``objects`` maps "Kind/name" to the live objects to copy: the workload(s), Services and claims involved.
        """
        baseline_ns, candidate_ns = namespace_names(incident, attempt)
        details: list[str] = []
        objects = health.with_kinds(objects)
        unchanged = sorted({str(obj.get("kind")) for obj in objects.values() if obj.get("kind") in _NOT_REHEARSED})
        if unchanged:  # nothing is created: no shadow namespace, no copy
            why = "; ".join(dict.fromkeys(_NOT_REHEARSED[kind] for kind in unchanged))
            return models.Verification(
                passed=False,
                details=[
                    f"a {'/'.join(unchanged)} cannot be rehearsed in a shadow namespace ({why}); "
                    "a human must verify this fix"
                ],
            )
        try:
            for ns in (baseline_ns, candidate_ns):
                await self._namespace(ns, incident, now)
                await self._copy(incident.namespace, ns, objects, details, [r.patch for r in results])
            for result in results:
                await apply_to(self.cluster, candidate_ns, result)
            details.append(f"candidate: {len(results)} action(s) applied with the production patch")
            baseline, candidate = await asyncio.gather(
                self.observer.observe(baseline_ns, objects, expect_healthy=False),
                self.observer.observe(candidate_ns, objects, expect_healthy=True),
            )
        except client.ClusterError as exc:
            details.append(f"shadow verification could not run: {exc}")
            return models.Verification(
                passed=False,
                baselineReproduced=None,
                candidateHealthy=False,
                shadowNamespace=candidate_ns,
                details=details,
            )
        finally:
            for ns in (baseline_ns, candidate_ns):
                try:
                    await self.cluster.delete_namespace(ns)
                    if self.metrics is not None:
                        self.metrics.shadow_closed(ns)
                except client.ClusterError as exc:  # the janitor removes it after its expiry
                    logger.warning("could not delete shadow namespace %s: %s", ns, exc)
                    if self.metrics is not None:
                        self.metrics.shadow_left(ns)
        reproduced = not baseline.healthy
        details.append(
            "baseline "
            + (
                "reproduced the failure: " + "; ".join(baseline.reasons)
                if reproduced
                else "did NOT reproduce the failure: the diagnosis is in doubt"
            )
        )
        details.append(
            "candidate "
            + (
                "healthy over the stability window"
                if candidate.healthy
                else "unhealthy: " + "; ".join(candidate.reasons)
            )
        )
        return models.Verification(
            passed=candidate.healthy and reproduced,
            baselineReproduced=reproduced,
            candidateHealthy=candidate.healthy,
            shadowNamespace=candidate_ns,
            details=details,
        )

    async def _namespace(self, name: str, incident: models.Incident, now: datetime.datetime) -> None:
        expires = int(now.timestamp() + self.settings.shadow_ttl_seconds)
        await self.cluster.create_namespace(
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        LABEL_SHADOW: "true",
                        LABEL_INCIDENT: f"{incident.namespace}.{incident.name}"[:63],
                        LABEL_EXPIRES: str(expires),
                        "app.kubernetes.io/managed-by": "aegis",
                    },
                }
            }
        )
        if self.metrics is not None:
            self.metrics.shadow_opened(name)
        await self.cluster.create(
            "ResourceQuota",
            name,
            {
                "metadata": {"name": "aegis-shadow", "namespace": name},
                "spec": {
                    "hard": {
                        "pods": "10",
                        "services": "5",
                        "services.loadbalancers": "0",
                        "services.nodeports": "0",
                        "persistentvolumeclaims": "5",
                    }
                },
            },
        )
        if self.settings.shadow_network_isolation:
            await self.cluster.create(
                "NetworkPolicy",
                name,
                {
                    "metadata": {"name": "aegis-shadow-deny-all", "namespace": name},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                },
            )

    async def _copy(
        self,
        source_ns: str,
        ns: str,
        objects: dict[str, dict[str, Any]],
        details: list[str],
        patches: list[Any] | None = None,
    ) -> None:
        objects = health.with_kinds(objects)
        # What the workloads use now, and what the candidate's patches will make them use (a rollback may
        # return to a ConfigMap, a Secret, pull credentials or a ServiceAccount the current revision does not use).
        used = [o for o in objects.values() if o.get("kind") in health.WORKLOADS] + list(patches or [])
        # Registry credentials must be real to pull; a custom ServiceAccount must exist for pods to be created.
        pull_secrets, accounts = _pod_identity(used)
        for name in sorted(accounts):
            await self.cluster.create("ServiceAccount", ns, {"metadata": {"name": name, "namespace": ns}})
        pulled = 0
        for name in sorted(pull_secrets):
            live = await self.cluster.get("Secret", source_ns, name)
            if live is not None:  # a missing one stays missing: the kubelet warns, as in production
                await self.cluster.create("Secret", ns, _clean({**live, "kind": "Secret"}, ns))
                pulled += 1
        config_maps, secrets, _ = _references(used)
        copied = {"ConfigMap": 0, "Secret": 0}
        for name in sorted(config_maps):
            live = await self.cluster.get("ConfigMap", source_ns, name)
            if live is not None:  # a missing ConfigMap stays missing: that may be the failure to reproduce
                await self.cluster.create("ConfigMap", ns, _clean({**live, "kind": "ConfigMap"}, ns))
                copied["ConfigMap"] += 1
        for name in sorted(secrets - pull_secrets):
            live = await self.cluster.get("Secret", source_ns, name)
            if live is None:  # a missing Secret stays missing too
                continue
            mirror = _clean({**live, "kind": "Secret"}, ns)
            if not self.settings.shadow_copy_secrets:
                mirror["data"] = placeholder_data(live)
                mirror.pop("stringData", None)
            await self.cluster.create("Secret", ns, mirror)
            copied["Secret"] += 1
        objects = health.with_kinds(objects)
        order = {"ResourceQuota": -1, "PersistentVolumeClaim": 0, "Service": 1}
        for _, obj in sorted(objects.items(), key=lambda item: order.get(str(item[1].get("kind", "")), 2)):
            body = quota_room(obj, ns) if obj.get("kind") == "ResourceQuota" else _clean(obj, ns)
            await self.cluster.create(str(obj["kind"]), ns, body)
        details.append(
            f"{ns}: copied {len(objects)} object(s), {copied['ConfigMap']} ConfigMap(s), {copied['Secret']} "
            f"Secret(s){'' if self.settings.shadow_copy_secrets else ' with placeholder values'}, "
            f"{pulled} image pull Secret(s), {len(accounts)} ServiceAccount(s)"
        )


async def apply_to(
    cluster: client.Cluster, namespace: str, result: models.ActionResult, *, dry_run: bool = False
) -> dict[str, Any] | None:
    """Apply one rendered action in ``namespace`` — the same code for shadow and production."""
    target = result.action.target
    if result.patch_type == "recreate":
        manifest = copy.deepcopy(result.patch)
        manifest["metadata"]["namespace"] = namespace
        if dry_run:  # the old claim still exists: validate the new one under another name
            manifest["metadata"]["name"] = f"{target.name[:40]}-aegis-dry-run"
        else:
            await cluster.delete(target.kind, namespace, target.name)
            for _ in range(600):  # wait (up to a minute) until the old claim is gone before creating its replacement
                if await cluster.get(target.kind, namespace, target.name) is None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise client.ClusterError(f"{target} is still terminating; its replacement was not created")
        return await cluster.create(target.kind, namespace, manifest, dry_run=dry_run)
    return await cluster.patch(target.kind, namespace, target.name, result.patch, result.patch_type, dry_run=dry_run)


async def undo(cluster: client.Cluster, namespace: str, result: models.ActionResult) -> dict[str, Any] | None:
    """Restore the pre-image of exactly the fields ``result`` changed."""
    pre = result.pre_image or {}
    if result.patch_type == "recreate":
        live = await cluster.get(result.action.target.kind, namespace, result.action.target.name)
        if ((live or {}).get("status") or {}).get("phase") == "Bound":
            raise client.ClusterError(f"{result.action.target} is Bound now: recreating it would lose its data")
    restore = models.ActionResult(action=result.action, patch=pre.get("undo"), patchType=result.patch_type)
    return await apply_to(cluster, namespace, restore)


def related_objects(incident: models.Incident, plan: models.Plan) -> list[str]:
    """The "Kind/name" keys a plan touches besides the incident's target."""
    return [
        f"{a.target.kind}/{a.target.name}"
        for a in plan.actions
        if (a.target.kind, a.target.name) != (incident.target.kind, incident.target.name)
    ]
