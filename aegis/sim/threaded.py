"""Run an async context manager in a background thread with its own event loop.

For callers that block (tests, the demo, kubectl-driven checks) while an async
server keeps serving. Used by ``server.EmulatedCluster`` and ``cluster.SimCluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")


class Threaded(Generic[V]):
    """Enter ``factory()`` in a thread; ``value`` is what it yields; leaving the ``with`` block closes it."""

    def __init__(
        self, factory: Callable[[], contextlib.AbstractAsyncContextManager[V]], name: str, start_timeout: float = 60
    ) -> None:
        self._factory = factory
        self._start_timeout = start_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._stop: asyncio.Event | None = None
        self._serving: Future[None] | None = None
        self.value: V | None = None

    def start(self) -> V:
        self._thread.start()
        ready: Future[V] = Future()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(ready), self.loop)
        self.value = ready.result(timeout=self._start_timeout)
        return self.value

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._serving is not None:
            with contextlib.suppress(Exception):
                self._serving.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    async def _serve(self, ready: Future[V]) -> None:
        self._stop = asyncio.Event()
        try:
            async with self._factory() as value:
                ready.set_result(value)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
