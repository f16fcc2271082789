"""The kubelet stand-in's record of what runs: pods, their containers and each started instance.

Plain state, no behaviour: ``aegis.sim.kubelet`` creates and advances it,
``aegis.sim.podstatus`` reads it into the pod's status, ``aegis.sim.logstore``
into the containers' logs, and ``aegis.sim.probes`` checks a running instance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aegis.sim import catalog


@dataclasses.dataclass
class Run:
    """One started instance of a container."""

    started: float
    started_wall: str
    exit_at: float
    exit_code: int
    reason: str
    logs: list[str]
    ready_at: float
    image: catalog.Image | None
    container_id: str
    ignores_sigterm: bool = False  # a shell script as PID 1


@dataclasses.dataclass
class ContainerRuntime:
    """What the kubelet knows of one container of a pod: pull, waiting reason, runs, restarts, probes."""

    image: str
    pulled: bool = False
    pull_done_at: float = -1.0
    pull_failures: int = 0
    waiting: tuple[str, str] = ("ContainerCreating", "")
    next_try: float = 0.0
    backoff_at: float | None = None  # when ErrImagePull turns into ImagePullBackOff
    restarts: int = 0
    crashes: int = 0
    run: Run | None = None
    exited_at: float | None = None
    last_terminated: dict[str, Any] | None = None
    previous_logs: list[str] | None = None
    older_logs: list[str] | None = None  # the instance before ``previous_logs`` (``--previous`` while exited)
    older_terminated: dict[str, Any] | None = None
    older_started: str = ""
    ready: bool = False
    started_probe_ok: bool = False
    probe_fail: dict[str, int] = dataclasses.field(default_factory=dict)
    probe_ok: dict[str, int] = dataclasses.field(default_factory=dict)
    probe_last: dict[str, float] = dataclasses.field(default_factory=dict)
    config_reported: str = ""
    init: bool = False
    done: bool = False  # an init container that completed
    stop_at: float | None = None  # when a stopping container's program is gone
    current_started: str = ""
    previous_started: str = ""


@dataclasses.dataclass
class PodRuntime:
    """What the kubelet knows of one pod (by uid): its addresses and its containers."""

    uid: str
    ip: str
    host_ip: str
    start_wall: str
    namespace: str = ""
    name: str = ""
    containers: dict[str, ContainerRuntime] = dataclasses.field(default_factory=dict)
    mount_reported_at: float = -1e9
    pull_secrets_reported_at: float = -1e9
    posted_logs: dict[str, Any] = dataclasses.field(default_factory=dict)
    finished: bool = False  # deleted with grace period 0; waiting for it to leave the cache
