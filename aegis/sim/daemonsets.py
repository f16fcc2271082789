"""The emulated DaemonSet controller, as kube-controller-manager v1.28 runs it: one pod per eligible node.

A node is eligible when it matches the pod template's ``nodeName``, ``nodeSelector`` and required node
affinity, and every ``NoSchedule``/``NoExecute`` taint on it is tolerated by the template's tolerations plus
the ones the real controller adds to every daemon pod (``not-ready`` and ``unreachable`` NoExecute;
``disk-pressure``, ``memory-pressure``, ``pid-pressure``, ``unschedulable`` NoSchedule; ``network-unavailable``
with ``hostNetwork``). The emulator runs no node lifecycle controller, so a node whose ``Ready`` condition is
not True counts as tainted ``node.kubernetes.io/not-ready:NoSchedule``, as that controller would taint it.

Each pod is created from the template as ``<ds>-<5 random>`` (``generateName``), controlled by the DaemonSet
(``ownerReferences`` with ``controller: true``), labelled ``controller-revision-hash`` (the template's hash,
also the suffix of its ``ControllerRevision`` ``<ds>-<hash>``, which ``kubectl rollout undo`` reads) and
``pod-template-generation``, with the auto tolerations and a required node affinity on its node's
``metadata.name``: the scheduler binds it there, as kube-scheduler does. A node that keeps a pod it should not
(or two) loses the extra ones; a Failed pod is deleted and replaced; a node whose only pod is Terminating gets
its new pod once the old one is gone.

``RollingUpdate`` (the default, ``maxUnavailable`` 1, ``maxSurge`` 0 — surge is not emulated) replaces old
pods while the unavailable ones stay within ``maxUnavailable``: a pod of the new template that never becomes
Ready (a tag that does not exist) stops the rollout with the other nodes on the old pods. ``OnDelete``
replaces a pod only when someone deletes it. The status carries ``observedGeneration``,
``desiredNumberScheduled``, ``currentNumberScheduled``, ``numberMisscheduled``, ``numberReady``,
``updatedNumberScheduled``, ``numberAvailable`` and ``numberUnavailable`` (the last three omitted at 0, as the
API shows them); ``minReadySeconds`` is not emulated (available = Ready). Events: ``SuccessfulCreate``,
``SuccessfulDelete``, ``FailedCreate``, ``FailedDaemonPod``.

An ordinary API client over the shared informers of ``aegis.sim.controllers``; run by ``aegis.sim.cluster``
for the emulated cluster only (on a real control plane kube-controller-manager's DaemonSet controller does it).
"""

from __future__ import annotations

import collections
import copy
from typing import Any

from aegis.sim import client, scheduler
from aegis.sim.controllers import (
    Controller,
    _prune,
    alive,
    owned_by,
    owner_ref,
    pod_ready,
    resolve_intstr,
    template_hash,
)

HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"  # the annotation the API server keeps
NOT_READY = "node.kubernetes.io/not-ready"
# What kube-controller-manager adds to every daemon pod (util.AddOrUpdateDaemonPodTolerations), in its order.
AUTO_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def daemon_tolerations(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The template's tolerations plus the daemon pod ones it does not have yet."""
    tolerations = [dict(t) for t in pod_spec.get("tolerations") or []]
    wanted = [*AUTO_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if pod_spec.get("hostNetwork") else [])]
    for toleration in wanted:
        fields = ("key", "operator", "effect", "value")
        if not any(all(t.get(k) == toleration.get(k) for k in fields) for t in tolerations):
            tolerations.append(dict(toleration))
    return tolerations


def target_node(pod: dict[str, Any]) -> str:
    """The node a daemon pod is for: its ``nodeName`` once bound, else the node its affinity names."""
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        return str(node)
    required = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and len(field.get("values")) == 1:
                return str(field["values"][0])
    return ""


