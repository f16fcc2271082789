"""The scheduler: binds each pending pod to a node, or leaves it Pending with kube-scheduler's message.

A node fits when it is schedulable (or the pod tolerates ``node.kubernetes.io/unschedulable``, as
daemon pods do), its taints are tolerated, it matches the pod's nodeSelector and required node
affinity (label expressions, and ``metadata.name`` fields: how the DaemonSet controller pins a
daemon pod to its node), and its allocatable cpu, memory and pod
count cover the pod's requests on top of what its pods hold (a Terminating pod still
holds its share); the least loaded fitting node wins, through ``pods/binding``. A pod
whose claims are missing or unbound, or that fits nowhere, gets PodScheduled=False
and a ``FailedScheduling`` event with the real scheduler's wording, repeated with
back-off. An ordinary API client over the shared informers of
``aegis.sim.controllers``; run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from aegis import quantity
from aegis.sim import client, controllers, events

logger = logging.getLogger("aegis.sim.scheduler")
DEFAULT = "default-scheduler"  # the profile kube-scheduler serves
# The taint kube-scheduler's NodeUnschedulable plugin reads a cordoned node as (daemon pods tolerate it).
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and (
            not toleration.get("key") or toleration["key"] == taint.get("key")
        ):
            return True
        if toleration.get("key") == taint.get("key") and toleration.get("value") == taint.get("value"):
            return True
    return False


def term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    """A required node affinity term: its label expressions and its ``metadata.name`` fields (the DaemonSet
    controller pins each daemon pod to its node that way); a term with neither matches no node."""
    expressions, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not expressions and not fields:
        return False
    name = {"metadata.name": node["metadata"]["name"]}
    return controllers.expressions_match(expressions, node["metadata"].get("labels") or {}) and (
        controllers.expressions_match(fields, name)
    )


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    total: dict[str, float] = collections.defaultdict(float)
    for container in pod["spec"].get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        limits = (container.get("resources") or {}).get("limits") or {}
        for resource in ("cpu", "memory"):
            value = requests.get(resource, limits.get(resource))
            if value is not None:
                total[resource] += float(quantity.parse(value))
    return total


class Scheduler(controllers.Controller):
    component = "default-scheduler"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reported: dict[str, tuple[str, float]] = {}

    async def reconcile(self) -> None:
        controllers._prune(self.reported, {p["metadata"]["uid"] for p in self.inf["Pod"].items()})
        nodes = [n for n in self.inf["Node"].items() if (n.get("status") or {}).get("allocatable")]
        if not nodes:
            return
        used: dict[str, dict[str, float]] = {n["metadata"]["name"]: collections.defaultdict(float) for n in nodes}
        counts: dict[str, int] = collections.Counter()
        pending = []
        for pod in self.inf["Pod"].items():
            node = pod["spec"].get("nodeName")
            # A Terminating pod still holds its node's resources until it is gone, as for the real scheduler.
            if node in used and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                for resource, amount in pod_requests(pod).items():
                    used[node][resource] += amount
                counts[node] += 1
            elif (
                not node
                and controllers.alive(pod)
                and pod["spec"].get("schedulerName", DEFAULT) == DEFAULT
                and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ):
                pending.append(pod)  # a finished pod, or one for another scheduler, is left alone, as by kube-scheduler
        for pod in sorted(pending, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            try:
                await self._schedule(pod, nodes, used, counts)
            except client.ApiError as exc:
                logger.debug("scheduling %s: %s", pod["metadata"]["name"], exc)

    async def _schedule(
        self,
        pod: dict[str, Any],
        nodes: list[dict[str, Any]],
        used: dict[str, dict[str, float]],
        counts: dict[str, int],
    ) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        total = len(nodes)
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                pvc = self.inf["PersistentVolumeClaim"].get(ns, claim)
                if pvc is None:
                    return await self._unschedulable(
                        pod,
                        f"0/{total} nodes are available: persistentvolumeclaim "
                        f'"{claim}" not found. preemption: 0/{total} nodes are '
                        f"available: {total} Preemption is not helpful for scheduling.",
                    )
                if (pvc.get("status") or {}).get("phase") != "Bound":
                    return await self._unschedulable(
                        pod,
                        f"0/{total} nodes are available: pod has unbound immediate "
                        f"PersistentVolumeClaims. preemption: 0/{total} nodes are "
                        f"available: {total} Preemption is not helpful for scheduling.",
                    )
        requests = pod_requests(pod)
        selector = pod["spec"].get("nodeSelector") or {}
        affinity = (
            ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms") or []
        reasons: collections.Counter[str] = collections.Counter()
        fits = []
        tolerations = pod["spec"].get("tolerations") or []
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            node_name = node["metadata"]["name"]
            if (node.get("spec") or {}).get("unschedulable") and not _tolerated(UNSCHEDULABLE, tolerations):
                reasons["node(s) were unschedulable"] += 1
                continue
            untolerated = [
                t
                for t in (node.get("spec") or {}).get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(t, tolerations)
            ]
            if untolerated:
                taint = untolerated[0]
                value = f": {taint['value']}" if taint.get("value") else ""
                reasons[f"node(s) had untolerated taint {{{taint.get('key')}{value}}}"] += 1
                continue
            if any(labels.get(k) != v for k, v in selector.items()) or (
                affinity and not any(term_matches(term, node) for term in affinity)
            ):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            allocatable = node["status"]["allocatable"]
            short = False
            for resource in ("cpu", "memory"):
                capacity = float(quantity.parse(allocatable.get(resource, "0")))
                if requests.get(resource, 0) + used[node_name][resource] > capacity:
                    reasons[f"Insufficient {resource}"] += 1
                    short = True
            if counts[node_name] >= int(allocatable.get("pods", "110")):
                reasons["Too many pods"] += 1
                short = True
            if not short:
                fits.append(node)
        if not fits:
            detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            only_resources = all(r.startswith("Insufficient") or r == "Too many pods" for r in reasons)
            preemption = (
                f"{total} No preemption victims found for incoming pod."
                if only_resources
                else f"{total} Preemption is not helpful for scheduling."
            )
            return await self._unschedulable(
                pod, f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are available: {preemption}"
            )
        chosen = min(fits, key=lambda n: (counts[n["metadata"]["name"]], n["metadata"]["name"]))
        node_name = chosen["metadata"]["name"]
        await self.api.request(
            "POST",
            client.path_for("Pod", ns, name, "binding"),
            body={
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
            },
        )
        for resource, amount in requests.items():
            used[node_name][resource] += amount
        counts[node_name] += 1
        self.reported.pop(pod["metadata"]["uid"], None)
        await self.events.record(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node_name}")

    async def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        uid = pod["metadata"]["uid"]
        last_message, at = self.reported.get(uid, ("", -1e9))
        if last_message == message and self.clock.now() - at < 30:
            return  # the scheduler retries with back-off; so do its events
        self.reported[uid] = (message, self.clock.now())
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": events._now(),
            }
        )
        # Only the condition, as kube-scheduler writes it: the phase is the kubelet's (or a test's) to set.
        await self.api.status("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], {"conditions": conditions})
        await self.events.record(pod, "Warning", "FailedScheduling", message)
