"""Objects as a real kube-apiserver v1.28.4 serves them, and an in-memory cluster that lists them that way.

What the emulator hid and the real control plane showed: LIST responses carry ``kind`` /
``apiVersion`` on the list, not on each item; a deleted pod stays ``Terminating``
(``metadata.deletionTimestamp``) for its grace period while the new ReplicaSet's pods
start; an init container that fails leaves ``Init:CrashLoopBackOff`` / ``Init:Error``;
a ResourceQuota refuses a ReplicaSet's pods with a ``FailedCreate`` event; Job pods are
owned by a Job owned by a CronJob. ``RealShapedCluster`` stands in for
``aegis.kube.client.Cluster`` (it is injected, never patched in).
"""

from __future__ import annotations

import copy
from typing import Any

from aegis.kube import client
from tests import factories

DELETED_AT = "2026-11-21T10:00:30Z"
QUOTA_MESSAGE = (
    'pods "web-7d9c5b8f4-xyz12" is forbidden: exceeded quota: compute, requested: requests.memory=512Mi, '
    "used: requests.memory=1Gi, limited: requests.memory=1Gi"
)


class RealShapedCluster:
    """Reads and writes in memory; ``list`` answers like a real API server's LIST: items without kind/apiVersion.

    ``logs`` maps (pod, container, previous) to the lines the kubelet has, or to the ``ClusterError`` its proxy
    answers (400 "container ... is waiting to start", 500, a timeout).
    """

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        for obj in objects:
            self.put(obj)
        self.logs: dict[tuple[str, str, bool], list[str] | Exception] = {}
        self.log_reads: list[tuple[str, str, bool]] = []
        self.created: list[tuple[str, str, dict[str, Any]]] = []
        self.patches: list[tuple[str, str, str, Any]] = []
        self.namespaces: list[str] = []

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None  # a GET carries its kind

    async def list(
        self, kind: str, namespace: str, *, selector: dict[str, Any] | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        out = []
        for (k, ns, _), obj in self.objects.items():
            if k != kind or ns != namespace:
                continue
            if selector and not client.match_labels(selector, (obj.get("metadata") or {}).get("labels")):
                continue
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            out.append(item)
        return out

    async def list_cluster(self, kind: str) -> list[dict[str, Any]]:
        return []

    async def pod_log(
        self, namespace: str, pod: str, container: str, *, tail_lines: int, previous: bool = False
    ) -> list[str]:
        self.log_reads.append((pod, container, previous))
        found = self.logs.get((pod, container, previous), [])
        if isinstance(found, Exception):
            raise found
        return list(found)[-tail_lines:]

    async def create(self, kind: str, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self.created.append((kind, namespace, copy.deepcopy(body)))
        return body

    async def create_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        self.namespaces.append(body["metadata"]["name"])
        return body

    async def delete_namespace(self, name: str) -> bool:
        return True

    async def patch(self, kind: str, namespace: str, name: str, patch: Any, patch_type: str, **_: Any) -> dict:
        self.patches.append((kind, namespace, name, patch))
        return self.objects.get((kind, namespace, name)) or {}

    async def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        return None


def terminating(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server shows it during its grace period after a delete."""
    out = copy.deepcopy(pod)
    out["metadata"]["deletionTimestamp"] = DELETED_AT
    out["metadata"]["deletionGracePeriodSeconds"] = 30
    return out


def revision(obj: dict[str, Any], number: int) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(number)
    return obj


def running(image: str = "") -> dict[str, Any]:
    return {"running": {"startedAt": "2026-11-21T09:59:40Z"}}


def crash_loop() -> dict[str, Any]:
    return {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}


def rolled_out(ns: str, name: str = "web") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict]]:
    """A Deployment just rolled to revision 3 (its new pod Ready) while the old revision's pod is Terminating
    in a crash loop, with the kubelet's BackOff Warning about it: (deployment, new pod, old pod, events)."""
    deploy = revision(factories.deployment(ns, name, "nginx:1.27", replicas=1, ready=1), 3)
    deploy["status"] = {
        "observedGeneration": 2,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    new_rs = revision(factories.replicaset(deploy, "5d8f7c9b6d"), 3)
    bad = copy.deepcopy(deploy)
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.277"
    old_rs = revision(factories.replicaset(bad, "7b9c6d5f4f"), 2)
    old_rs["spec"]["replicas"] = 0
    new_pod = factories.pod(new_rs, "k2x9z", state=running(), ready=True, phase="Running")
    old_pod = terminating(
        factories.pod(
            old_rs,
            "x8k2p",
            state=crash_loop(),
            last_state={"terminated": {"reason": "Error", "exitCode": 1}},
            restarts=4,
            phase="Running",
        )
    )
    back_off = factories.event(
        ns,
        f"{old_pod['metadata']['name']}.17a",
        kind="Pod",
        obj=old_pod["metadata"]["name"],
        reason="BackOff",
        message="Back-off restarting failed container",
        count=7,
    )
    back_off["involvedObject"]["uid"] = old_pod["metadata"]["uid"]
    back_off["metadata"]["uid"] = "uid-event-backoff"
    return deploy, new_pod, old_pod, [deploy, new_rs, old_rs, new_pod, old_pod, back_off]
