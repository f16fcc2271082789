"""Emulated workload controllers: Deployment, ReplicaSet and StatefulSet, as kube-controller-manager runs them.

A Deployment rolls out a new ReplicaSet per template (pod-template-hash, revision
annotations, so a rollback has history) with the RollingUpdate surge/unavailable
rules and the Available/Progressing conditions (ProgressDeadlineExceeded after the
deadline, ReplicaFailure copied from its new ReplicaSet); a ReplicaSet keeps its
count of live pods — a Terminating pod no longer counts and is replaced at once — and
records ``FailedCreate`` (Warning event and ``ReplicaFailure`` condition) when the API
refuses a pod, e.g. over a ResourceQuota; a StatefulSet creates ordered pods and their
claims, waits for a Terminating pod to be gone before creating its name again, records
``FailedCreate`` when a pod is refused (e.g. its ServiceAccount is missing) and, with the
default ``OrderedReady`` policy, does nothing more while one of its pods is not Running and
Ready — not even replace that pod after a template fix (kubernetes#67250).
Each is an ordinary API client over the shared informers of ``aegis.sim.controllers``.
Run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import copy
from typing import Any

from aegis.sim import client, events
from aegis.sim.controllers import (
    Controller,
    _ordinal,
    _prune,
    alive,
    owned_by,
    owner_ref,
    pod_ready,
    resolve_intstr,
    template_hash,
)


class DeploymentController(Controller):
    component = "deployment-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.progress: dict[str, tuple[float, tuple[int, int, str]]] = {}  # uid -> (since, progress marker)

    async def reconcile(self) -> None:
        _prune(self.progress, {d["metadata"]["uid"] for d in self.inf["Deployment"].items()})
        await self.each("Deployment", self._sync)

    async def _sync(self, deploy: dict[str, Any]) -> None:
        meta, spec = deploy["metadata"], deploy["spec"]
        ns = meta["namespace"]
        replica_sets = [rs for rs in self.inf["ReplicaSet"].items(ns) if owned_by(rs, deploy) and alive(rs)]
        wanted_hash = template_hash(spec["template"])
        if spec.get("paused"):  # a paused Deployment only scales what it has; no new rollout
            await self._paused(deploy, replica_sets)
            return
        new_rs = next(
            (rs for rs in replica_sets if rs["metadata"]["labels"].get("pod-template-hash") == wanted_hash), None
        )
        revisions = [
            int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
            for rs in replica_sets
        ]
        max_revision = max(revisions, default=0)
        if new_rs is None:
            new_rs = await self._create_rs(deploy, wanted_hash, max_revision + 1)
            replica_sets.append(new_rs)
        else:
            revision = int((new_rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
            if revision < max_revision:  # a rollback to an older template: it becomes the newest revision
                new_rs = await self.api.patch(
                    "ReplicaSet",
                    ns,
                    new_rs["metadata"]["name"],
                    {"metadata": {"annotations": {"deployment.kubernetes.io/revision": str(max_revision + 1)}}},
                )
        old = [rs for rs in replica_sets if rs["metadata"]["name"] != new_rs["metadata"]["name"]]
        replicas = int(spec.get("replicas", 1))
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            await self._recreate(deploy, new_rs, old, replicas)
        else:
            await self._rolling(deploy, new_rs, old, replicas, strategy.get("rollingUpdate") or {})
        await self._cleanup(deploy, old)
        await self._status(deploy, new_rs, old, replicas)
        if int((deploy["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")) != int(
            (new_rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")
        ):
            await self.api.patch(
                "Deployment",
                ns,
                meta["name"],
                {
                    "metadata": {
                        "annotations": {
                            "deployment.kubernetes.io/revision": new_rs["metadata"]["annotations"][
                                "deployment.kubernetes.io/revision"
                            ]
                        }
                    }
                },
            )

    async def _paused(self, deploy: dict[str, Any], replica_sets: list[dict[str, Any]]) -> None:
        if not replica_sets:
            return
        newest = max(
            replica_sets,
            key=lambda rs: int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")),
        )
        others = [rs for rs in replica_sets if rs is not newest]
        if not others and newest["spec"].get("replicas", 0) != int(deploy["spec"].get("replicas", 1)):
            await self._scale(deploy, newest, int(deploy["spec"].get("replicas", 1)))
        await self._status(deploy, newest, others, int(deploy["spec"].get("replicas", 1)))

    async def _create_rs(self, deploy: dict[str, Any], pod_hash: str, revision: int) -> dict[str, Any]:
        meta = deploy["metadata"]
        template = copy.deepcopy(deploy["spec"]["template"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": pod_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(deploy["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    "deployment.kubernetes.io/revision": str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(deploy["spec"].get("replicas", 1)),
                },
                "ownerReferences": [owner_ref(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        try:
            return await self.api.create(body)
        except client.ApiError as exc:
            if exc.status != 409:
                raise
            existing = await self.api.get("ReplicaSet", meta["namespace"], body["metadata"]["name"])
            assert existing is not None
            return existing

    async def _scale(self, deploy: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        current = rs["spec"].get("replicas", 0)
        if current == replicas:
            return rs
        updated = await self.api.patch(
            "ReplicaSet",
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            {
                "spec": {"replicas": replicas},
                "metadata": {
                    "annotations": {"deployment.kubernetes.io/desired-replicas": str(deploy["spec"].get("replicas", 1))}
                },
            },
        )
        direction = "up" if replicas > current else "down"
        await self.events.record(
            deploy,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} from {current} to {replicas}",
        )
        return updated

    async def _recreate(
        self, deploy: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]], replicas: int
    ) -> None:
        if any(rs["spec"].get("replicas", 0) for rs in old):
            for rs in old:
                await self._scale(deploy, rs, 0)
            return
        ns = deploy["metadata"]["namespace"]
        if any(owned_by(p, rs) for rs in old for p in self.inf["Pod"].items(ns)):
            return  # wait for the old pods to go
        await self._scale(deploy, new_rs, replicas)

    async def _rolling(
        self,
        deploy: dict[str, Any],
        new_rs: dict[str, Any],
        old: list[dict[str, Any]],
        replicas: int,
        rolling: dict[str, Any],
    ) -> None:
        surge = resolve_intstr(rolling.get("maxSurge", "25%"), replicas, True)
        unavailable = resolve_intstr(rolling.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_count = new_rs["spec"].get("replicas", 0)
        total = new_count + sum(rs["spec"].get("replicas", 0) for rs in old)
        if new_count > replicas:
            new_rs = await self._scale(deploy, new_rs, replicas)
        elif new_count < replicas:
            room = replicas + surge - total
            if room > 0:
                new_rs = await self._scale(deploy, new_rs, min(replicas, new_count + room))
        if not old:
            return
        min_available = replicas - unavailable
        ready_new = self._ready(new_rs)
        all_ready = ready_new + sum(self._ready(rs) for rs in old)
        total = new_rs["spec"].get("replicas", 0) + sum(rs["spec"].get("replicas", 0) for rs in old)
        # First drop old replicas that are not ready anyway, then healthy ones while availability allows.
        budget = total - min_available - (new_rs["spec"].get("replicas", 0) - ready_new)
        for rs in old:
            unhealthy = rs["spec"].get("replicas", 0) - self._ready(rs)
            cut = min(unhealthy, max(budget, 0))
            if cut > 0:
                budget -= cut
                await self._scale(deploy, rs, rs["spec"]["replicas"] - cut)
                rs["spec"]["replicas"] -= cut
        spare = all_ready - min_available
        for rs in old:
            cut = min(rs["spec"].get("replicas", 0), max(spare, 0))
            if cut > 0:
                spare -= cut
                await self._scale(deploy, rs, rs["spec"]["replicas"] - cut)

    def _ready(self, rs: dict[str, Any]) -> int:
        ns = rs["metadata"]["namespace"]
        return sum(1 for p in self.inf["Pod"].items(ns) if owned_by(p, rs) and alive(p) and pod_ready(p))

    async def _cleanup(self, deploy: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = int(deploy["spec"].get("revisionHistoryLimit", 10))
        idle = [rs for rs in old if not rs["spec"].get("replicas") and not (rs.get("status") or {}).get("replicas")]
        idle.sort(
            key=lambda rs: int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
        )
        for rs in idle[: max(len(idle) - limit, 0)]:
            await self.api.delete("ReplicaSet", rs["metadata"]["namespace"], rs["metadata"]["name"])

    async def _status(
        self, deploy: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]], replicas: int
    ) -> None:
        ns = deploy["metadata"]["namespace"]
        all_rs = [new_rs, *old]
        pods = [p for p in self.inf["Pod"].items(ns) if alive(p) and any(owned_by(p, rs) for rs in all_rs)]
        ready = sum(1 for p in pods if pod_ready(p))
        updated = sum(1 for p in pods if owned_by(p, new_rs))
        updated_ready = sum(1 for p in pods if owned_by(p, new_rs) and pod_ready(p))
        strategy = deploy["spec"].get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        unavailable_allowed = (
            0
            if strategy.get("type") == "Recreate"
            else resolve_intstr(rolling.get("maxUnavailable", "25%"), replicas, False)
        )
        now_sim = self.clock.now()
        uid = deploy["metadata"]["uid"]
        marker = (updated, updated_ready, new_rs["metadata"]["name"])
        since, last_marker = self.progress.get(uid, (now_sim, marker))
        if last_marker != marker:
            since = now_sim
        self.progress[uid] = (since, marker)
        rs_name = new_rs["metadata"]["name"]
        complete = updated_ready >= replicas and len(pods) == replicas
        previous_progress = next(
            (c for c in (deploy.get("status") or {}).get("conditions") or [] if c.get("type") == "Progressing"), {}
        )
        # A rollout that completed is not re-judged against the deadline (scaling later is not progress).
        settled = previous_progress.get("reason") == "NewReplicaSetAvailable" and updated >= replicas
        deadline = float(deploy["spec"].get("progressDeadlineSeconds", 600))
        if complete:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
            }
        elif settled:
            progressing = {k: previous_progress[k] for k in ("type", "status", "reason", "message")}
        elif deploy["spec"].get("paused"):
            progressing = {
                "type": "Progressing",
                "status": "Unknown",
                "reason": "DeploymentPaused",
                "message": "Deployment is paused",
            }
        elif now_sim - since > deadline:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{rs_name}" has timed out progressing.',
            }
        else:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": f'ReplicaSet "{rs_name}" is progressing.',
            }
        if ready >= replicas - unavailable_allowed:
            available = {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        else:
            available = {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            }
        old_conditions = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}
        conditions = []
        failed = next(
            (c for c in (new_rs.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"), None
        )
        wanted = [available, progressing]
        if failed is not None:  # the real controller copies its new ReplicaSet's ReplicaFailure
            wanted.append({k: failed[k] for k in ("type", "status", "reason", "message")})
        for condition in wanted:
            previous = old_conditions.get(condition["type"])
            # ReplicaFailure keeps its first message while status and reason stay (SetDeploymentCondition).
            compared = (
                ("status", "reason") if condition["type"] == "ReplicaFailure" else ("status", "reason", "message")
            )
            if previous and all(previous.get(k) == condition[k] for k in compared):
                conditions.append(previous)
            else:
                stamp = events._now()
                same_status = previous and previous.get("status") == condition["status"]
                transition = previous.get("lastTransitionTime", stamp) if same_status else stamp
                conditions.append({**condition, "lastUpdateTime": stamp, "lastTransitionTime": transition})
        status = {  # zero counts are omitted, as the API shows them
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": len(pods) or None,
            "updatedReplicas": updated or None,
            "readyReplicas": ready or None,
            "availableReplicas": ready or None,
            "unavailableReplicas": max(replicas - ready, 0) or None,
            "conditions": conditions,
        }
        current = {k: (deploy.get("status") or {}).get(k) for k in status}
        if current != status:
            await self.api.status("Deployment", ns, deploy["metadata"]["name"], status)


class ReplicaSetController(Controller):
    component = "replicaset-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.expect: dict[str, tuple[int, float]] = {}  # rs uid -> (pods expected, until sim time)
        self.backoff: dict[str, tuple[float, float]] = {}  # rs uid -> (next try, delay) after a refused create

    async def reconcile(self) -> None:
        uids = {rs["metadata"]["uid"] for rs in self.inf["ReplicaSet"].items()}
        _prune(self.expect, uids)
        _prune(self.backoff, uids)
        await self.each("ReplicaSet", self._sync)

    async def _sync(self, rs: dict[str, Any]) -> None:
        ns = rs["metadata"]["namespace"]
        pods = [p for p in self.inf["Pod"].items(ns) if owned_by(p, rs) and alive(p)]
        uid = rs["metadata"]["uid"]
        expected, until = self.expect.get(uid, (-1, 0.0))
        if expected >= 0 and len(pods) != expected and self.clock.now() < until:
            return  # our last creations/deletions are not in the cache yet
        want = int(rs["spec"].get("replicas", 0))
        failure: str | None = None
        next_try, delay = self.backoff.get(uid, (0.0, 0.0))
        if len(pods) < want and self.clock.now() < next_try:
            return  # the work queue's rate limiter after a refused create
        if len(pods) < want:
            created = 0
            for _ in range(want - len(pods)):
                try:
                    pod = await self._create_pod(rs)
                except client.ApiError as exc:  # e.g. 403 over a ResourceQuota: the real controller's FailedCreate
                    failure = str(exc).removeprefix(f"HTTP {exc.status}: ")
                    await self.events.record(rs, "Warning", "FailedCreate", f"Error creating: {failure}")
                    break
                created += 1
                await self.events.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.expect[uid] = (len(pods) + created, self.clock.now() + 20)
            if failure is None:
                self.backoff.pop(uid, None)
            else:
                delay = min(max(delay * 2, 1.0), 300.0)
                self.backoff[uid] = (self.clock.now() + delay, delay)
        elif len(pods) > want:
            pods.sort(
                key=lambda p: (
                    pod_ready(p),
                    bool(p["spec"].get("nodeName")),
                    p["metadata"].get("creationTimestamp", ""),
                )
            )
            for pod in pods[: len(pods) - want]:
                await self.api.delete("Pod", ns, pod["metadata"]["name"])
                await self.events.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
            self.expect[uid] = (want, self.clock.now() + 20)
        ready = sum(1 for p in pods if pod_ready(p))
        status: dict[str, Any] = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        conditions = list((rs.get("status") or {}).get("conditions") or [])
        previous = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
        if failure is not None and previous is None:  # set once: the first refusal's message stays, as for real
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": failure,
                    "lastTransitionTime": events._now(),
                }
            )
        elif failure is None and previous is not None and len(pods) >= want:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        if {k: (rs.get("status") or {}).get(k, 0) for k in status} != status or conditions != list(
            (rs.get("status") or {}).get("conditions") or []
        ):
            await self.api.status(
                "ReplicaSet", ns, rs["metadata"]["name"], {**status, "conditions": conditions or None}
            )

    async def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(rs["spec"]["template"])
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{rs['metadata']['name']}-",
                "namespace": rs["metadata"]["namespace"],
                "labels": (template.get("metadata") or {}).get("labels") or {},
                "annotations": (template.get("metadata") or {}).get("annotations") or {},
                "ownerReferences": [owner_ref(rs)],
            },
            "spec": template.get("spec") or {},
        }
        return await self.api.create(body)


class StatefulSetController(Controller):
    component = "statefulset-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.backoff: dict[str, tuple[float, float]] = {}  # uid -> (next try, delay) after a refused create

    async def reconcile(self) -> None:
        await self.each("StatefulSet", self._sync)

    async def _sync(self, sts: dict[str, Any]) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        revision = f"{name}-{template_hash(spec['template'])}"
        replicas = int(spec.get("replicas", 1))
        pods = {p["metadata"]["name"]: p for p in self.inf["Pod"].items(ns) if owned_by(p, sts)}
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        strategy = spec.get("updateStrategy") or {}
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        # Scale up in ordinal order; with OrderedReady, one at a time and only behind Ready pods: a pod that is
        # created, terminating or not Running and Ready blocks everything after it, the rolling update too.
        # A refused create blocks in both modes (the real controller returns the error and retries later).
        blocked = False
        for ordinal in range(replicas):
            pod = pods.get(f"{name}-{ordinal}")
            if pod is None:
                if not await self._create(sts, ordinal, revision) or ordered:
                    blocked = True
                    break
                continue
            if ordered and (not alive(pod) or not pod_ready(pod)):
                blocked = True
                break
        # Scale down from the highest ordinal.
        for pod_name, pod in sorted(pods.items(), key=lambda item: _ordinal(item[0]), reverse=True):
            if blocked:
                break
            if _ordinal(pod_name) >= replicas and alive(pod):
                await self.api.delete("Pod", ns, pod_name)
                break
        # RollingUpdate: replace outdated pods from the highest ordinal down, only while every other pod is
        # Running and Ready. A broken current revision therefore blocks the rollout (kubernetes#67250), as for real:
        # with OrderedReady even the broken pod itself is never replaced (a human deletes it); with Parallel it is.
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and not blocked:
            current = [p for p in pods.values() if _ordinal(p["metadata"]["name"]) < replicas]
            for pod in sorted(current, key=lambda p: _ordinal(p["metadata"]["name"]), reverse=True):
                ordinal = _ordinal(pod["metadata"]["name"])
                outdated = pod["metadata"].get("labels", {}).get("controller-revision-hash") != revision
                if ordinal < partition or not outdated or not alive(pod):
                    continue
                others = [p for p in current if p is not pod]
                if all(alive(p) and pod_ready(p) for p in others) and len(current) == replicas:
                    await self.api.delete("Pod", ns, pod["metadata"]["name"])
                    await self.events.record(
                        sts,
                        "Normal",
                        "SuccessfulDelete",
                        f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful",
                    )
                break
        live = [p for p in pods.values() if alive(p)]
        ready = sum(1 for p in live if pod_ready(p))
        updated = sum(1 for p in live if p["metadata"].get("labels", {}).get("controller-revision-hash") == revision)
        previous_revision = (sts.get("status") or {}).get("currentRevision") or revision
        status = {
            "replicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": updated if updated == len(live) else len(live) - updated,
            "updatedReplicas": updated,
            "updateRevision": revision,
            "currentRevision": revision if updated == len(live) == replicas else previous_revision,
            "observedGeneration": meta.get("generation", 1),
        }
        if {k: (sts.get("status") or {}).get(k, 0) for k in status} != status:
            await self.api.status("StatefulSet", ns, name, status)

    async def _create(self, sts: dict[str, Any], ordinal: int, revision: str) -> bool:
        """Create pod ``ordinal`` (and its claims); False when the API refused it (``FailedCreate``, back-off)."""
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        next_try, delay = self.backoff.get(meta["uid"], (0.0, 0.0))
        if self.clock.now() < next_try:
            return False  # the work queue's rate limiter after a refused create
        template = copy.deepcopy(spec["template"])
        pod_spec = template.get("spec") or {}
        volumes = list(pod_spec.get("volumes") or [])
        for claim in spec.get("volumeClaimTemplates") or []:
            claim_name = f"{claim['metadata']['name']}-{name}-{ordinal}"
            if self.inf["PersistentVolumeClaim"].get(ns, claim_name) is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": claim_name,
                        "namespace": ns,
                        "labels": (template.get("metadata") or {}).get("labels") or {},
                    },
                    "spec": copy.deepcopy(claim.get("spec") or {}),
                }
                try:
                    await self.api.create(body)
                except client.ApiError as exc:
                    if exc.status != 409:
                        raise
            volumes.append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
        pod_spec["volumes"] = volumes
        pod_spec.setdefault("hostname", f"{name}-{ordinal}")
        if spec.get("serviceName"):
            pod_spec.setdefault("subdomain", spec["serviceName"])
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "controller-revision-hash": revision,
            "statefulset.kubernetes.io/pod-name": f"{name}-{ordinal}",
            "apps.kubernetes.io/pod-index": str(ordinal),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{ordinal}",
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [owner_ref(sts)],
            },
            "spec": pod_spec,
        }
        try:
            await self.api.create(body)
        except client.ApiError as exc:
            if exc.status == 409:
                return True
            failure = str(exc).removeprefix(f"HTTP {exc.status}: ")
            await self.events.record(
                sts,
                "Warning",
                "FailedCreate",
                f"create Pod {name}-{ordinal} in StatefulSet {name} failed error: {failure}",
            )
            delay = min(max(delay * 2, 1.0), 300.0)
            self.backoff[meta["uid"]] = (self.clock.now() + delay, delay)
            return False
        self.backoff.pop(meta["uid"], None)
        await self.events.record(
            sts, "Normal", "SuccessfulCreate", f"create Pod {name}-{ordinal} in StatefulSet {name} successful"
        )
        return True
