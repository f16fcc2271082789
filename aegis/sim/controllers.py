"""Simulated control plane: Deployment, ReplicaSet, StatefulSet, Endpoints/EndpointSlice, PVC binding,
the scheduler and the nodes. Each is an ordinary API client over ``aegis.sim.client`` informers.

They reproduce what a remediation depends on: a Deployment rolls out a new
ReplicaSet per template (pod-template-hash, revision annotations, so a rollback
has history) with the RollingUpdate surge/unavailable rules and the
Available/Progressing conditions (ProgressDeadlineExceeded after the deadline);
ReplicaSets keep their pod count; StatefulSets create ordered pods and their
claims; Endpoints list ready and not-ready addresses, skipping pods whose named
targetPort does not exist; PVCs bind when their StorageClass exists (else
ProvisioningFailed); the scheduler binds pods to nodes with capacity and matching
selectors, or leaves them Pending with the scheduler's FailedScheduling message.
Run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import abc
import collections
import copy
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aegis import quantity
from aegis.sim import client, clock, events

logger = logging.getLogger("aegis.sim.controllers")
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def _prune(memory: dict[str, Any], alive_uids: set[str]) -> None:
    """Forget what a controller remembered about objects that no longer exist."""
    for uid in [uid for uid in memory if uid not in alive_uids]:
        del memory[uid]


def _ordinal(pod_name: str) -> int:
    tail = pod_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template_hash(template: dict[str, Any]) -> str:
    """A stable, pod-name-safe hash of a pod template (like pod-template-hash)."""
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    labels.pop("controller-revision-hash", None)
    digest = int(hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest(), 16)
    out = ""
    for _ in range(10):
        digest, index = divmod(digest, len(_SAFE))
        out += _SAFE[index]
    return out


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    match = (selector or {}).get("matchLabels") or {}
    if not match and not (selector or {}).get("matchExpressions"):
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    return expressions_match((selector or {}).get("matchExpressions") or [], labels)


def expressions_match(expressions: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """matchExpressions (In, NotIn, Exists, DoesNotExist) of label and node selectors."""
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def alive(obj: dict[str, Any]) -> bool:
    return not obj["metadata"].get("deletionTimestamp")


def resolve_intstr(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


class Informers:
    """The shared caches every component reads from."""

    KINDS = (
        "Namespace",
        "Node",
        "Pod",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "StorageClass",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "Event",
    )

    def __init__(self, api: client.SimClient, changed: Any) -> None:
        self.by_kind = {kind: client.Informer(api, kind, changed) for kind in self.KINDS}

    def __getitem__(self, kind: str) -> client.Informer:
        return self.by_kind[kind]

    def start(self) -> None:
        for informer in self.by_kind.values():
            informer.start()

    async def synced(self) -> None:
        for informer in self.by_kind.values():
            await informer.synced.wait()

    async def stop(self) -> None:
        for informer in self.by_kind.values():
            await informer.stop()


class Controller(abc.ABC):
    """One control loop: ``reconcile`` is called after every cache change and on every tick."""

    component = "controller"

    def __init__(self, api: client.SimClient, informers: Informers, sim_clock: clock.SimClock) -> None:
        self.api = api
        self.inf = informers
        self.clock = sim_clock
        self.events = events.EventRecorder(api, self.component)

    @abc.abstractmethod
    async def reconcile(self) -> None:
        """Move the cluster one step towards what the objects ask for."""

    async def each(self, kind: str, sync: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """``sync`` every live object of ``kind``; an API error on one never stops the others."""
        for obj in self.inf[kind].items():
            if alive(obj):
                try:
                    await sync(obj)
                except client.ApiError as exc:
                    logger.debug("%s %s: %s", kind, obj["metadata"]["name"], exc)


class NodeController(Controller):
    """Creates the cluster's nodes once, with capacity and the usual labels."""

    component = "node-controller"

    def __init__(self, *args: Any, nodes: int = 3, cpu: str = "4", memory: str = "8Gi") -> None:
        super().__init__(*args)
        self.count, self.cpu, self.memory = nodes, cpu, memory
        self.done = False

    async def reconcile(self) -> None:
        if self.done:
            return
        existing = {n["metadata"]["name"] for n in self.inf["Node"].items()}
        zones = ("a", "b", "c")
        for index in range(1, self.count + 1):
            name = f"sim-worker-{index}"
            if name in existing:
                continue
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node.kubernetes.io/instance-type": "sim.large",
                        "topology.kubernetes.io/zone": f"sim-zone-{zones[(index - 1) % 3]}",
                    },
                },
                "spec": {"podCIDR": f"10.244.{index}.0/24"},
            }
            node = await self.api.create(body)
            capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "100Gi"}
            await self.api.status(
                "Node",
                None,
                name,
                {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [
                        {"type": "InternalIP", "address": f"172.18.0.{index + 1}"},
                        {"type": "Hostname", "address": name},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        },
                        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "v1.31.0-sim",
                        "containerRuntimeVersion": "containerd://1.7.18",
                        "osImage": "Debian GNU/Linux 12 (bookworm)",
                        "architecture": "amd64",
                    },
                },
            )
            del node
        if not any(sc for sc in self.inf["StorageClass"].items()):
            await self.api.create(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": "standard",
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": "rancher.io/local-path",
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                }
            )
        self.done = True


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
        for condition in (available, progressing):
            previous = old_conditions.get(condition["type"])
            if previous and all(previous.get(k) == condition[k] for k in ("status", "reason", "message")):
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

    async def reconcile(self) -> None:
        _prune(self.expect, {rs["metadata"]["uid"] for rs in self.inf["ReplicaSet"].items()})
        await self.each("ReplicaSet", self._sync)

    async def _sync(self, rs: dict[str, Any]) -> None:
        ns = rs["metadata"]["namespace"]
        pods = [p for p in self.inf["Pod"].items(ns) if owned_by(p, rs) and alive(p)]
        uid = rs["metadata"]["uid"]
        expected, until = self.expect.get(uid, (-1, 0.0))
        if expected >= 0 and len(pods) != expected and self.clock.now() < until:
            return  # our last creations/deletions are not in the cache yet
        want = int(rs["spec"].get("replicas", 0))
        if len(pods) < want:
            for _ in range(want - len(pods)):
                pod = await self._create_pod(rs)
                await self.events.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.expect[uid] = (want, self.clock.now() + 20)
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
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if {k: (rs.get("status") or {}).get(k, 0) for k in status} != status:
            await self.api.status("ReplicaSet", ns, rs["metadata"]["name"], status)

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
        # Scale up in ordinal order; with OrderedReady, one at a time and only behind Ready pods.
        for ordinal in range(replicas):
            pod = pods.get(f"{name}-{ordinal}")
            if pod is None:
                await self._create(sts, ordinal, revision)
                if ordered:
                    break
                continue
            if ordered and (not alive(pod) or not pod_ready(pod)):
                break
        # Scale down from the highest ordinal.
        for pod_name, pod in sorted(pods.items(), key=lambda item: _ordinal(item[0]), reverse=True):
            if _ordinal(pod_name) >= replicas and alive(pod):
                await self.api.delete("Pod", ns, pod_name)
                break
        # RollingUpdate: replace outdated pods from the highest ordinal down, only while every other pod is
        # Running and Ready. A broken current revision therefore blocks the rollout (kubernetes#67250), as for real.
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
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

    async def _create(self, sts: dict[str, Any], ordinal: int, revision: str) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
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
            await self.events.record(
                sts, "Normal", "SuccessfulCreate", f"create Pod {name}-{ordinal} in StatefulSet {name} successful"
            )
        except client.ApiError as exc:
            if exc.status != 409:
                raise


