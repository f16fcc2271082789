"""The operator's metrics endpoint: ``GET /metrics`` (Prometheus text format) and ``GET /readyz``, over aiohttp.

``serve`` is an async context manager: the server listens while the block runs, in the
caller's event loop (Kopf's, in the operator), and is gone when it ends. Started and
stopped by ``handlers.lifecycle`` on ``AEGIS_METRICS_ADDR``:``AEGIS_METRICS_PORT``
(port 0 in the settings: not at all); tests call it with port 0 for a free port.
``ready`` is injectable (e.g. "this replica holds the leader lease"): ``/readyz``
answers 200 when it returns true (or when there is none), else 503.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

import prometheus_client
from aiohttp import web

from aegis import metrics as aegis_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Server:
    """Where a running metrics server listens."""

    addr: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}"


def app(metrics: aegis_metrics.Metrics, ready: Callable[[], bool] | None = None) -> web.Application:
    """The aiohttp application: ``/metrics`` from ``metrics.registry``, ``/readyz`` from ``ready``."""

    async def scrape(_request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            is_ready = ready is None or bool(ready())
        except Exception as exc:  # a failing readiness check means "not ready", never a crashed endpoint
            log.warning("readiness check failed: %s", exc)
            is_ready = False
        return web.Response(text="ok\n" if is_ready else "not ready\n", status=200 if is_ready else 503)

    application = web.Application()
    application.router.add_get("/metrics", scrape)
    application.router.add_get("/readyz", readyz)
    return application


@contextlib.asynccontextmanager
async def serve(
    metrics: aegis_metrics.Metrics, addr: str, port: int, ready: Callable[[], bool] | None = None
) -> AsyncIterator[Server]:
    """Listen on ``addr``:``port`` (0: any free port) while the block runs; yields where it listens.

    Raises ``OSError`` when the address cannot be bound.
    """
    runner = web.AppRunner(app(metrics, ready), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, addr, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield Server(addr=addr, port=int(bound))
    finally:
        await runner.cleanup()
