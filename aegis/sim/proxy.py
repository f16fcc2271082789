"""A fault-injecting reverse proxy in front of any Kubernetes API server, on loopback.

Clients (the operator under test, kubectl) talk plain HTTP to the proxy; it forwards
every request — watches streamed as they come — to the upstream API server over TLS
(with the upstream's CA), with the client's own bearer token, or the kubeconfig's when
the client sent none (kubectl sends no token over plain HTTP). Each request
is first shown to the ``faults`` (the same hook shape as ``SimAPIServer.faults``:
``fault(method, route, query) -> ApiError | None``); a fault's error is answered
instead of forwarding, as a Kubernetes ``Status``. So a test can kill an operator
between its dry-run and its apply, or answer 429/500 to a share of requests, against
the real control plane exactly as against the emulator.

Used by the real-control-plane test tier (and, later, the chaos benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import aiohttp.web
import yaml

from aegis.sim import apiserver, threaded

Fault = Callable[[str, apiserver.Route, dict[str, str]], "apiserver.ApiError | None"]
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}


@contextlib.asynccontextmanager
async def serve(
    upstream: str, ca_file: str | None, faults: list[Fault], *, token: str | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Proxy to ``upstream`` (https URL); yields the proxy's http URL."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else False
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=200),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        auto_decompress=False,
    )

    async def handle(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        query = dict(request.query)
        route = apiserver.parse_route(request.path)
        if route is not None:
            for fault in list(faults):
                error = fault(request.method, route, query)
                if error is not None:
                    return aiohttp.web.json_response(error.body(), status=error.code)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if token and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body:  # aiohttp would send a bytes body as application/octet-stream whatever the header says
            kind = headers.pop(next((k for k in headers if k.lower() == "content-type"), "Content-Type"), None)
            payload = aiohttp.BytesPayload(body, content_type=kind or "application/json")
        async with session.request(
            request.method, upstream + request.path_qs, data=payload, headers=headers, allow_redirects=False
        ) as answer:
            response = aiohttp.web.StreamResponse(
                status=answer.status,
                headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionError, asyncio.CancelledError):
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
            return response

    app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}"
    finally:
        await site.stop()  # no new connections
        await session.close()  # ends the streams (watches) still being relayed
        await runner.cleanup()
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


class FaultProxy:
    """``serve`` in a background thread; ``kubeconfig(path)`` writes a kubeconfig that goes through it."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
        cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
        self._user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
        self.upstream = str(cluster["server"]).rstrip("/")
        self.ca_file: str | None = cluster.get("certificate-authority")
        self.faults: list[Fault] = []
        self._runner: threaded.Threaded[str] = threaded.Threaded(
            lambda: serve(self.upstream, self.ca_file, self.faults, token=self._user.get("token")),
            "aegis-fault-proxy",
        )
        self.url = ""

    def __enter__(self) -> FaultProxy:
        self.url = self._runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()

    def kubeconfig(self, path: pathlib.Path) -> pathlib.Path:
        document: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "via-proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "via-proxy", "user": self._user}],
            "contexts": [{"name": "via-proxy", "context": {"cluster": "via-proxy", "user": "via-proxy"}}],
            "current-context": "via-proxy",
        }
        path.write_text(yaml.safe_dump(document))
        return path
