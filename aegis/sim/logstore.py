"""Container logs of the emulated pods, by (namespace, pod, container).

``container_log`` says which instances' lines ``kubectl logs`` (and ``--previous``)
shows for a container in its present state; ``LogStore`` keeps them. Written by
the kubelet stand-in (``aegis.sim.kubelet``) as containers start, exit and
restart; read by the kubelet API in ``aegis.sim.nodes`` (``/containerLogs``).
"""

from __future__ import annotations

import dataclasses

from aegis.sim import podstate


@dataclasses.dataclass
class ContainerLog:
    """The log of one container: its current instance and the one before (``--previous``)."""

    current: list[str] | None = None
    previous: list[str] | None = None
    current_started: str = ""
    previous_started: str = ""


def container_log(rt: podstate.ContainerRuntime) -> ContainerLog:
    """The container's log now: the running (or last exited) instance, and the one before it."""
    current: list[str] | None = None
    previous: list[str] | None = None
    if rt.run is not None:
        current = list(rt.run.logs)
    elif rt.previous_logs is not None:  # exited or in back-off: `kubectl logs` shows the last instance
        current = list(rt.previous_logs)
    exited = rt.run is None and not rt.waiting[0]
    if rt.previous_logs is not None and not exited:
        previous = list(rt.previous_logs)
    elif exited and rt.older_logs is not None:
        previous = list(rt.older_logs)
    return ContainerLog(
        current=current,
        previous=previous,
        current_started=rt.run.started_wall if rt.run is not None else rt.previous_started,
        previous_started=rt.older_started if exited else rt.previous_started,
    )


class LogStore:
    """Container logs by (namespace, pod, container), written by the kubelet, read by the kubelet API."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], ContainerLog] = {}

    def put(self, namespace: str, pod: str, container: str, log: ContainerLog) -> None:
        self.entries[(namespace, pod, container)] = log

    def get(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        return self.entries.get((namespace, pod, container))

    def forget(self, namespace: str, pod: str) -> None:
        for key in [k for k in self.entries if k[:2] == (namespace, pod)]:
            del self.entries[key]