def node_affinity_matches(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """The pod spec's nodeSelector and required node affinity (label expressions and ``metadata.name`` fields)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(key) != value for key, value in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if not required:
        return True
    return any(scheduler.term_matches(term, node) for term in required)


def node_taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's taints, with the ``not-ready`` one the node lifecycle controller would add to a node not Ready."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if not ready and not any(t.get("key") == NOT_READY for t in taints):
        taints.append({"key": NOT_READY, "effect": "NoSchedule"})
    return taints


def should_run(ds: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """(a daemon pod should be created on ``node``, an existing one may keep running there), as
    ``NodeShouldRunDaemonPod`` decides."""
    pod_spec = (ds["spec"].get("template") or {}).get("spec") or {}
    if pod_spec.get("nodeName") and pod_spec["nodeName"] != node["metadata"]["name"]:
        return False, False
    if not node_affinity_matches(pod_spec, node):
        return False, False
    tolerations = daemon_tolerations(pod_spec)
    untolerated = [
        t
        for t in node_taints(node)
        if t.get("effect") in ("NoSchedule", "NoExecute") and not scheduler._tolerated(t, tolerations)
    ]
    if untolerated:
        return False, not any(t.get("effect") == "NoExecute" for t in untolerated)
    return True, True


def _oldest_first(pod: dict[str, Any]) -> tuple[bool, str, str]:
    """Bound pods first, then by creation time and name (``podByCreationTimestampAndPhase``)."""
    meta = pod["metadata"]
    return (not pod["spec"].get("nodeName"), meta.get("creationTimestamp", ""), meta["name"])


class DaemonSetController(Controller):
    component = "daemonset-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # ds uid -> (nodes a pod was created for, pods deleted, until when the cache may lag behind our writes)
        self.expect: dict[str, tuple[set[str], set[str], float]] = {}
        self.backoff: dict[str, tuple[float, float]] = {}  # ds uid -> (next try, delay) after a refused create
        self.failed: dict[str, float] = {}  # "<ds uid>/<node>" -> when a Failed pod there was last deleted

    async def reconcile(self) -> None:
        uids = {ds["metadata"]["uid"] for ds in self.inf["DaemonSet"].items()}
        _prune(self.expect, uids)
        _prune(self.backoff, uids)
        for key in [key for key in self.failed if key.split("/", 1)[0] not in uids]:
            del self.failed[key]
        await self.each("DaemonSet", self._sync)

    def _waiting(self, uid: str, by_node: dict[str, list[dict[str, Any]]]) -> bool:
        """Whether our last creations and deletions are not in the cache yet (the controller's expectations)."""
        created, deleted, until = self.expect.get(uid, (set(), set(), 0.0))
        if self.clock.now() >= until:
            return False
        live = {p["metadata"]["name"] for pods in by_node.values() for p in pods if alive(p)}
        return any(not by_node.get(node) for node in created) or bool(deleted & live)

    async def _sync(self, ds: dict[str, Any]) -> None:
        meta, spec = ds["metadata"], ds["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        ds = {**ds, "apiVersion": "apps/v1", "kind": "DaemonSet"}
        pod_hash = template_hash(spec["template"])
        generation = str((meta.get("annotations") or {}).get(TEMPLATE_GENERATION) or meta.get("generation", 1))
        pods = [p for p in self.inf["Pod"].items(ns) if owned_by(p, ds)]
        by_node: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for pod in pods:
            by_node[target_node(pod)].append(pod)
        nodes = sorted(self.inf["Node"].items(), key=lambda n: n["metadata"]["name"])
        if self._waiting(uid, by_node):
            return
        await self._history(ds, pod_hash)

        def updated(pod: dict[str, Any]) -> bool:
            labels = pod["metadata"].get("labels") or {}
            return labels.get(HASH_LABEL) == pod_hash or labels.get(GENERATION_LABEL) == generation

        create, delete = self._manage(ds, nodes, by_node)
        if (
            not create
            and not delete
            and (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == ("RollingUpdate")
        ):
            delete = self._rolling(ds, nodes, by_node, updated)
        created = await self._create(ds, create, pod_hash, generation)
        for pod in delete:
            await self.api.delete("Pod", ns, pod["metadata"]["name"])
            await self.events.record(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        if created or delete:
            self.expect[uid] = (created, {p["metadata"]["name"] for p in delete}, self.clock.now() + 20)
        await self._status(ds, nodes, by_node, updated)

    def _manage(
        self, ds: dict[str, Any], nodes: list[dict[str, Any]], by_node: dict[str, list[dict[str, Any]]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The nodes that need a daemon pod and the pods to delete (``podsShouldBeOnNode``)."""
        create: list[str] = []
        delete: list[dict[str, Any]] = []
        for node in nodes:
            name = node["metadata"]["name"]
            run, keep = should_run(ds, node)
            daemon = by_node.get(name) or []
            if run and not daemon:  # a Terminating pod still counts: the new one waits until it is gone
                create.append(name)
            elif keep:
                running = []
                for pod in daemon:
                    if not alive(pod):
                        continue
                    phase = (pod.get("status") or {}).get("phase")
                    if phase == "Failed":
                        key = f"{ds['metadata']['uid']}/{name}"
                        if self.clock.now() - self.failed.get(key, -1e9) >= 10:  # the failed-pods back-off
                            self.failed[key] = self.clock.now()
                            delete.append(pod)
                    elif phase == "Succeeded":
                        delete.append(pod)
                    else:
                        running.append(pod)
                delete += sorted(running, key=_oldest_first)[1:]  # no surge: one pod per node, the oldest stays
            else:
                delete += [pod for pod in daemon if alive(pod)]
        return create, delete

    def _rolling(
        self,
        ds: dict[str, Any],
        nodes: list[dict[str, Any]],
        by_node: dict[str, list[dict[str, Any]]],
        updated: Any,
    ) -> list[dict[str, Any]]:
        """Old pods to delete now: the unavailable ones, and available ones while ``maxUnavailable`` allows."""
        desired = sum(1 for node in nodes if should_run(ds, node)[0])
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        max_unavailable = resolve_intstr(rolling.get("maxUnavailable", 1), desired, True) or 1
        unavailable = 0
        replace: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        for name in sorted(by_node):
            live = [p for p in by_node[name] if alive(p)]
            new = [p for p in live if updated(p)]
            old = [p for p in live if not updated(p)]
            if len(new) > 1 or len(old) > 1 or bool(new) == bool(old):
                unavailable += 1  # being created, deleted or cleaned up: unavailable for now
            elif new:
                unavailable += 0 if pod_ready(new[0]) else 1
            elif not pod_ready(old[0]):
                replace.append(old[0])  # out of date and not available anyway: replaced at once
            elif unavailable < max_unavailable:
                candidates.append(old[0])
        return replace + candidates[: max(min(max_unavailable - unavailable, len(candidates)), 0)]

    async def _create(self, ds: dict[str, Any], nodes: list[str], pod_hash: str, generation: str) -> set[str]:
        """A daemon pod for each node; the nodes whose pod the API accepted. A refusal backs off."""
        uid = ds["metadata"]["uid"]
        next_try, delay = self.backoff.get(uid, (0.0, 0.0))
        if not nodes or self.clock.now() < next_try:
            return set()
        created: set[str] = set()
        for node in nodes:
            try:
                pod = await self.api.create(self._pod(ds, node, pod_hash, generation))
            except client.ApiError as exc:  # e.g. a ResourceQuota or a missing ServiceAccount
                failure = str(exc).removeprefix(f"HTTP {exc.status}: ")
                await self.events.record(ds, "Warning", "FailedCreate", f"Error creating: {failure}")
                delay = min(max(delay * 2, 1.0), 300.0)
                self.backoff[uid] = (self.clock.now() + delay, delay)
                return created
            created.add(node)
            await self.events.record(ds, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        self.backoff.pop(uid, None)
        return created

    @staticmethod
    def _pod(ds: dict[str, Any], node: str, pod_hash: str, generation: str) -> dict[str, Any]:
        template = copy.deepcopy(ds["spec"]["template"])
        template_meta = template.get("metadata") or {}
        pod_spec = template.get("spec") or {}
        pod_spec["tolerations"] = daemon_tolerations(pod_spec)
        # ReplaceDaemonSetPodNodeNameNodeAffinity: the node's name replaces the template's required terms.
        node_affinity = pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        }
        labels = {**(template_meta.get("labels") or {}), HASH_LABEL: pod_hash, GENERATION_LABEL: generation}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{ds['metadata']['name']}-",
                "namespace": ds["metadata"]["namespace"],
                "labels": labels,
                "annotations": template_meta.get("annotations") or {},
                "ownerReferences": [owner_ref(ds)],
            },
            "spec": pod_spec,
        }

    async def _history(self, ds: dict[str, Any], pod_hash: str) -> None:
        """The template's ControllerRevision ``<ds>-<hash>`` (the newest revision), and old ones pruned to
        ``revisionHistoryLimit`` (never one a live pod still runs)."""
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        revisions = [r for r in self.inf["ControllerRevision"].items(ns) if owned_by(r, ds)]
        newest = max((int(r.get("revision") or 0) for r in revisions), default=0)
        current = next((r for r in revisions if (r["metadata"].get("labels") or {}).get(HASH_LABEL) == pod_hash), None)
        if current is None:
            template = copy.deepcopy(ds["spec"]["template"])
            body = {
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": f"{name}-{pod_hash}",
                    "namespace": ns,
                    "labels": {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash},
                    "annotations": dict(ds["metadata"].get("annotations") or {}),
                    "ownerReferences": [owner_ref(ds)],
                },
                "data": {"spec": {"template": {**template, "$patch": "replace"}}},
                "revision": newest + 1,
            }
            try:
                await self.api.create(body)
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
        elif int(current.get("revision") or 0) < newest:  # back to an older template: it is the newest again
            await self.api.patch("ControllerRevision", ns, current["metadata"]["name"], {"revision": newest + 1})
        limit = int(ds["spec"].get("revisionHistoryLimit", 10))
        in_use = {
            (p["metadata"].get("labels") or {}).get(HASH_LABEL) for p in self.inf["Pod"].items(ns) if owned_by(p, ds)
        }
        old = sorted(
            (r for r in revisions if (r["metadata"].get("labels") or {}).get(HASH_LABEL) not in in_use | {pod_hash}),
            key=lambda r: int(r.get("revision") or 0),
        )
        for revision in old[: max(len(old) - limit, 0)]:
            await self.api.delete("ControllerRevision", ns, revision["metadata"]["name"])

    async def _status(
        self,
        ds: dict[str, Any],
        nodes: list[dict[str, Any]],
        by_node: dict[str, list[dict[str, Any]]],
        updated: Any,
    ) -> None:
        """``updateDaemonSetStatus``: counted per node, on its oldest daemon pod."""
        desired = current = misscheduled = ready = available = up_to_date = 0
        for node in nodes:
            daemon = by_node.get(node["metadata"]["name"]) or []
            if should_run(ds, node)[0]:
                desired += 1
                if not daemon:
                    continue
                current += 1
                pod = min(daemon, key=_oldest_first)
                if pod_ready(pod):
                    ready += 1
                    available += 1
                up_to_date += 1 if updated(pod) else 0
            elif daemon:
                misscheduled += 1
        wanted: dict[str, Any] = {
            "observedGeneration": ds["metadata"].get("generation", 1),
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "updatedNumberScheduled": up_to_date or None,  # omitempty in the API, like the next two
            "numberAvailable": available or None,
            "numberUnavailable": (desired - available) or None,
        }
        status = ds.get("status") or {}
        if any(status.get(key) != value for key, value in wanted.items()):
            await self.api.status("DaemonSet", ds["metadata"]["namespace"], ds["metadata"]["name"], wanted)
