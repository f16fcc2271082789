"""The kubelet stand-in: decides each scheduled pod's fate from the image catalog.

For every container it pulls the image (ErrImagePull / ImagePullBackOff with the
registry's error when the tag or repository does not exist, exponential
back-off), resolves ConfigMap/Secret references (CreateContainerConfigError, or
FailedMount for volumes), starts the program as the catalog describes it (its log
lines; an exit with its real error when a required env var is missing; OOMKilled
when it uses more memory than its limit; shell scripts for busybox/alpine),
runs the probes against the ports and HTTP paths the program really serves
(Unhealthy events, liveness restarts), and restarts exited containers with
CrashLoopBackOff back-off. Init containers run first, in order, with the same
rules (``Init:Error``, ``Init:CrashLoopBackOff``, app containers waiting in
``PodInitializing``). A pod being deleted (``deletionTimestamp``) is stopped as a
kubelet stops it: each program gets SIGTERM and stops after its shutdown time
(a shell script as PID 1 ignores SIGTERM and takes the whole grace period), then
the pod is deleted with grace period 0. It writes pod status (phase, conditions,
container states, restart counts, last termination), Events with the kubelet's
reasons and messages, and the containers' logs into a ``LogStore`` (served by
``aegis.sim.nodes``' kubelet API and, in the emulator, PUT to ``/sim/v1/logs``).
An ordinary API client; run by ``aegis.sim.cluster`` (emulator) and
``aegis.sim.nodes`` (any API server).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from aegis import quantity
from aegis.sim import catalog, client, clock, controllers, events

logger = logging.getLogger("aegis.sim.kubelet")

BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
PULL_SECONDS_PER_MB = 0.02
SHOW_TERMINATED = 1.0  # how long an exited container shows "terminated" before CrashLoopBackOff
FOREVER = math.inf
SHUTDOWN_SECONDS = 0.8  # how long a program that handles SIGTERM takes to stop (cluster seconds)
DEFAULT_GRACE = 30.0


def _wall() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


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
    uid: str
    ip: str
    host_ip: str
    start_wall: str
    namespace: str = ""
    name: str = ""
    containers: dict[str, ContainerRuntime] = dataclasses.field(default_factory=dict)
    mount_reported_at: float = -1e9
    posted_logs: dict[str, Any] = dataclasses.field(default_factory=dict)
    finished: bool = False  # deleted with grace period 0; waiting for it to leave the cache


@dataclasses.dataclass
class ContainerLog:
    """The log of one container: its current instance and the one before (``--previous``)."""

    current: list[str] | None = None
    previous: list[str] | None = None
    current_started: str = ""
    previous_started: str = ""


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


class Kubelet:
    """Runs every pod that is bound to a node."""

    component = "kubelet"

    def __init__(
        self,
        api: client.SimClient,
        informers: controllers.Informers,
        sim_clock: clock.SimClock,
        images: catalog.Catalog,
        *,
        logs: LogStore | None = None,
        push_logs: bool = True,
        owns_node: Callable[[str], bool] | None = None,
    ) -> None:
        """``push_logs``: PUT logs to the emulator's ``/sim/v1/logs``; ``owns_node``: which nodes are ours (all)."""
        self.api = api
        self.inf = informers
        self.clock = sim_clock
        self.catalog = images
        self.logs = logs if logs is not None else LogStore()
        self.push_logs = push_logs
        self.owns_node = owns_node
        self.pods: dict[str, PodRuntime] = {}
        self.node_images: dict[str, set[str]] = {}
        self._ips: dict[str, int] = {}
        self.recorders: dict[str, events.EventRecorder] = {}

    def _events(self, node: str) -> events.EventRecorder:
        if node not in self.recorders:
            self.recorders[node] = events.EventRecorder(self.api, "kubelet", host=node)
        return self.recorders[node]

    async def reconcile(self) -> None:
        seen = set()
        for pod in self.inf["Pod"].items():
            node = pod["spec"].get("nodeName")
            if not node or (self.owns_node is not None and not self.owns_node(node)):
                continue
            seen.add(pod["metadata"]["uid"])
            try:
                if controllers.alive(pod):
                    await self._sync(pod, node)
                else:
                    await self._terminate(pod, node)
            except client.ApiError as exc:
                logger.debug("kubelet %s: %s", pod["metadata"]["name"], exc)
        for uid in list(self.pods):
            if uid not in seen:
                gone = self.pods.pop(uid)
                if not any(p.namespace == gone.namespace and p.name == gone.name for p in self.pods.values()):
                    self.logs.forget(gone.namespace, gone.name)

    # --- pod ---------------------------------------------------------------------------------------

    def _runtime(self, pod: dict[str, Any], node: str) -> PodRuntime:
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            index = int(node.rsplit("-", 1)[-1]) if node.rsplit("-", 1)[-1].isdigit() else 9
            self._ips[node] = self._ips.get(node, 1) + 1
            addresses = ((self.inf["Node"].get(None, node) or {}).get("status") or {}).get("addresses") or []
            host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), f"172.18.0.{index + 1}")
            self.pods[uid] = PodRuntime(
                uid=uid,
                ip=f"10.244.{index}.{self._ips[node] % 250 + 2}",
                host_ip=host_ip,
                start_wall=_wall(),
                namespace=pod["metadata"]["namespace"],
                name=pod["metadata"]["name"],
            )
        return self.pods[uid]

    def _container(
        self, pod: dict[str, Any], runtime: PodRuntime, container: dict[str, Any], init: bool
    ) -> ContainerRuntime:
        rt = runtime.containers.get(container["name"])
        if rt is None or rt.image != container.get("image"):
            rt = runtime.containers[container["name"]] = ContainerRuntime(image=container.get("image", ""), init=init)
            if pod["spec"].get("initContainers"):
                rt.waiting = ("PodInitializing", "")
        return rt

    async def _sync(self, pod: dict[str, Any], node: str) -> None:
        runtime = self._runtime(pod, node)
        now = self.clock.now()
        recorder = self._events(node)
        missing_volume = self._missing_volume(pod)
        # Init containers, one at a time, in order; the app containers wait until all have completed.
        initialized = True
        init_statuses = []
        for container in pod["spec"].get("initContainers") or []:
            rt = self._container(pod, runtime, container, init=True)
            if initialized and not rt.done and missing_volume is None:
                await self._step(pod, node, container, rt, runtime, now, recorder)
                if rt.run is None and rt.last_terminated is not None and rt.last_terminated.get("exitCode") == 0:
                    rt.done, rt.ready = True, True
            init_statuses.append(self._container_status(pod, container, rt))
            initialized = initialized and rt.done
        statuses = []
        for container in pod["spec"].get("containers") or []:
            rt = self._container(pod, runtime, container, init=False)
            if missing_volume is None and initialized:
                await self._step(pod, node, container, rt, runtime, now, recorder)
            statuses.append(self._container_status(pod, container, rt))
        if missing_volume is not None and now - runtime.mount_reported_at >= 10:
            runtime.mount_reported_at = now
            await recorder.record(pod, "Warning", "FailedMount", missing_volume)
        await self._write_status(pod, runtime, statuses, sandbox=missing_volume is None, init_statuses=init_statuses)
        await self._write_logs(pod, runtime)

    async def _terminate(self, pod: dict[str, Any], node: str) -> None:
        """Graceful deletion: stop every running container, keep reporting status, then delete with grace 0."""
        runtime = self._runtime(pod, node)
        if runtime.finished:
            return
        now = self.clock.now()
        recorder = self._events(node)
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        grace = float(grace if grace is not None else pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE))
        every = list(pod["spec"].get("initContainers") or []) + list(pod["spec"].get("containers") or [])
        specs = {c["name"]: c for c in every}
        running = False
        for name, rt in runtime.containers.items():
            rt.ready = False
            run = rt.run
            if run is None:
                continue
            if rt.stop_at is None:
                shutdown = grace if run.ignores_sigterm else min(grace, SHUTDOWN_SECONDS)
                rt.stop_at = min(now + shutdown, run.exit_at)
                await recorder.record(pod, "Normal", "Killing", f"Stopping container {name}")
            if now >= rt.stop_at:
                if now >= run.exit_at:  # the program ended by itself first
                    code, reason = run.exit_code, run.reason
                elif run.ignores_sigterm:
                    code, reason = 137, "Error"  # SIGKILL at the end of the grace period
                else:
                    code, reason = 0, "Completed"
                if name in specs:
                    await self._exited(pod, specs[name], rt, now, recorder, reason=reason, code=code)
                else:
                    rt.run = None
            else:
                running = True
        if running:
            statuses, init_statuses = [], []
            for container in pod["spec"].get("initContainers") or []:
                if container["name"] in runtime.containers:
                    init_statuses.append(self._container_status(pod, container, runtime.containers[container["name"]]))
            for container in pod["spec"].get("containers") or []:
                rt = self._container(pod, runtime, container, init=False)
                statuses.append(self._container_status(pod, container, rt))
            await self._write_status(pod, runtime, statuses, init_statuses=init_statuses or None)
            await self._write_logs(pod, runtime)
            return
        await self._write_logs(pod, runtime)
        runtime.finished = True
        await self.api.delete(
            "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], grace_period=0, uid=pod["metadata"]["uid"]
        )

    def _missing_volume(self, pod: dict[str, Any]) -> str | None:
        ns = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            for key, kind, what in (("configMap", "ConfigMap", "configmap"), ("secret", "Secret", "secret")):
                source = volume.get(key)
                if source is None or source.get("optional"):
                    continue
                name = source.get("name") or source.get("secretName")
                if self.inf[kind].get(ns, name) is None:
                    return f'MountVolume.SetUp failed for volume "{volume["name"]}" : {what} "{name}" not found'
        return None

    # --- container -------------------------------------------------------------------------------

    async def _step(
        self,
        pod: dict[str, Any],
        node: str,
        container: dict[str, Any],
        rt: ContainerRuntime,
        runtime: PodRuntime,
        now: float,
        recorder: events.EventRecorder,
    ) -> None:
        image = container.get("image", "")
        if not rt.pulled:
            await self._pull(pod, node, container, rt, now, recorder)
            if not rt.pulled:
                return
        if rt.run is not None:
            if now >= rt.run.exit_at:
                await self._exited(pod, container, rt, now, recorder)
            else:
                await self._probe(pod, container, rt, runtime, now, recorder)
            return
        if rt.exited_at is not None and now - rt.exited_at < SHOW_TERMINATED:
            return
        if rt.exited_at is not None and not self._restarts(pod, rt):
            return
        if now < rt.next_try:
            if rt.last_terminated is not None and rt.waiting[0] != "CrashLoopBackOff":
                delay = rt.next_try - (rt.exited_at or now)
                rt.waiting = (
                    "CrashLoopBackOff",
                    f"back-off {_duration(delay)} restarting failed container="
                    f"{container['name']} pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"
                    f"({pod['metadata']['uid']})",
                )
                await recorder.record(
                    pod,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container "
                    f"{container['name']} in pod {pod['metadata']['name']}_"
                    f"{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                )
            return
        env, problem = self._environment(pod, container)
        if problem is not None:
            rt.waiting = ("CreateContainerConfigError", problem)
            if rt.config_reported != problem or now >= rt.next_try:
                rt.config_reported = problem
                await recorder.record(pod, "Warning", "Failed", f"Error: {problem}")
            rt.next_try = now + 10
            return
        rt.config_reported = ""
        await self._start(pod, container, rt, env, now, recorder, image)

    async def _pull(
        self,
        pod: dict[str, Any],
        node: str,
        container: dict[str, Any],
        rt: ContainerRuntime,
        now: float,
        recorder: events.EventRecorder,
    ) -> None:
        image = container.get("image", "")
        if rt.pull_done_at >= 0:
            if now >= rt.pull_done_at:
                rt.pulled = True
                self.node_images.setdefault(node, set()).add(image)
            return
        if rt.backoff_at is not None and now >= rt.backoff_at and rt.waiting[0] == "ErrImagePull":
            rt.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            await recorder.record(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
            await recorder.record(pod, "Warning", "Failed", "Error: ImagePullBackOff")
        if now < rt.next_try:
            return
        _, entry, error = self.catalog.resolve(image)
        policy = container.get("imagePullPolicy", "IfNotPresent")
        if entry is not None and policy != "Always" and image in self.node_images.get(node, set()):
            rt.pull_done_at = now
            rt.pulled = True
            await recorder.record(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine')
            return
        if policy == "Never":
            rt.waiting = ("ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never')
            rt.next_try = now + BACKOFF_MAX
            await recorder.record(pod, "Warning", "ErrImageNeverPull", rt.waiting[1])
            return
        await recorder.record(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        if error is not None:
            rt.pull_failures += 1
            delay = min(BACKOFF_START * 2 ** (rt.pull_failures - 1), BACKOFF_MAX)
            rt.waiting = ("ErrImagePull", error)
            rt.next_try = now + delay
            rt.backoff_at = now + 1.0
            await recorder.record(pod, "Warning", "Failed", f'Failed to pull image "{image}": {error}')
            await recorder.record(pod, "Warning", "Failed", "Error: ErrImagePull")
            return
        assert entry is not None
        seconds = max(0.3, entry.size / 1_000_000 * PULL_SECONDS_PER_MB)
        rt.pull_done_at = now + seconds
        rt.waiting = ("ContainerCreating", "")
        await recorder.record(
            pod,
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in {seconds:.3f}s '
            f"({seconds:.3f}s including waiting). Image size: {entry.size} bytes.",
        )

    def _environment(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """The container's env as the program would see it, or the CreateContainerConfigError text."""
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            for key, kind, what in (("configMapRef", "ConfigMap", "configmap"), ("secretRef", "Secret", "secret")):
                ref = source.get(key)
                if ref is None:
                    continue
                obj = self.inf[kind].get(ns, ref.get("name"))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    return env, f'{what} "{ref.get("name")}" not found'
                for data_key, value in _data(obj).items():
                    env[(source.get("prefix") or "") + data_key] = value
        for item in container.get("env") or []:
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = _DEPENDENT.sub(
                    lambda m: env.get(m.group(1), m.group(0)), str(item.get("value", ""))
                )
                continue
            for key, kind, what in (
                ("configMapKeyRef", "ConfigMap", "configmap"),
                ("secretKeyRef", "Secret", "secret"),
            ):
                ref = source.get(key)
                if ref is None:
                    continue
                obj = self.inf[kind].get(ns, ref.get("name"))
                data = _data(obj) if obj is not None else {}
                if obj is None and not ref.get("optional"):
                    return env, f'{what} "{ref.get("name")}" not found'
                if obj is not None and ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    return env, f"couldn't find key {ref.get('key')} in {kind} {ns}/{ref.get('name')}"
                if ref.get("key") in data:
                    env[item["name"]] = data[ref["key"]]
            if "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath", "")
                env[item["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": ns,
                    "status.podIP": self.pods[pod["metadata"]["uid"]].ip,
                    "spec.nodeName": pod["spec"].get("nodeName", ""),
                }.get(path, "")
        return env, None

    def _files(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """Files the container sees from ConfigMap and Secret volumes."""
        ns = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        files: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name")) or {}
            for key, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                if key in volume:
                    obj = self.inf[kind].get(ns, volume[key].get("name") or volume[key].get("secretName"))
                    for data_key, value in (_data(obj) if obj else {}).items():
                        files[f"{mount['mountPath'].rstrip('/')}/{data_key}"] = value
        return files

    async def _start(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        rt: ContainerRuntime,
        env: dict[str, str],
        now: float,
        recorder: events.EventRecorder,
        image: str,
    ) -> None:
        _, entry, _ = self.catalog.resolve(image)
        logs, duration, exit_code = self._program(entry, container, env, self._files(pod, container))
        memory = entry.memory if entry else 1 << 20
        if entry and entry.memory_from_args:
            memory = max(memory, _memory_arg(container, entry.memory_from_args) or 0)
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        reason = "Completed" if exit_code == 0 else "Error"
        if limit is not None and memory > quantity.parse(limit):
            duration, exit_code, reason = min(duration, 1.0), 137, "OOMKilled"
            logs = logs[:1]
        elif limit is not None and entry is not None and entry.memory_growth:
            # A leak: killed when the working set grows past the limit.
            reach = float(quantity.parse(limit) - memory) / entry.memory_growth
            if reach < duration:
                duration, exit_code, reason = reach, 137, "OOMKilled"
        if rt.last_terminated is not None:
            rt.restarts += 1
        rt.run = Run(
            started=now,
            started_wall=_wall(),
            exit_at=now + duration,
            exit_code=exit_code,
            reason=reason,
            logs=logs,
            ready_at=now + (entry.startup if entry else 0),
            image=entry,
            container_id=f"containerd://{pod['metadata']['uid'].replace('-', '')}{rt.restarts:04d}",
            ignores_sigterm=bool(entry is not None and entry.shell),
        )
        rt.stop_at = None
        rt.exited_at = None
        rt.waiting = ("", "")
        rt.ready = False
        rt.started_probe_ok = "startupProbe" not in container
        rt.probe_fail, rt.probe_ok, rt.probe_last = {}, {}, {}
        await recorder.record(pod, "Normal", "Created", f"Created container: {container['name']}")
        await recorder.record(pod, "Normal", "Started", f"Started container {container['name']}")

    def _program(
        self, entry: catalog.Image | None, container: dict[str, Any], env: dict[str, str], files: dict[str, str]
    ) -> tuple[list[str], float, int]:
        """(log lines, run time, exit code) of the container's program."""
        command = list(container.get("command") or [])
        args = list(container.get("args") or [])
        if entry is not None and entry.shell:
            words = command + args
            if len(words) >= 3 and words[0] in ("sh", "/bin/sh", "ash", "bash", "/bin/bash") and words[1] == "-c":
                return run_script(words[2], env, files)
            if not words or words[0] in ("sh", "/bin/sh"):
                return [], 0.0, 0  # an interactive shell without a terminal exits at once
            return run_script(" ".join(shlex.quote(w) for w in words), env, files)
        if entry is not None:
            for requirement in entry.requires_env:
                if not any(env.get(name) for name in requirement.any_of):
                    return list(requirement.logs), 0.5, requirement.exit_code
            version = container.get("image", "").rsplit(":", 1)[-1]
            return [line.replace("{version}", version) for line in entry.logs], FOREVER, 0
        return [], FOREVER, 0

    def _restarts(self, pod: dict[str, Any], rt: ContainerRuntime) -> bool:
        policy = pod["spec"].get("restartPolicy", "Always")
        if rt.init:  # a failed init container is retried unless the pod never restarts
            return policy != "Never" and bool(rt.last_terminated and rt.last_terminated.get("exitCode"))
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return bool(rt.last_terminated and rt.last_terminated.get("exitCode"))
        return False

    async def _exited(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        rt: ContainerRuntime,
        now: float,
        recorder: events.EventRecorder,
        *,
        reason: str | None = None,
        code: int | None = None,
    ) -> None:
        run = rt.run
        assert run is not None
        previous = rt.last_terminated
        rt.last_terminated = {
            "exitCode": run.exit_code if code is None else code,
            "reason": reason or run.reason,
            "startedAt": run.started_wall,
            "finishedAt": _wall(),
            "containerID": run.container_id,
        }
        rt.older_logs, rt.older_started, rt.older_terminated = rt.previous_logs, rt.previous_started, previous
        rt.previous_logs = list(run.logs)
        rt.previous_started = run.started_wall
        rt.run = None
        rt.ready = False
        rt.exited_at = now
        lived = now - run.started
        rt.crashes = 1 if lived > 600 else rt.crashes + 1
        # The first restart is immediate; then 10s, 20s, 40s... up to 5 minutes, as the kubelet does.
        delay = 0.0 if rt.crashes == 1 else min(BACKOFF_START * 2 ** (rt.crashes - 2), BACKOFF_MAX)
        rt.next_try = now + max(delay, SHOW_TERMINATED)
        rt.waiting = ("", "")

    async def _probe(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        rt: ContainerRuntime,
        runtime: PodRuntime,
        now: float,
        recorder: events.EventRecorder,
    ) -> None:
        run = rt.run
        assert run is not None
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            if kind != "startupProbe" and not rt.started_probe_ok:
                continue
            if kind == "startupProbe" and rt.started_probe_ok:
                continue
            period = float(probe.get("periodSeconds", 10))
            # The prober's first run comes a moment after the container starts (at most one period).
            if now < run.started + float(probe.get("initialDelaySeconds", 0)) + min(period, 1.0):
                continue
            if now - rt.probe_last.get(kind, -1e9) < period:
                continue
            rt.probe_last[kind] = now
            ok, detail = self._check(probe, container, run, runtime, now)
            label = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}[kind]
            if ok:
                rt.probe_fail[kind] = 0
                rt.probe_ok[kind] = rt.probe_ok.get(kind, 0) + 1
                if kind == "startupProbe":
                    rt.started_probe_ok = True
                if kind == "readinessProbe" and rt.probe_ok[kind] >= int(probe.get("successThreshold", 1)):
                    rt.ready = True
                continue
            rt.probe_ok[kind] = 0
            rt.probe_fail[kind] = rt.probe_fail.get(kind, 0) + 1
            await recorder.record(pod, "Warning", "Unhealthy", f"{label} probe failed: {detail}")
            if rt.probe_fail[kind] >= int(probe.get("failureThreshold", 3)):
                if kind == "readinessProbe":
                    rt.ready = False
                else:
                    await recorder.record(
                        pod,
                        "Normal",
                        "Killing",
                        f"Container {container['name']} failed {label.lower()} probe, will be restarted",
                    )
                    await self._exited(pod, container, rt, now, recorder, reason="Error", code=137)
                    return
        if "readinessProbe" not in container and rt.started_probe_ok:
            rt.ready = True

    def _check(
        self, probe: dict[str, Any], container: dict[str, Any], run: Run, runtime: PodRuntime, now: float
    ) -> tuple[bool, str]:
        listening = now >= run.ready_at and run.image is not None

        def port_of(value: Any) -> int | None:
            if isinstance(value, int):
                return value
            return next((p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == value), None)

        if "httpGet" in probe:
            http = probe["httpGet"]
            port = port_of(http.get("port"))
            path = http.get("path", "/")
            scheme = str(http.get("scheme", "HTTP")).lower()
            url = f"{scheme}://{runtime.ip}:{port}{path}"
            listener = run.image.listener(port) if (listening and run.image and port) else None
            if listener is None:
                return False, f'Get "{url}": dial tcp {runtime.ip}:{port}: connect: connection refused'
            if listener.http is None:
                return False, f'Get "{url}": net/http: HTTP/1.x transport connection broken: malformed HTTP response'
            if not listener.serves(path):
                return False, "HTTP probe failed with statuscode: 404"
            return True, ""
        if "tcpSocket" in probe:
            port = port_of(probe["tcpSocket"].get("port"))
            if listening and run.image and port and run.image.listener(port):
                return True, ""
            return False, f"dial tcp {runtime.ip}:{port}: connect: connection refused"
        if "grpc" in probe:
            port = probe["grpc"].get("port")
            if listening and run.image and run.image.listener(int(port or 0)):
                return True, ""
            return False, f'timeout: failed to connect service "{runtime.ip}:{port}" within 1s'
        return True, ""  # exec probes: the emulator cannot run commands; they pass

    # --- status ----------------------------------------------------------------------------------

    def _container_status(self, pod: dict[str, Any], container: dict[str, Any], rt: ContainerRuntime) -> dict:
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

    async def _write_status(
        self,
        pod: dict[str, Any],
        runtime: PodRuntime,
        statuses: list[dict[str, Any]],
        sandbox: bool = True,
        init_statuses: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the pod's status; without a sandbox (volumes cannot mount) the pod has no IP yet."""
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
            phase = (
                "Succeeded" if not any(codes) else ("Failed" if pod["spec"]["restartPolicy"] == "Never" else "Running")
            )
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
            "qosClass": _qos(pod),
            "containerStatuses": statuses,
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if any(old.get(key) != value for key, value in status.items()):
            await self.api.status("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], status)

    async def _write_logs(self, pod: dict[str, Any], runtime: PodRuntime) -> None:
        for name, rt in runtime.containers.items():
            logs: dict[str, list[str]] = {}
            if rt.run is not None:
                logs["current"] = list(rt.run.logs)
            elif rt.previous_logs is not None:  # exited or in back-off: `kubectl logs` shows the last instance
                logs["current"] = list(rt.previous_logs)
            exited = rt.run is None and not rt.waiting[0]
            if rt.previous_logs is not None and not exited:
                logs["previous"] = list(rt.previous_logs)
            elif exited and rt.older_logs is not None:
                logs["previous"] = list(rt.older_logs)
            if runtime.posted_logs.get(name) != logs:
                runtime.posted_logs[name] = logs
                ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                self.logs.put(
                    ns,
                    pod_name,
                    name,
                    ContainerLog(
                        current=logs.get("current"),
                        previous=logs.get("previous"),
                        current_started=rt.run.started_wall if rt.run is not None else rt.previous_started,
                        previous_started=rt.older_started if exited else rt.previous_started,
                    ),
                )
                if self.push_logs:
                    await self.api.put_logs(ns, pod_name, name, logs)


def _qos(pod: dict[str, Any]) -> str:
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


def _data(obj: dict[str, Any] | None) -> dict[str, str]:
    if obj is None:
        return {}
    out = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if obj.get("kind") == "Secret":
        out = {}
        for key, value in (obj.get("data") or {}).items():
            try:
                out[key] = base64.b64decode(value).decode("utf-8", "replace")
            except (ValueError, TypeError):
                out[key] = ""
        out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return out


def _memory_arg(container: dict[str, Any], flag: str) -> int | None:
    words = list(container.get("command") or []) + list(container.get("args") or [])
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            value = words[index + 1]
            units = {"K": "Ki", "M": "Mi", "G": "Gi", "k": "Ki", "m": "Mi", "g": "Gi"}
            if value and value[-1] in units:
                value = value[:-1] + units[value[-1]]
            try:
                return int(quantity.parse(value))
            except ValueError:
                return None
    return None


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_DEPENDENT = re.compile(r"\$\((\w+)\)")  # Kubernetes' $(VAR) references between env vars


def _expand(text: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def run_script(script: str, env: dict[str, str], files: dict[str, str]) -> tuple[list[str], float, int]:
    """A tiny ``sh -c``: echo, printf, sleep, exit, cat, true/false, loops that never end, ``&&``/``||``."""
    logs: list[str] = []
    elapsed = 0.0
    status = 0
    if re.search(r"while\s+(true|:)", script) or "tail -f /dev/null" in script or "sleep infinity" in script:
        forever = True
    else:
        forever = False
    for statement in re.split(r"[;\n]", script):
        chain = re.split(r"(&&|\|\|)", statement)
        run_next = True
        for part in chain:
            part = part.strip()
            if part == "&&":
                run_next = status == 0
                continue
            if part == "||":
                run_next = status != 0
                continue
            if not part or not run_next or part.startswith("#"):
                continue
            try:
                words = shlex.split(_expand(part, env))
            except ValueError:
                words = part.split()
            if not words:
                continue
            command, rest = words[0], words[1:]
            if command in ("do", "done", "then", "fi", "while", "if"):
                continue
            if command == "echo":
                logs.append(" ".join(w for w in rest if w != "-n"))
                status = 0
            elif command == "printf":
                logs.append(" ".join(rest).replace("\\n", ""))
                status = 0
            elif command == "sleep":
                try:
                    elapsed += float(rest[0].rstrip("s")) if rest else 0
                except ValueError:
                    return logs, FOREVER, 0
                status = 0
            elif command == "exit":
                code = int(rest[0]) if rest and rest[0].lstrip("-").isdigit() else status
                return logs, elapsed, code
            elif command == "cat":
                status = 0
                for path in rest:
                    if path in files:
                        logs.extend(files[path].splitlines())
                    else:
                        logs.append(f"cat: can't open '{path}': No such file or directory")
                        status = 1
            elif command in ("true", ":"):
                status = 0
            elif command == "false":
                status = 1
            elif command in ("tail", "wait"):
                status = 0
            elif command == "printenv":
                status = 0 if (not rest or rest[0] in env) else 1
                if rest and rest[0] in env:
                    logs.append(env[rest[0]])
            elif command in ("test", "["):
                status = 0
            else:
                logs.append(f"sh: {command}: not found")
                status = 127
    return logs, FOREVER if forever else elapsed, status