class EndpointsController(Controller):
    """Endpoints and EndpointSlices from the pods each Service selects."""

    component = "endpoint-controller"

    async def reconcile(self) -> None:
        for service in self.inf["Service"].items():
            if not alive(service) or not (service["spec"].get("selector")):
                continue
            try:
                await self._sync(service)
            except client.ApiError as exc:
                logger.debug("endpoints %s: %s", service["metadata"]["name"], exc)

    async def _sync(self, service: dict[str, Any]) -> None:
        ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
        selector = {"matchLabels": service["spec"]["selector"]}
        pods = [
            p
            for p in self.inf["Pod"].items(ns)
            if alive(p)
            and selector_matches(selector, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
        ]
        subsets: dict[str, dict[str, Any]] = {}
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            ports = []
            for port in service["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    target = next(
                        (
                            cp.get("containerPort")
                            for c in pod["spec"].get("containers") or []
                            for cp in c.get("ports") or []
                            if cp.get("name") == target
                        ),
                        None,
                    )
                if target is None:
                    continue  # a named targetPort the pod does not declare: no endpoint for this pod
                entry = {"port": target, "protocol": port.get("protocol", "TCP")}
                if port.get("name"):
                    entry["name"] = port["name"]
                ports.append(entry)
            if not ports:
                continue
            key = json.dumps(ports, sort_keys=True)
            subset = subsets.setdefault(key, {"addresses": [], "notReadyAddresses": [], "ports": ports})
            address = {
                "ip": pod["status"]["podIP"],
                "nodeName": pod["spec"].get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            subset["addresses" if pod_ready(pod) else "notReadyAddresses"].append(address)
        clean = []
        for subset in subsets.values():
            clean.append({k: v for k, v in subset.items() if v})
        current = self.inf["Endpoints"].get(ns, name)
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": service["metadata"].get("labels") or {}},
            }
            if clean:
                body["subsets"] = clean
            await self.api.create(body)
        elif (current.get("subsets") or []) != clean:
            await self.api.patch("Endpoints", ns, name, {"subsets": clean or None})
        await self._slice(service, clean)

    async def _slice(self, service: dict[str, Any], subsets: list[dict[str, Any]]) -> None:
        ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
        endpoints = []
        ports: list[dict[str, Any]] = []
        for subset in subsets:
            ports = subset["ports"]
            for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
                for address in subset.get(key) or []:
                    endpoints.append(
                        {
                            "addresses": [address["ip"]],
                            "conditions": {"ready": ready},
                            "nodeName": address.get("nodeName"),
                            "targetRef": address["targetRef"],
                        }
                    )
        slice_name = f"{name}-sim"
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "addressType": "IPv4",
            "metadata": {
                "name": slice_name,
                "namespace": ns,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
                "ownerReferences": [owner_ref(service)],
            },
            "endpoints": endpoints,
            "ports": ports,
        }
        current = self.inf["EndpointSlice"].get(ns, slice_name)
        if current is None:
            try:
                await self.api.create(body)
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
        elif current.get("endpoints") != endpoints or current.get("ports") != ports:
            await self.api.patch("EndpointSlice", ns, slice_name, {"endpoints": endpoints, "ports": ports})


