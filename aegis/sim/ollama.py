"""An emulated Ollama HTTP server: ``/api/chat`` (NDJSON streaming as Ollama does) and ``/api/tags``.

It runs an aiohttp app on 127.0.0.1 in its own thread, so the real ``ChatOllama``
(in the test's loop, in an operator subprocess or in the demo's threads) talks to it
over HTTP. Every request body is recorded. What it answers is decided by a
``responder(request_json) -> Reply`` given by the test: a competent model, a model
that talks nonsense, a slow one, an HTTP 500… Used by ``tests/integration`` and ``tests/e2e``;
in the package (not under tests/) so a benchmark can run it from an installed AEGIS as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


@dataclasses.dataclass
class Reply:
    """One answer: ``content`` streamed in chunks, or an HTTP ``status`` error, after ``delay`` seconds."""

    content: str = ""
    status: int = 200
    delay: float = 0.0
    chunks: int = 3


Responder = Callable[[dict[str, Any]], Reply]


def json_reply(value: Any, **kwargs: Any) -> Reply:
    return Reply(content=json.dumps(value), **kwargs)


class FakeOllama:
    """``with FakeOllama(responder, models=["llama3.2:latest"]) as fake: fake.url``."""

    def __init__(self, responder: Responder | None = None, models: list[str] | None = None) -> None:
        self.responder: Responder = responder or (lambda _request: Reply(content="{}"))
        self.models = ["llama3.2:latest"] if models is None else models
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being answered at once
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- the HTTP side ---
    async def _tags(self, _request: web.Request) -> web.Response:
        now = datetime.datetime.now(tz=datetime.UTC).isoformat()
        return web.json_response(
            {
                "models": [
                    {"name": m, "model": m, "modified_at": now, "size": 2019393189, "digest": "0" * 64, "details": {}}
                    for m in self.models
                ]
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self.responder(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.in_flight -= 1
        if reply.status != 200:
            return web.json_response({"error": f"fake ollama: HTTP {reply.status}"}, status=reply.status)
        model = body.get("model", "")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        content = reply.content
        size = max(1, -(-len(content) // max(1, reply.chunks)))
        for start in range(0, len(content), size):
            line = {
                "model": model,
                "created_at": datetime.datetime.now(tz=datetime.UTC).isoformat(),
                "message": {"role": "assistant", "content": content[start : start + size]},
                "done": False,
            }
            await response.write(json.dumps(line).encode() + b"\n")
        prompt_chars = sum(len(m.get("content", "")) for m in body.get("messages", []))
        final = {
            "model": model,
            "created_at": datetime.datetime.now(tz=datetime.UTC).isoformat(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1000,
            "prompt_eval_count": max(1, prompt_chars // 4),
            "prompt_eval_duration": 1000,
            "eval_count": max(1, len(content) // 4),
            "eval_duration": 1000,
        }
        await response.write(json.dumps(final).encode() + b"\n")
        await response.write_eof()
        return response

    # --- lifecycle ---
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/chat", self._chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._runner = runner
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> FakeOllama:
        self._thread = threading.Thread(target=self._serve, name="fake-ollama", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Ollama did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def bodies(self) -> str:
        """Every request body received, as one text (to search for canaries)."""
        return "\n".join(json.dumps(r) for r in self.requests)
