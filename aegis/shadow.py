"""Shadow verification: reproduce the failure and prove the fix in isolated namespaces before production.

For one plan, two namespaces are created (``aegis-shadow-<id>-b`` and ``-c``), each
labelled with its incident and an expiry, capped by a ResourceQuota and isolated
by a default-deny NetworkPolicy (configurable). Both receive copies of what the
workload needs — referenced ConfigMaps, Secrets mirrored as keys with placeholder
values (unless copying is enabled), the Services and claims involved — and the
workload itself, names and labels unchanged. The **baseline** stays as production
is now and must reproduce the failure; the **candidate** gets the plan through the
very patch that production would get. Health is judged by fixed rules — rolled
out, every pod Ready for a stability window, no restarts, no new Warning events,
Service endpoints present — never by criteria an LLM chose. The namespaces are
deleted in every case; the janitor removes any left behind by a crash.

Called by the verify stage of the workflow.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import hashlib
import logging
import secrets
from typing import Any

from aegis import config, models, quantity
from aegis.kube import client

logger = logging.getLogger("aegis.shadow")

LABEL_SHADOW = "aegis.dev/shadow"
LABEL_INCIDENT = "aegis.dev/incident"
LABEL_EXPIRES = "aegis.dev/expires"  # unix seconds
PLACEHOLDER = "aegis-shadow-placeholder"
_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
_BATCH = ("Job", "CronJob")
_FAILURE_SIGNS = (
    "BackOff",
    "ErrImagePull",
    "ConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
    "no ready endpoints",
    "is not bound",
    "restarted",
    "Warning",
    "failed (",
    "cannot create pods",
)


@dataclasses.dataclass(frozen=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...]


def expired(namespace: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether a shadow namespace is past its expiry label (unlabelled or unreadable: expired)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_SHADOW) != "true":
        return False
    try:
        return now.timestamp() >= int(labels.get(LABEL_EXPIRES, "0"))
    except ValueError:
        return True


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
    if out.get("kind") in _WORKLOADS and "replicas" in spec:
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


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _references(obj: Any) -> tuple[set[str], set[str], set[str]]:
    """ConfigMaps, Secrets and claims named anywhere in a workload, a pod template or a patch."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    claims: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if isinstance(value, dict):
                if key in ("configMap", "configMapRef", "configMapKeyRef") and value.get("name"):
                    config_maps.add(value["name"])
                elif key in ("secretRef", "secretKeyRef") and value.get("name"):
                    secrets.add(value["name"])
                elif key == "secret" and value.get("secretName"):
                    secrets.add(value["secretName"])
                elif key == "persistentVolumeClaim" and value.get("claimName"):
                    claims.add(value["claimName"])
            walk(value)

    walk(obj)
    return config_maps, secrets, claims