class PersistentVolumeController(Controller):
    """Binds claims whose StorageClass exists (dynamic provisioning), else reports why not."""

    component = "persistentvolume-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reported: dict[str, float] = {}

    async def reconcile(self) -> None:
        classes = {sc["metadata"]["name"]: sc for sc in self.inf["StorageClass"].items()}
        _prune(self.reported, {c["metadata"]["uid"] for c in self.inf["PersistentVolumeClaim"].items()})
        default = next(
            (
                name
                for name, sc in classes.items()
                if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
                == "true"
            ),
            None,
        )
        for pvc in self.inf["PersistentVolumeClaim"].items():
            if not alive(pvc) or (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            try:
                await self._sync(pvc, classes, default)
            except client.ApiError as exc:
                logger.debug("pvc %s: %s", pvc["metadata"]["name"], exc)

    async def _sync(self, pvc: dict[str, Any], classes: dict[str, Any], default: str | None) -> None:
        ns, name = pvc["metadata"]["namespace"], pvc["metadata"]["name"]
        class_name = pvc["spec"].get("storageClassName", default)
        uid = pvc["metadata"]["uid"]
        if class_name not in classes:
            if self.clock.now() - self.reported.get(uid, -1e9) >= 15:
                self.reported[uid] = self.clock.now()
                if class_name:
                    await self.events.record(
                        pvc, "Warning", "ProvisioningFailed", f'storageclass.storage.k8s.io "{class_name}" not found'
                    )
                else:
                    await self.events.record(
                        pvc,
                        "Normal",
                        "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set",
                    )
            return
        storage = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume = f"pvc-{uid}"
        if self.inf["PersistentVolume"].get(None, volume) is None:
            try:
                await self.api.create(
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "metadata": {
                            "name": volume,
                            "annotations": {
                                "pv.kubernetes.io/provisioned-by": classes[class_name].get("provisioner", "")
                            },
                        },
                        "spec": {
                            "capacity": {"storage": storage},
                            "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Delete",
                            "storageClassName": class_name,
                            "hostPath": {"path": f"/var/local-path/{volume}"},
                            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
                        },
                    }
                )
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
            await self.events.record(
                pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {volume}"
            )
        await self.api.patch(
            "PersistentVolumeClaim",
            ns,
            name,
            {"spec": {"volumeName": volume}, "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}},
        )
        await self.api.status(
            "PersistentVolumeClaim",
            ns,
            name,
            {
                "phase": "Bound",
                "capacity": {"storage": storage},
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
            },
        )


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


class Scheduler(Controller):
    component = "default-scheduler"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reported: dict[str, tuple[str, float]] = {}

    async def reconcile(self) -> None:
        _prune(self.reported, {p["metadata"]["uid"] for p in self.inf["Pod"].items()})
        nodes = [n for n in self.inf["Node"].items() if (n.get("status") or {}).get("allocatable")]
        if not nodes:
            return
        used: dict[str, dict[str, float]] = {n["metadata"]["name"]: collections.defaultdict(float) for n in nodes}
        counts: dict[str, int] = collections.Counter()
        pending = []
        for pod in self.inf["Pod"].items():
            node = pod["spec"].get("nodeName")
            if node in used and alive(pod) and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                for resource, amount in pod_requests(pod).items():
                    used[node][resource] += amount
                counts[node] += 1
            elif not node and alive(pod):
                pending.append(pod)
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
            if (node.get("spec") or {}).get("unschedulable"):
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
                affinity and not any(self._term_matches(term, labels) for term in affinity)
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

    @staticmethod
    def _term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
        return expressions_match(term.get("matchExpressions") or [], labels)

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
        await self.api.status(
            "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], {"phase": "Pending", "conditions": conditions}
        )
        await self.events.record(pod, "Warning", "FailedScheduling", message)
