"""An emulated Kubernetes API served over HTTP on loopback.

Built on kmock's ``KubernetesEmulator``. ``EmulatedCluster`` runs the emulator
in a thread with its own event loop, registers the built-in resources and the
AEGIS / K8sGPT custom resources, and writes a kubeconfig so that Kopf, the
``kubernetes`` client and ``kubectl`` connect to it like to any cluster.

Used by the integration and e2e tests (and later ``aegis sim serve`` / ``aegis demo``).
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import kmock
import yaml

T = TypeVar("T")

CUSTOM_RESOURCES: dict[str, kmock.ResourceInfo] = {
    "core.k8sgpt.ai/v1alpha1/results": kmock.ResourceInfo(
        kind="Result",
        singular="result",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    ),
    "aegis.dev/v1alpha1/incidents": kmock.ResourceInfo(
        kind="Incident",
        singular="incident",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
        shortnames={"inc"},
    ),
}


def kubeconfig_for(server_url: str) -> dict[str, Any]:
    """A kubeconfig document pointing at ``server_url`` with no credentials."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "aegis-sim", "cluster": {"server": server_url}}],
        "users": [{"name": "aegis-sim", "user": {"token": "aegis-sim"}}],
        "contexts": [{"name": "aegis-sim", "context": {"cluster": "aegis-sim", "user": "aegis-sim"}}],
        "current-context": "aegis-sim",
    }


class EmulatedCluster:
    """Runs the emulated API server in a background thread.

    Usage::

        with EmulatedCluster(kubeconfig_path) as cluster:
            ...  # point clients at cluster.kubeconfig
    """

    def __init__(self, kubeconfig: pathlib.Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._host = host
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aegis-sim-api", daemon=True)
        self._stop: asyncio.Event | None = None
        self._serving: Future[None] | None = None
        self.emulator: kmock.KubernetesEmulator | None = None
        self.url = ""

    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        ready: Future[str] = Future()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        self.url = ready.result(timeout=30)
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(self.url)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._serving is not None:
            self._serving.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the emulator's loop (for direct access to its state)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    async def _serve(self, ready: Future[str]) -> None:
        self._stop = asyncio.Event()
        try:
            async with kmock.KubernetesEmulator() as emulator:
                emulator.resources.load_bundled()
                for key, info in CUSTOM_RESOURCES.items():
                    emulator.resources[key] = info
                async with kmock.Server(emulator, host=self._host, port=self._port) as server:
                    self.emulator = emulator
                    ready.set_result(str(server.url).rstrip("/"))
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
