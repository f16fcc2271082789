"""The kubelet stand-in: runs each scheduled pod's containers through their lifecycle.

For every container it pulls the image (ErrImagePull / ImagePullBackOff with the
registry's error when the tag or repository does not exist, exponential
back-off; a ``FailedToRetrieveImagePullSecret`` warning naming the listed imagePullSecrets
that do not exist, and the pull still attempted: the catalog's public images need no
credentials), resolves ConfigMap/Secret references (CreateContainerConfigError, or
FailedMount for volumes; ``aegis.sim.podconfig``), starts the program as the
catalog describes it (``aegis.sim.programs``: its log lines, its real error when
a required env var is missing, OOMKilled, shell scripts via ``aegis.sim.shell``),
runs the probes against what the program serves (``aegis.sim.probes``; Unhealthy
events, liveness restarts), and restarts exited containers with CrashLoopBackOff
back-off. Init containers run first, in order, with the same rules
(``Init:Error``, ``Init:CrashLoopBackOff``, app containers waiting in
``PodInitializing``). A pod being deleted (``deletionTimestamp``) is stopped as a
kubelet stops it: each program gets SIGTERM and stops after its shutdown time
(a shell script as PID 1 ignores SIGTERM and takes the whole grace period), then
the pod is deleted with grace period 0. It keeps its state in ``aegis.sim.podstate``,
writes pod status built by ``aegis.sim.podstatus``, Events with the kubelet's
reasons and messages, and the containers' logs into an ``aegis.sim.logstore.LogStore``
(served by ``aegis.sim.nodes``' kubelet API and, in the emulator, PUT to ``/sim/v1/logs``).
An ordinary API client; run by ``aegis.sim.cluster`` (emulator) and
``aegis.sim.nodes`` (any API server).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from aegis.sim import (
    catalog,
    client,
    clock,
    controllers,
    events,
    logstore,
    podconfig,
    podstate,
    podstatus,
    probes,
    programs,
    shell,
)

logger = logging.getLogger("aegis.sim.kubelet")

# Moved to their own modules; still importable as ``kubelet.LogStore`` and ``kubelet.run_script``.
LogStore = logstore.LogStore
run_script = shell.run_script

BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
PULL_SECONDS_PER_MB = 0.02
SHOW_TERMINATED = 1.0  # how long an exited container shows "terminated" before CrashLoopBackOff
SHUTDOWN_SECONDS = 0.8  # how long a program that handles SIGTERM takes to stop (cluster seconds)
DEFAULT_GRACE = 30.0


def _wall() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


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
        logs: logstore.LogStore | None = None,
        push_logs: bool = True,
        owns_node: Callable[[str], bool] | None = None,
    ) -> None:
        """``push_logs``: PUT logs to the emulator's ``/sim/v1/logs``; ``owns_node``: which nodes are ours (all)."""
        self.api = api
        self.inf = informers
        self.clock = sim_clock
        self.catalog = images
        self.logs = logs if logs is not None else logstore.LogStore()
        self.push_logs = push_logs
        self.owns_node = owns_node
        self.pods: dict[str, podstate.PodRuntime] = {}
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

    def _runtime(self, pod: dict[str, Any], node: str) -> podstate.PodRuntime:
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            index = int(node.rsplit("-", 1)[-1]) if node.rsplit("-", 1)[-1].isdigit() else 9
            self._ips[node] = self._ips.get(node, 1) + 1
            addresses = ((self.inf["Node"].get(None, node) or {}).get("status") or {}).get("addresses") or []
            host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), f"172.18.0.{index + 1}")
            self.pods[uid] = podstate.PodRuntime(
                uid=uid,
                ip=f"10.244.{index}.{self._ips[node] % 250 + 2}",
                host_ip=host_ip,
                start_wall=_wall(),
                namespace=pod["metadata"]["namespace"],
                name=pod["metadata"]["name"],
            )
        return self.pods[uid]

    def _container(
        self, pod: dict[str, Any], runtime: podstate.PodRuntime, container: dict[str, Any], init: bool
    ) -> podstate.ContainerRuntime:
        rt = runtime.containers.get(container["name"])
        if rt is None or rt.image != container.get("image"):
            rt = podstate.ContainerRuntime(image=container.get("image", ""), init=init)
            runtime.containers[container["name"]] = rt
            if pod["spec"].get("initContainers"):
                rt.waiting = ("PodInitializing", "")
        return rt

    async def _sync(self, pod: dict[str, Any], node: str) -> None:
        runtime = self._runtime(pod, node)
        now = self.clock.now()
        recorder = self._events(node)
        missing_volume = podconfig.missing_volume(self.inf, pod)
        missing_pull = podconfig.missing_pull_secrets(self.inf, pod)
        if missing_pull and now - runtime.pull_secrets_reported_at >= 10:  # the kubelet says so on every pod sync
            runtime.pull_secrets_reported_at = now
            await recorder.record(
                pod,
                "Warning",
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({', '.join(missing_pull)}); "
                "attempting to pull the image may not succeed.",
            )
        # Init containers, one at a time, in order; the app containers wait until all have completed.
        initialized = True
        init_statuses = []
        for container in pod["spec"].get("initContainers") or []:
            rt = self._container(pod, runtime, container, init=True)
            if initialized and not rt.done and missing_volume is None:
                await self._step(pod, node, container, rt, runtime, now, recorder)
                if rt.run is None and rt.last_terminated is not None and rt.last_terminated.get("exitCode") == 0:
                    rt.done, rt.ready = True, True
            init_statuses.append(podstatus.container_status(pod, container, rt))
            initialized = initialized and rt.done
        statuses = []
        for container in pod["spec"].get("containers") or []:
            rt = self._container(pod, runtime, container, init=False)
            if missing_volume is None and initialized:
                await self._step(pod, node, container, rt, runtime, now, recorder)
            statuses.append(podstatus.container_status(pod, container, rt))
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
                    rt = runtime.containers[container["name"]]
                    init_statuses.append(podstatus.container_status(pod, container, rt))
            for container in pod["spec"].get("containers") or []:
                rt = self._container(pod, runtime, container, init=False)
                statuses.append(podstatus.container_status(pod, container, rt))
            await self._write_status(pod, runtime, statuses, init_statuses=init_statuses or None)
            await self._write_logs(pod, runtime)
            return
        await self._write_logs(pod, runtime)
        runtime.finished = True
        await self.api.delete(
            "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], grace_period=0, uid=pod["metadata"]["uid"]
        )

    # --- container -------------------------------------------------------------------------------

    async def _step(
        self,
        pod: dict[str, Any],
        node: str,
        container: dict[str, Any],
        rt: podstate.ContainerRuntime,
        runtime: podstate.PodRuntime,
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
        env, problem = podconfig.environment(self.inf, pod, container, runtime.ip)
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
        rt: podstate.ContainerRuntime,
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

    async def _start(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        rt: podstate.ContainerRuntime,
        env: dict[str, str],
        now: float,
        recorder: events.EventRecorder,
        image: str,
    ) -> None:
        _, entry, _ = self.catalog.resolve(image)
        files = podconfig.files(self.inf, pod, container)
        logs, duration, exit_code, reason = programs.outcome(entry, container, env, files)
        if rt.last_terminated is not None:
            rt.restarts += 1
        rt.run = podstate.Run(
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

    def _restarts(self, pod: dict[str, Any], rt: podstate.ContainerRuntime) -> bool:
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
        rt: podstate.ContainerRuntime,
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
        rt: podstate.ContainerRuntime,
        runtime: podstate.PodRuntime,
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
            ok, detail = probes.check(probe, container, run, runtime.ip, now)
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

    # --- status ----------------------------------------------------------------------------------

    async def _write_status(
        self,
        pod: dict[str, Any],
        runtime: podstate.PodRuntime,
        statuses: list[dict[str, Any]],
        sandbox: bool = True,
        init_statuses: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the pod's status if it changed; without a sandbox (volumes cannot mount) the pod has no IP yet."""
        old = pod.get("status") or {}
        status = podstatus.pod_status(pod, runtime, statuses, sandbox=sandbox, init_statuses=init_statuses)
        if any(old.get(key) != value for key, value in status.items()):
            await self.api.status("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], status)

    async def _write_logs(self, pod: dict[str, Any], runtime: podstate.PodRuntime) -> None:
        for name, rt in runtime.containers.items():
            log = logstore.container_log(rt)
            logs = {
                key: lines for key, lines in (("current", log.current), ("previous", log.previous)) if lines is not None
            }
            if runtime.posted_logs.get(name) != logs:
                runtime.posted_logs[name] = logs
                ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                self.logs.put(ns, pod_name, name, log)
                if self.push_logs:
                    await self.api.put_logs(ns, pod_name, name, logs)
