"""The whole emulated cluster: API server, control plane, kubelet stand-in and K8sGPT analyzer.

``run_cluster`` (async context manager) serves the API on loopback and runs every
component as an API client in the same event loop, ticking on cache changes and
on a short timer. ``SimCluster`` is the same in a background thread, for callers
that block (the demo, tests, ``aegis sim serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from aegis.sim import (
    analyzer,
    apiserver,
    catalog,
    client,
    clock,
    controllers,
    daemonsets,
    endpoints,
    jobs,
    kubelet,
    scheduler,
    server,
    threaded,
    workloads,
)

logger = logging.getLogger("aegis.sim.cluster")
T = TypeVar("T")


@dataclasses.dataclass
class ClusterOptions:
    speed: float = 10.0  # cluster seconds per wall second
    nodes: int = 3
    node_cpu: str = "4"
    node_memory: str = "8Gi"
    analyzer_interval: float = 30.0  # K8sGPT's default analysis interval, in cluster seconds
    analyzer: bool = True
    tick: float = 0.05  # wall seconds between control loop passes when nothing changes
    images: list[pathlib.Path] = dataclasses.field(default_factory=list)  # extra images.yaml files


@dataclasses.dataclass
class Running:
    api: apiserver.SimAPIServer
    url: str
    clock: clock.SimClock
    catalog: catalog.Catalog
    analyzer: analyzer.Analyzer | None


@contextlib.asynccontextmanager
async def run_cluster(
    kubeconfig: pathlib.Path | None = None,
    options: ClusterOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> AsyncIterator[Running]:
    options = options or ClusterOptions()
    sim_clock = clock.SimClock(options.speed)
    images = catalog.Catalog.load()
    for extra in options.images:
        images.extend(extra)
    async with server.serve(kubeconfig, host=host, port=port) as (api, url), client.SimClient(url) as sim_client:
        changed = asyncio.Event()
        informers = controllers.Informers(sim_client, changed)
        informers.start()
        await informers.synced()
        args = (sim_client, informers, sim_clock)
        components: list[Any] = [
            controllers.NodeController(*args, nodes=options.nodes, cpu=options.node_cpu, memory=options.node_memory),
            workloads.DeploymentController(*args),
            workloads.ReplicaSetController(*args),
            workloads.StatefulSetController(*args),
            daemonsets.DaemonSetController(*args),
            scheduler.Scheduler(*args),
            kubelet.Kubelet(*args, images),
            endpoints.EndpointsController(*args),
            controllers.PersistentVolumeController(*args),
            jobs.JobController(*args),
            jobs.CronJobController(*args),
        ]
        k8sgpt = analyzer.Analyzer(*args, interval=options.analyzer_interval) if options.analyzer else None
        if k8sgpt is not None:
            components.append(k8sgpt)
        loop_task = asyncio.create_task(
            controllers.run_loop(components, changed, options.tick), name="sim-control-loop"
        )
        try:
            yield Running(api=api, url=url, clock=sim_clock, catalog=images, analyzer=k8sgpt)
        finally:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
            await informers.stop()


class SimCluster:
    """``run_cluster`` in a background thread with its own loop."""

    def __init__(
        self,
        kubeconfig: pathlib.Path,
        options: ClusterOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.options = options or ClusterOptions()
        self._runner = threaded.Threaded(
            lambda: run_cluster(kubeconfig, self.options, host=host, port=port), "aegis-sim"
        )
        self.running: Running | None = None

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    def __enter__(self) -> SimCluster:
        self.running = self._runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self._runner.run(coro, timeout)
