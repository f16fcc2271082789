"""The emulated control plane's shared parts, and its node and volume controllers.

``Informers`` are the caches every component reads from; ``Controller`` is the base
of a control loop; the helpers (ownership, selectors, readiness, template hashes,
int-or-percent) are shared by every controller. ``NodeController`` creates the nodes
and keeps them schedulable (and their Leases renewed, on a real API server);
``PersistentVolumeController`` binds claims whose StorageClass exists (else
ProvisioningFailed), or only provisions where a real PV binder runs. Each is an
ordinary API client over ``aegis.sim.client`` informers.

The other controllers build on this module: the scheduler in ``aegis.sim.scheduler``,
Endpoints/EndpointSlice in ``aegis.sim.endpoints``, the workload controllers
(Deployment, ReplicaSet, StatefulSet) in ``aegis.sim.workloads``, DaemonSet in
``aegis.sim.daemonsets``, Job and CronJob in ``aegis.sim.jobs``. Run by ``aegis.sim.cluster``
(and, on a real API server, by ``aegis.sim.nodes``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

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
        "DaemonSet",
        "ControllerRevision",
        "Job",
        "CronJob",
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


async def run_loop(components: list[Any], changed: asyncio.Event, tick: float) -> None:
    """Reconcile every component after each cache change (or every ``tick`` wall seconds), until cancelled."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=tick)
        changed.clear()
        for component in components:
            try:
                await component.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one component must not stop the others
                logger.exception("%s failed", type(component).__name__)
        await asyncio.sleep(0.01)  # let watches deliver what the pass wrote


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
    """Creates the cluster's nodes once, with capacity and the usual labels, and keeps them schedulable.

    Works on the emulator and on a real API server: the real one taints a new node
    ``node.kubernetes.io/not-ready:NoSchedule`` at create, so the taint is patched away after
    (``spec.taints``); the status (Ready, addresses, ``daemonEndpoints.kubeletEndpoint.Port``
    for ``pods/log``) is written through ``/status``. ``internal_ip`` overrides each node's
    InternalIP (``127.0.0.1`` where a real API server must reach our kubelet API); with
    ``heartbeat`` the node's Lease in ``kube-node-lease`` is renewed, as a kubelet does, so a
    node lifecycle controller keeps the node Ready.
    """

    component = "node-controller"
    NOT_READY = "node.kubernetes.io/not-ready"

    def __init__(
        self,
        *args: Any,
        nodes: int = 3,
        cpu: str = "4",
        memory: str = "8Gi",
        prefix: str = "sim-worker",
        internal_ip: str | None = None,
        kubelet_port: int = 10250,
        heartbeat: bool = False,
        provisioner: str = "rancher.io/local-path",
    ) -> None:
        super().__init__(*args)
        self.count, self.cpu, self.memory = nodes, cpu, memory
        self.prefix, self.internal_ip, self.kubelet_port = prefix, internal_ip, kubelet_port
        self.heartbeat, self.provisioner = heartbeat, provisioner
        self.done = False
        self.last_beat = -1e9

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}-{index}" for index in range(1, self.count + 1)]

    async def reconcile(self) -> None:
        if self.heartbeat and self.done and self.clock.now() - self.last_beat >= 10 * self.clock.speed:
            await self._beat()  # every 10 wall seconds, as a kubelet renews its Lease
        if self.done:
            return
        existing = {n["metadata"]["name"]: n for n in self.inf["Node"].items()}
        zones = ("a", "b", "c")
        for index, name in enumerate(self.names, start=1):
            node = existing.get(name)
            if node is None:
                node = await self.api.create(
                    {
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
                        "spec": {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]},
                    }
                )
            taints = (node.get("spec") or {}).get("taints") or []
            kept = [t for t in taints if t.get("key") != self.NOT_READY]
            if kept != taints:
                await self.api.patch("Node", None, name, {"spec": {"taints": kept or None}})
            await self.api.status("Node", None, name, self._status(index, name))
        if not any(sc for sc in self.inf["StorageClass"].items()):
            try:
                await self.api.create(
                    {
                        "apiVersion": "storage.k8s.io/v1",
                        "kind": "StorageClass",
                        "metadata": {
                            "name": "standard",
                            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                        },
                        "provisioner": self.provisioner,
                        "reclaimPolicy": "Delete",
                        "volumeBindingMode": "Immediate",
                    }
                )
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
        self.done = True
        if self.heartbeat:
            await self._beat()

    def _status(self, index: int, name: str) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "100Gi"}
        now = _wall()
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": self.internal_ip or f"172.18.0.{index + 1}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-sim",
                "kubeProxyVersion": "v1.31.0-sim",
                "containerRuntimeVersion": "containerd://1.7.18",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-sim",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def _beat(self) -> None:
        self.last_beat = self.clock.now()
        renew = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for name in self.names:
            try:
                await self.api.patch("Lease", "kube-node-lease", name, {"spec": {"renewTime": renew}})
            except client.ApiError as exc:
                if exc.status != 404:
                    logger.debug("lease %s: %s", name, exc)
                    continue
                node = self.inf["Node"].get(None, name)
                owner = [owner_ref(node) | {"controller": False}] if node is not None else []
                with contextlib.suppress(client.ApiError):
                    await self.api.create(
                        {
                            "apiVersion": "coordination.k8s.io/v1",
                            "kind": "Lease",
                            "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": owner},
                            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
                        }
                    )


