"""Pod status as the kubelet writes it: container states, phase, conditions, QoS class.

Pure functions of the pod spec and the kubelet stand-in's state
(``aegis.sim.podstate``): ``container_status`` for one (init) container,
``pod_status`` for the whole ``status`` (keeping unchanged conditions' transition
times), ``qos`` for ``qosClass``. Called by ``aegis.sim.kubelet``, which writes
the result when it differs from what the API server has.
"""

from __future__ import annotations

import datetime
from typing import Any

from aegis.sim import catalog, podstate


def _wall() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_status(pod: dict[str, Any], container: dict[str, Any], rt: podstate.ContainerRuntime) -> dict:
    """One entry of ``containerStatuses`` (or ``initContainerStatuses``)."""
    status: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": rt.done if rt.init else rt.ready,
        "started": rt.run is not None,
        "restartCount": rt.restarts,
        "lastState": {"terminated": rt.last_terminated} if rt.last_terminated and (rt.run or rt.waiting[0]) else {},
    }
    if rt.pulled:
        ref = catalog.parse_reference(container.get("image", ""))
        status["imageID"] = f"{ref.canonical}@sha256:{abs(hash(ref.full)):064x}"[:140]
    if rt.run is not None:
        status["state"] = {"running": {"startedAt": rt.run.started_wall}}
        status["containerID"] = rt.run.container_id
    elif rt.exited_at is not None and not rt.waiting[0] and rt.last_terminated:
        status["state"] = {"terminated": rt.last_terminated}
        status["containerID"] = rt.last_terminated.get("containerID")
        # Exited, not restarted yet: the instance before is the last state (``--previous`` shows it).
        status["lastState"] = {"terminated": rt.older_terminated} if rt.older_terminated else {}
    else:
        reason = rt.waiting[0] or "ContainerCreating"
        if reason == "ContainerCreating" and pod["spec"].get("initContainers"):
            reason = "PodInitializing"  # the kubelet's default waiting reason in a pod with init containers
        waiting = {"reason": reason}
        if rt.waiting[1]:
            waiting["message"] = rt.waiting[1]
        status["state"] = {"waiting": waiting}
    return status


def pod_status(
    pod: dict[str, Any],
    runtime: podstate.PodRuntime,
    statuses: list[dict[str, Any]],
    sandbox: bool = True,
    init_statuses: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The pod's ``status``; without a sandbox (volumes cannot mount) the pod has no IP yet."""
    old = pod.get("status") or {}
    init_statuses = init_statuses or []
    initialized = all(s["ready"] for s in init_statuses)
    all_ready = bool(statuses) and all(s["ready"] for s in statuses) and initialized
    ever_started = any(s.get("started") or s["lastState"] or "terminated" in s["state"] for s in statuses)
    phase = "Running" if ever_started else "Pending"
    init_failed = pod["spec"].get("restartPolicy") == "Never" and any(
        (s["state"].get("terminated") or {}).get("exitCode") for s in init_statuses
    )
    if init_failed:
        phase = "Failed"
    elif pod["spec"].get("restartPolicy") in ("Never", "OnFailure") and all(
        "terminated" in s["state"] for s in statuses
    ):
        codes = [s["state"]["terminated"].get("exitCode", 0) for s in statuses]
        phase = "Succeeded" if not any(codes) else ("Failed" if pod["spec"]["restartPolicy"] == "Never" else "Running")
    previous = {c.get("type"): c for c in old.get("conditions") or []}

    def condition(kind: str, value: bool, reason: str | None = None) -> dict[str, Any]:
        status = "True" if value else "False"
        before = previous.get(kind)
        if before and before.get("status") == status:
            return before
        out = {"type": kind, "status": status, "lastTransitionTime": _wall()}
        if reason and not value:
            out["reason"] = reason
        return out

    not_ready = [s["name"] for s in statuses if not s["ready"]]
    conditions = [
        condition("PodReadyToStartContainers", sandbox),
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("Ready", all_ready, "ContainersNotReady"),
        condition("ContainersReady", all_ready, "ContainersNotReady"),
        previous.get("PodScheduled") or {"type": "PodScheduled", "status": "True"},
    ]
    for item in conditions:
        if item["type"] in ("Ready", "ContainersReady") and item["status"] == "False":
            item["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
        if item["type"] == "Initialized" and item["status"] == "False":
            pending = [s["name"] for s in init_statuses if not s["ready"]]
            item["message"] = f"containers with incomplete status: [{' '.join(pending)}]"
    status = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": runtime.host_ip,
        "podIP": runtime.ip if sandbox else None,
        "podIPs": [{"ip": runtime.ip}] if sandbox else None,
        "startTime": old.get("startTime") or runtime.start_wall,
        "qosClass": qos(pod),
        "containerStatuses": statuses,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    return status


def qos(pod: dict[str, Any]) -> str:
    """The pod's QoS class from its containers' requests and limits."""
    containers = pod["spec"].get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == (r.get("limits") or {}).get(k)
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