def _pod_identity(workloads: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """imagePullSecrets and non-default ServiceAccounts the workloads' pods use."""
    pull: set[str] = set()
    accounts: set[str] = set()
    for workload in workloads:
        spec = _pod_spec(workload)
        pull |= {ref.get("name") for ref in spec.get("imagePullSecrets") or [] if ref.get("name")}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount")
        if account and account != "default":
            accounts.add(account)
    return pull, accounts


class ShadowVerifier:
    def __init__(self, cluster: client.Cluster, settings: config.Settings) -> None:
        self.cluster = cluster
        self.settings = settings

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
        objects = with_kinds(objects)
        if any(obj.get("kind") == "DaemonSet" for obj in objects.values()):
            # A copy would run on every real node, with the original's host access: not a safe rehearsal.
            return models.Verification(
                passed=False,
                details=["a DaemonSet cannot be rehearsed safely in a shadow namespace; a human must verify this fix"],
            )
        batch = sorted({str(obj.get("kind")) for obj in objects.values() if obj.get("kind") in _BATCH})
        if batch:  # a copy would run the job (and its side effects) again; health has no rollout to judge
            return models.Verification(
                passed=False,
                details=[
                    f"a {'/'.join(batch)} cannot be rehearsed in a shadow namespace; a human must verify this fix"
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
                self.observe(baseline_ns, objects, expect_healthy=False),
                self.observe(candidate_ns, objects, expect_healthy=True),
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
                except client.ClusterError as exc:  # the janitor removes it after its expiry
                    logger.warning("could not delete shadow namespace %s: %s", ns, exc)
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
        objects = with_kinds(objects)
        # Registry credentials must be real to pull; a custom ServiceAccount must exist for pods to be created.
        pull_secrets, accounts = _pod_identity([o for o in objects.values() if o.get("kind") in _WORKLOADS])
        for name in sorted(accounts):
            await self.cluster.create("ServiceAccount", ns, {"metadata": {"name": name, "namespace": ns}})
        for name in sorted(pull_secrets):
            live = await self.cluster.get("Secret", source_ns, name)
            if live is not None:
                await self.cluster.create("Secret", ns, _clean({**live, "kind": "Secret"}, ns))
        # What the workloads use now, and what the candidate's patches will make them use (a rollback may
        # return to a ConfigMap the current revision does not reference).
        config_maps, secrets, _ = _references(
            [o for o in objects.values() if o.get("kind") in _WORKLOADS] + list(patches or [])
        )
        for name in sorted(config_maps):
            live = await self.cluster.get("ConfigMap", source_ns, name)
            if live is not None:  # a missing ConfigMap stays missing: that may be the failure to reproduce
                await self.cluster.create("ConfigMap", ns, _clean({**live, "kind": "ConfigMap"}, ns))
        for name in sorted(secrets - pull_secrets):
            live = await self.cluster.get("Secret", source_ns, name)
            if live is None:
                continue
            mirror = _clean({**live, "kind": "Secret"}, ns)
            if not self.settings.shadow_copy_secrets:
                mirror["data"] = {
                    key: base64.b64encode(PLACEHOLDER.encode()).decode() for key in live.get("data") or {}
                }
                mirror.pop("stringData", None)
            await self.cluster.create("Secret", ns, mirror)
        objects = with_kinds(objects)
        order = {"ResourceQuota": -1, "PersistentVolumeClaim": 0, "Service": 1}
        for _, obj in sorted(objects.items(), key=lambda item: order.get(str(item[1].get("kind", "")), 2)):
            body = quota_room(obj, ns) if obj.get("kind") == "ResourceQuota" else _clean(obj, ns)
            await self.cluster.create(str(obj["kind"]), ns, body)
        details.append(
            f"{ns}: copied {len(objects)} object(s), {len(config_maps)} ConfigMap(s), {len(secrets)} "
            f"Secret(s){'' if self.settings.shadow_copy_secrets else ' with placeholder values'}"
        )

    async def observe(
        self,
        ns: str,
        objects: dict[str, dict[str, Any]],
        *,
        expect_healthy: bool,
        limit: float | None = None,
        window: float | None = None,
    ) -> Health:
        """Judge health by the fixed rules until it is settled either way or the time is up (also used on the
        real workload after an apply, with production's longer window).

        Healthy means: every rule holds, continuously, for the stability window, with no restart and no new
        Warning event during it. A baseline (expected to fail) is settled as soon as it has been unhealthy —
        including restarts and new warnings, as with a liveness probe that kills and restarts — for a
        window's worth of observations. Only the current revision's pods are judged: pods that are
        terminating (their grace period) or belong to an older revision are going away.
        """
        window = max(self.settings.shadow_stability_seconds if window is None else window, 1.0)
        deadline = asyncio.get_running_loop().time() + (limit or self.settings.shadow_timeout_seconds)
        stable_since: float | None = None
        bad_time = 0.0
        previous: tuple[Counts, Counts] | None = None
        previous_at: float | None = None
        last = Health(False, ("not observed yet",))
        while True:
            try:
                health, restarts, warnings = await self._health(ns, objects)
            except client.ClusterError as exc:  # one failed read is no verdict: look again
                logger.info("health read in %s failed, retrying: %s", ns, exc)
                if asyncio.get_running_loop().time() >= deadline:
                    return Health(False, (f"health could not be read: {exc}",))
                await asyncio.sleep(1.0)
                continue
            now = asyncio.get_running_loop().time()
            restarted = previous is not None and grew(restarts, previous[0])
            warned = previous is not None and grew(warnings, previous[1])
            # A real failure signal, not merely a slow start: an error state, a restart, a new Warning.
            signal = restarted or warned or any(marker in r for r in health.reasons for marker in _FAILURE_SIGNS)
            if health.healthy:
                if restarted:
                    health = Health(False, ("containers restarted",))
                elif warned:
                    health = Health(False, ("new Warning events",))
            if health.healthy:
                stable_since = now if stable_since is None else stable_since
                if now - stable_since >= window:
                    return health
            else:
                stable_since = None
                if previous_at is not None and signal:
                    bad_time += now - previous_at
                if not expect_healthy and bad_time >= window:
                    return health
            previous, previous_at, last = (restarts, warnings), now, health
            if now >= deadline:
                if last.healthy:  # healthy at the end, but not for a whole window
                    return Health(False, ("not stable long enough before the deadline",))
                return last
            await asyncio.sleep(0.5)

    async def _health(self, ns: str, objects: dict[str, dict[str, Any]]) -> tuple[Health, Counts, Counts]:
        """(health, restart count per pod container, count per Warning event) of these objects and the pods of
        their current revision — not of other workloads that share labels or a name prefix in the same
        namespace, and not of pods that are terminating or belong to an older revision."""
        reasons: list[str] = []
        restarts: Counts = {}
        uids: set[str] = set()
        for obj in with_kinds(objects).values():
            kind, name = str(obj.get("kind")), obj["metadata"]["name"]
            if kind in _WORKLOADS:
                live = await self.cluster.get(kind, ns, name)
                if live is None:
                    reasons.append(f"{kind} {name} is missing")
                    continue
                live = {**live, "kind": live.get("kind") or kind}
                reasons += rollout_problems(live)
                selector = (live.get("spec") or {}).get("selector")
                owners = {live["metadata"].get("uid")}
                judged = set(owners)  # whose pods are judged: the workload's current revision
                if kind == "Deployment":
                    replica_sets = [
                        rs for rs in await self.cluster.list("ReplicaSet", ns, selector=selector) if _owned(rs, owners)
                    ]
                    owners |= {rs["metadata"].get("uid") for rs in replica_sets}
                    newest = current_replica_set(live, replica_sets)
                    judged = {newest["metadata"].get("uid")} if newest else owners
                    reasons += _replica_failures(newest)
                uids |= judged
                for pod in await self.cluster.list("Pod", ns, selector=selector):
                    if not _owned(pod, owners):
                        continue  # a canary or another app that shares the labels
                    if not current_pod(live, pod, judged):
                        continue  # terminating, or an older revision's: rollout_problems counts those
                    uids.add(pod["metadata"].get("uid"))
                    reasons += _pod_reasons(pod, restarts)
            elif kind == "Service" and (obj.get("spec") or {}).get("selector"):
                endpoints = await self.cluster.get("Endpoints", ns, name)
                ready = sum(len(s.get("addresses") or []) for s in (endpoints or {}).get("subsets") or [])
                if not ready:
                    reasons.append(f"Service {name} has no ready endpoints")
            elif kind == "PersistentVolumeClaim":
                live = await self.cluster.get(kind, ns, name)
                uids.add(((live or {}).get("metadata") or {}).get("uid"))
                if ((live or {}).get("status") or {}).get("phase") != "Bound":
                    reasons.append(f"claim {name} is not bound")
        warnings: Counts = {}
        for e in await self.cluster.list("Event", ns):
            involved = (e.get("involvedObject") or e.get("regarding") or {}).get("uid")
            if e.get("type") == "Warning" and involved in uids:  # not about terminating or vanished pods
                meta = e.get("metadata") or {}
                key = str(meta.get("uid") or meta.get("name") or f"{involved}/{e.get('reason')}/{e.get('message')}")
                warnings[key] = warnings.get(key, 0) + int(e.get("count") or (e.get("series") or {}).get("count") or 1)
        return Health(not reasons, tuple(dict.fromkeys(reasons))), restarts, warnings


Counts = dict[str, int]


def grew(now: Counts, before: Counts) -> bool:
    """Whether any count rose (a restart, a new or repeated Warning) — a pod or event that went away is no news."""
    return any(value > before.get(key, 0) for key, value in now.items())


def with_kinds(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The objects, each with its ``kind`` (from its "Kind/name" key when the object lacks it: listed objects
    from a real API server carry no kind)."""
    return {key: obj if obj.get("kind") else {"kind": key.split("/", 1)[0], **obj} for key, obj in objects.items()}


def _pod_reasons(pod: dict[str, Any], restarts: Counts) -> list[str]:
    """Why one pod of the current revision is not healthy; its restart counts go into ``restarts``."""
    reasons: list[str] = []
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for cs in status.get("initContainerStatuses") or []:
        restarts[f"{name}/init:{cs.get('name')}"] = int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        failed = state.get("terminated") or {}
        if waiting and waiting != "PodInitializing":
            reasons.append(f"pod {name} init container {cs.get('name')} failed ({waiting})")
        elif failed and int(failed.get("exitCode") or 0) != 0:
            reasons.append(f"pod {name} init container {cs.get('name')} failed ({failed.get('reason') or 'Error'})")
    for cs in status.get("containerStatuses") or []:
        restarts[f"{name}/{cs.get('name')}"] = int(cs.get("restartCount") or 0)
        if not cs.get("ready"):
            waiting = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            reasons.append(f"pod {name} container {cs['name']} not ready" + (f" ({waiting})" if waiting else ""))
    return reasons


def _replica_failures(rs: dict[str, Any] | None) -> list[str]:
    """Why the current ReplicaSet cannot create its pods (its ReplicaFailure condition: a quota, a policy)."""
    return [
        f"ReplicaSet {rs['metadata'].get('name')} cannot create pods ({c.get('reason')}): {c.get('message')}"[:500]
        for c in ((rs or {}).get("status") or {}).get("conditions") or []
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
    ]


def _owned(obj: dict[str, Any], owners: set[Any]) -> bool:
    return any(ref.get("uid") in owners for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _revision(obj: dict[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision") or "")


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template or {})
    ((clean.get("metadata") or {}).get("labels") or {}).pop("pod-template-hash", None)
    return clean


def current_replica_set(deployment: dict[str, Any], replica_sets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of a Deployment's current revision: the one with the Deployment's revision annotation,
    else the one with its pod template (as the deployment controller decides), else the newest revision."""
    if not replica_sets:
        return None
    revision = _revision(deployment)
    by_revision = [rs for rs in replica_sets if revision and _revision(rs) == revision]
    if by_revision:
        return by_revision[0]
    template = _without_hash((deployment.get("spec") or {}).get("template") or {})
    same = [rs for rs in replica_sets if _without_hash((rs.get("spec") or {}).get("template") or {}) == template]
    if same:
        return same[0]
    return max(replica_sets, key=lambda rs: int(_revision(rs) or 0))


def current_pod(workload: dict[str, Any], pod: dict[str, Any], judged: set[Any]) -> bool:
    """Whether a workload's pod counts for its health: not terminating, owned by the current revision (the
    Deployment's newest ReplicaSet in ``judged``; a StatefulSet's ``status.updateRevision``)."""
    if client.terminating(pod):
        return False
    if not _owned(pod, judged):
        return False
    if workload.get("kind") == "StatefulSet":
        revision = (workload.get("status") or {}).get("updateRevision")
        label = ((pod.get("metadata") or {}).get("labels") or {}).get("controller-revision-hash")
        if revision and label and label != revision:
            return False
    return True


def rollout_problems(workload: dict[str, Any]) -> list[str]:
    """Why a Deployment/StatefulSet/DaemonSet is not fully rolled out and Ready (empty when it is).

    Judged as ``kubectl rollout status`` does: the controller has seen the latest spec, every replica is
    updated, ready and (Deployments) available, and no replica of an older revision is left.
    """
    kind, name = workload.get("kind", "Deployment"), workload["metadata"]["name"]
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(workload["metadata"].get("generation") or 1):
        return [f"{kind} {name}: the controller has not seen the latest spec"]
    if kind == "DaemonSet":
        wanted = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        return [] if wanted and ready == wanted else [f"DaemonSet {name}: {ready}/{wanted} ready"]
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or (ready if kind == "StatefulSet" else 0))
    total = int(status.get("replicas") or 0)
    if ready < wanted or updated < wanted or total > wanted:
        return [f"{kind} {name}: {ready}/{wanted} ready, {updated} updated, {total} total"]
    if kind == "Deployment" and int(status.get("availableReplicas") or 0) < wanted:
        return [f"{kind} {name}: {int(status.get('availableReplicas') or 0)}/{wanted} available"]
    if kind == "StatefulSet":
        current, update = status.get("currentRevision"), status.get("updateRevision")
        rolling = ((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"
        if rolling and current and update and current != update:
            return [f"StatefulSet {name}: rolling update to {update} not finished (current {current})"]
    return []


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
