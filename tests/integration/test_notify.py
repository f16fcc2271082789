"""Webhook delivery over real HTTP: a local aiohttp server receives what the Notifier posts, fails, or is slow."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from aegis import config, notify

pytestmark = pytest.mark.integration

SECRET_PATH = "/services/T0001/B0001/s3cr3tWebhookToken"
INCIDENT: dict[str, Any] = {
    "metadata": {"name": "deployment-web", "namespace": "shop"},
    "spec": {"target": {"kind": "Deployment", "namespace": "shop", "name": "web"}},
    "status": {
        "phase": "AwaitingApproval",
        "diagnosis": {"category": "image-pull", "summary": "password=hunter2canary in the log", "confidence": 0.9},
        "plan": {
            "chosen": {
                "actions": [
                    {
                        "kind": "set-image",
                        "target": {"kind": "Deployment", "namespace": "shop", "name": "web"},
                        "params": {"image": "nginx:1.27"},
                        "risk": "low",
                    }
                ]
            }
        },
    },
}
RESULT: dict[str, Any] = {
    "action": INCIDENT["status"]["plan"]["chosen"]["actions"][0],
    "patch": {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}},
    "patchType": "strategic",
    "preImage": {"undo": {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:bad"}]}}}}},
}


class Hook:
    """A webhook receiver on a random local port; ``answers`` are the statuses of successive requests."""

    def __init__(self, answers: list[int] | None = None, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        self.received.append(await request.json())
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok" if status < 300 else "no")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"


@pytest.fixture()
async def serve() -> AsyncIterator[Callable[[Hook], Awaitable[Hook]]]:
    runners: list[web.AppRunner] = []

    async def start(hook: Hook) -> Hook:
        app = web.Application()
        app.router.add_post(SECRET_PATH, hook.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        hook.port = runner.addresses[0][1]
        return hook

    yield start
    for runner in runners:
        await runner.cleanup()


def notifier(url: str, fmt: str = "generic", retries: int = 3, timeout: float = 2.0) -> notify.Notifier:
    settings = config.Settings(
        notify_url=url, notify_format=fmt, notify_retries=retries, notify_timeout_seconds=timeout
    )
    return notify.Notifier(settings, backoff=0.01)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_generic_document_is_posted(serve: Callable[[Hook], Awaitable[Hook]]) -> None:
    hook = await serve(Hook())
    sender = notifier(hook.url)
    task = sender.notify(INCIDENT, "awaiting-approval", results=[RESULT])
    assert task is not None and await task is True
    await sender.aclose()
    [body] = hook.received
    assert hook.paths == [SECRET_PATH]
    assert body["event"] == "awaiting-approval"
    assert (body["incident"], body["namespace"], body["phase"]) == ("deployment-web", "shop", "AwaitingApproval")
    assert body["approve"] == "aegis approve deployment-web -n shop"
    assert body["kubectl"].endswith("""--type merge -p '{"spec":{"approval":{"decision":"Approved"}}}'""")
    assert "-      - image: nginx:bad" in body["diff"] and "+      - image: nginx:1.27" in body["diff"]
    assert "hunter2canary" not in str(body) and "password=****" in body["summary"]
    assert sender.delivered == 1


async def test_slack_payload_is_posted(serve: Callable[[Hook], Awaitable[Hook]]) -> None:
    hook = await serve(Hook())
    sender = notifier(hook.url, fmt="slack")
    task = sender.notify(INCIDENT, "ended")
    assert task is not None and await task is True
    await sender.aclose()
    [body] = hook.received
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Incident shop/deployment-web ended: AwaitingApproval")
    assert body["blocks"][0]["type"] == "header"
    assert all(b["text"]["type"] == "mrkdwn" for b in body["blocks"][1:])
    assert "hunter2canary" not in str(body)


async def test_server_errors_are_retried_until_delivered(
    serve: Callable[[Hook], Awaitable[Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    hook = await serve(Hook([500, 503, 200]))
    sender = notifier(hook.url, retries=3)
    with caplog.at_level(logging.WARNING, logger="aegis.notify"):
        task = sender.notify(INCIDENT, "awaiting-approval")
        assert task is not None and await task is True
    assert len(hook.received) == 3 and hook.received[0] == hook.received[2]
    assert (sender.delivered, sender.failed) == (1, 0)
    await sender.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "HTTP 500" in warnings[0] and "retrying" in warnings[0]
    assert all(f"http://127.0.0.1:{hook.port}" in w and "s3cr3t" not in w and "/services" not in w for w in warnings)


async def test_a_failing_server_is_given_up_on_without_blocking_or_raising(
    serve: Callable[[Hook], Awaitable[Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    hook = await serve(Hook([500] * 10))
    sender = notifier(hook.url, retries=2)
    with caplog.at_level(logging.WARNING, logger="aegis.notify"):
        started = time.monotonic()
        task = sender.notify(INCIDENT, "awaiting-approval")
        assert time.monotonic() - started < 0.1  # scheduled, not sent
        assert task is not None and not task.done() and sender.pending == 1
        assert await sender.drain(5) is True
    assert task.result() is False and sender.pending == 0
    assert len(hook.received) == 3  # retries + 1
    assert (sender.delivered, sender.failed) == (0, 1)
    assert "giving up" in caplog.records[-1].getMessage()
    assert "s3cr3t" not in caplog.text
    await sender.aclose()


async def test_client_errors_are_not_retried_but_429_is(serve: Callable[[Hook], Awaitable[Hook]]) -> None:
    hook = await serve(Hook([404, 404]))
    sender = notifier(hook.url, retries=3)
    task = sender.notify(INCIDENT, "ended")
    assert task is not None and await task is False
    assert len(hook.received) == 1
    await sender.aclose()
    limited = await serve(Hook([429, 200]))
    sender = notifier(limited.url, retries=3)
    task = sender.notify(INCIDENT, "ended")
    assert task is not None and await task is True
    assert len(limited.received) == 2
    await sender.aclose()


async def test_a_server_that_is_down_raises_nothing(caplog: pytest.LogCaptureFixture) -> None:
    sender = notifier(f"http://127.0.0.1:{closed_port()}{SECRET_PATH}", retries=2)
    with caplog.at_level(logging.WARNING, logger="aegis.notify"):
        task = sender.notify(INCIDENT, "awaiting-approval")
        assert task is not None and await task is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "giving up" in warnings[-1]
    assert "s3cr3t" not in caplog.text
    await sender.aclose()


async def test_a_slow_server_times_out_is_retried_then_given_up(
    serve: Callable[[Hook], Awaitable[Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    hook = await serve(Hook(delay=1.0))
    sender = notifier(hook.url, retries=1, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="aegis.notify"):
        started = time.monotonic()
        task = sender.notify(INCIDENT, "awaiting-approval")
        assert task is not None and await task is False
    assert time.monotonic() - started < 1.5
    assert len(hook.received) == 2
    assert "Timeout" in caplog.records[0].getMessage()
    await sender.aclose()


async def test_close_drops_what_is_still_pending(serve: Callable[[Hook], Awaitable[Hook]]) -> None:
    hook = await serve(Hook(delay=1.0))
    sender = notifier(hook.url, retries=0, timeout=5.0)
    task = sender.notify(INCIDENT, "ended")
    started = time.monotonic()
    await sender.aclose(timeout=0.1)
    assert time.monotonic() - started < 0.8
    assert task is not None and task.cancelled()
    assert sender.pending == 0
