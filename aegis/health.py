"""Health observation: whether workloads, their Services and claims are healthy, by fixed rules.

Rolled out (as ``kubectl rollout status`` judges it), every pod of the current
revision Ready for a stability window, no restarts, no new Warning events, Service
endpoints present, claims bound — never criteria an LLM chose. Only the current
revision's pods are judged: pods that are terminating or belong to an older
revision are going away.

``Observer.observe`` watches until the verdict is settled either way or the time
is up. Used by ``aegis.shadow.ShadowVerifier`` (baseline and candidate copies) and
by the production confirm stage (``graph.nodes.confirm``, with production's
longer window).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from typing import Any

from aegis import config
from aegis.kube import client

logger = logging.getLogger("aegis.health")

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
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
    """A verdict: healthy, or the reasons it is not (each a short line for the Incident's verification)."""

    healthy: bool
    reasons: tuple[str, ...]


Counts = dict[str, int]


class Observer:
    """Judges health in one namespace through the cluster's API, with the settings' windows and deadlines."""

    def __init__(self, cluster: client.Cluster, settings: config.Settings) -> None:
        self.cluster = cluster
        self.settings = settings

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
            if kind in WORKLOADS:
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
