"""Serve the emulated Kubernetes API on loopback, with a kubeconfig that points at it.

``EmulatedCluster`` runs ``SimAPIServer`` in a thread with its own event loop
(so blocking clients — tests, ``kubectl`` — can use it from the main thread),
creates the system namespaces and the AEGIS / K8sGPT CRDs, and writes a
kubeconfig so Kopf, the ``kubernetes`` client and ``kubectl`` connect to it like to
any cluster. ``serve`` is the async form for code already running a loop.

Used by the tests, ``aegis sim serve`` and ``aegis demo``.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import kmock
import yaml

from aegis import crds
from aegis.sim import apiserver, threaded

T = TypeVar("T")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def kubeconfig_for(server_url: str) -> dict[str, Any]:
    """A kubeconfig document pointing at ``server_url``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "aegis-sim", "cluster": {"server": server_url}}],
        "users": [{"name": "aegis-sim-admin", "user": {"token": "aegis-sim"}}],
        "contexts": [{"name": "aegis-sim", "context": {"cluster": "aegis-sim", "user": "aegis-sim-admin"}}],
        "current-context": "aegis-sim",
    }


def write_kubeconfig(path: pathlib.Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_for(url)))


async def bootstrap(api: apiserver.SimAPIServer) -> None:
    """What a fresh cluster has: system namespaces and (for AEGIS) the Result and Incident CRDs."""
    namespaces = api._resource(apiserver.Route("", "v1", "namespaces", None, None, None, False))
    for name in SYSTEM_NAMESPACES:
        await api._create(namespaces, None, {"metadata": {"name": name}}, {})
    crd_resource = api._resource(
        apiserver.Route("apiextensions.k8s.io", "v1", "customresourcedefinitions", None, None, None, False)
    )
    for crd in crds.all_crds():
        await api._create(crd_resource, None, crd, {})


@contextlib.asynccontextmanager
async def serve(
    kubeconfig: pathlib.Path | None = None, *, host: str = "127.0.0.1", port: int | None = None
) -> AsyncIterator[tuple[apiserver.SimAPIServer, str]]:
    """Run the emulated API server in the current loop: yields (server, url)."""
    async with apiserver.SimAPIServer() as api:
        api.resources.load_bundled()
        await bootstrap(api)
        async with kmock.Server(api, host=host, port=port) as http:
            url = str(http.url).rstrip("/")
            if kubeconfig is not None:
                write_kubeconfig(kubeconfig, url)
            try:
                yield api, url
            finally:
                await api.close()


class EmulatedCluster:
    """The emulated API server in a background thread.

    Usage::

        with EmulatedCluster(kubeconfig_path) as cluster:
            ...  # point clients at cluster.kubeconfig; cluster.api is the server
    """

    def __init__(self, kubeconfig: pathlib.Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._runner = threaded.Threaded(lambda: serve(kubeconfig, host=host, port=port), "aegis-sim-api")
        self.api: apiserver.SimAPIServer | None = None
        self.url = ""

    def __enter__(self) -> EmulatedCluster:
        self.api, self.url = self._runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop."""
        return self._runner.run(coro, timeout)