def _wall() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PersistentVolumeController(Controller):
    """Dynamic provisioning for claims whose StorageClass exists, else reports why not.

    With ``bind`` (the emulator, which has no PV binder) it also binds claim and volume.
    Without it (a real API server, where kube-controller-manager's PV binder binds) it is an
    external provisioner: it provisions only claims the binder has handed to one of
    ``provisioners`` (annotation ``volume.kubernetes.io/storage-provisioner``) and only
    CREATEs the PV with a ``claimRef``; the binder then binds both and reports failures.
    """

    component = "persistentvolume-controller"
    PROVISIONER_ANNOTATIONS = (
        "volume.kubernetes.io/storage-provisioner",
        "volume.beta.kubernetes.io/storage-provisioner",
    )

    def __init__(
        self, *args: Any, bind: bool = True, provisioners: tuple[str, ...] = ("rancher.io/local-path",)
    ) -> None:
        super().__init__(*args)
        self.bind = bind
        self.provisioners = provisioners
        self.reported: dict[str, float] = {}
        self.provisioned: set[str] = set()

    async def reconcile(self) -> None:
        classes = {sc["metadata"]["name"]: sc for sc in self.inf["StorageClass"].items()}
        uids = {c["metadata"]["uid"] for c in self.inf["PersistentVolumeClaim"].items()}
        _prune(self.reported, uids)
        self.provisioned &= uids
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
                if self.bind:
                    await self._sync(pvc, classes, default)
                else:
                    await self._provision(pvc, classes)
            except client.ApiError as exc:
                logger.debug("pvc %s: %s", pvc["metadata"]["name"], exc)

    async def _provision(self, pvc: dict[str, Any], classes: dict[str, Any]) -> None:
        """The external-provisioner half: a PV pre-bound to the claim, once the binder asked for one."""
        annotations = pvc["metadata"].get("annotations") or {}
        asked = next((annotations[a] for a in self.PROVISIONER_ANNOTATIONS if a in annotations), None)
        class_name = pvc["spec"].get("storageClassName")
        uid = pvc["metadata"]["uid"]
        if asked not in self.provisioners or class_name not in classes or pvc["spec"].get("volumeName"):
            return
        if uid in self.provisioned or self.inf["PersistentVolume"].get(None, f"pvc-{uid}") is not None:
            return
        await self._create_volume(pvc, classes[class_name], class_name)
        self.provisioned.add(uid)

    async def _create_volume(self, pvc: dict[str, Any], storage_class: dict[str, Any], class_name: str) -> str:
        ns, name, uid = pvc["metadata"]["namespace"], pvc["metadata"]["name"], pvc["metadata"]["uid"]
        storage = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume = f"pvc-{uid}"
        try:
            await self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": volume,
                        "annotations": {"pv.kubernetes.io/provisioned-by": storage_class.get("provisioner", "")},
                    },
                    "spec": {
                        "capacity": {"storage": storage},
                        "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
                        "storageClassName": class_name,
                        "volumeMode": pvc["spec"].get("volumeMode") or "Filesystem",
                        "hostPath": {"path": f"/var/local-path/{volume}"},
                        "claimRef": {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "namespace": ns,
                            "name": name,
                            "uid": uid,
                            "resourceVersion": pvc["metadata"].get("resourceVersion"),
                        },
                    },
                }
            )
        except client.ApiError as exc:
            if exc.status != 409:
                raise
            return volume
        await self.events.record(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {volume}")
        return volume

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
            await self._create_volume(pvc, classes[class_name], class_name)
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
