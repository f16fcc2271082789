"""Watches of the emulated API server, as kube-apiserver streams them.

A watch starts with an ADDED event per selected object, or resumes after a
resourceVersion from the store's change history (an ``ERROR`` event with 410 Expired
when that is older than the history); from then on each change is an event, an object
leaving the label or field selector being DELETED for that watcher and one entering
ADDED. Called by ``aegis.sim.apiserver`` for ``?watch=true`` and ``/watch/`` requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp.web

from aegis.sim import resources, selectors
from aegis.sim.resources import ApiError


async def stream(
    raw: aiohttp.web.BaseRequest,
    store: resources.Store,
    res: resources.Resource,
    namespace: str | None,
    query: dict[str, str],
    labels: selectors.Predicate,
    fields: selectors.Predicate,
    *,
    closing: Callable[[], bool],
) -> aiohttp.web.StreamResponse:
    """Answer a watch: the current objects (or the changes since a resourceVersion), then every change.

    Events are for what ``labels`` and ``fields`` select in ``namespace`` (all when None);
    the stream ends at ``timeoutSeconds`` or when ``closing()`` turns true.
    """
    since = query.get("resourceVersion") or "0"
    try:
        timeout = float(query.get("timeoutSeconds") or 1800)
        resume = int(since) if since not in ("", "0") else None
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid resourceVersion or timeoutSeconds: {since!r}") from None
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(raw)

    def visible(obj: dict[str, Any]) -> bool:
        ns = obj["metadata"].get("namespace")
        return (namespace is None or ns == namespace) and labels(obj) and fields(obj)

    def ident(obj: dict[str, Any]) -> tuple[str, str]:
        return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])

    async def send(event: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

    try:
        # What this watcher has shown: an object leaving the selector is DELETED for it, one entering is ADDED.
        shown: set[tuple[str, str]] = set()
        if resume is None:
            last = store.rv
            for obj in list(store.items(res.key, namespace)):
                if visible(obj):
                    shown.add(ident(obj))
                    await send("ADDED", obj)
        else:
            last = resume
            if last < store.first_rv.get(res.key, 0) - 1:
                gone = ApiError(410, "Expired", f"too old resource version: {last}")
                await send("ERROR", gone.body())
                return response
            shown = _visible_at(store, res, last, visible, ident)
        deadline = asyncio.get_running_loop().time() + timeout
        condition = store.changed[res.key]
        while not closing():
            for rv, event, obj in store.since(res.key, last):
                last = rv
                key, now_visible = ident(obj), visible(obj)
                if event == "DELETED":
                    if key in shown:
                        shown.discard(key)
                        await send("DELETED", obj)
                elif now_visible:
                    await send("MODIFIED" if key in shown and event != "ADDED" else "ADDED", obj)
                    shown.add(key)
                elif key in shown:
                    shown.discard(key)
                    await send("DELETED", obj)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            async with condition:
                if not store.since(res.key, last):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(condition.wait(), timeout=min(remaining, 5.0))
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    await response.write_eof()
    return response


def _visible_at(
    store: resources.Store,
    res: resources.Resource,
    rv: int,
    visible: Callable[[dict[str, Any]], bool],
    ident: Callable[[dict[str, Any]], tuple[str, str]],
) -> set[tuple[str, str]]:
    """What a watcher resuming at ``rv`` had seen: the objects visible at that resourceVersion.

    Rebuilt from the change history, so replayed events keep their real types (an object deleted
    since ``rv`` is MODIFIED then DELETED, not ADDED). Objects older than the history count as
    they are now.
    """
    before: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    after: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for entry_rv, event, obj in store.history[res.key]:
        key = ident(obj)
        if entry_rv <= rv:
            before[key] = (event, obj)
        elif key not in after:
            after[key] = (event, obj)
    shown = {key for key, (event, obj) in before.items() if event != "DELETED" and visible(obj)}
    shown |= {key for key, (event, obj) in after.items() if key not in before and event != "ADDED" and visible(obj)}
    for obj in store.items(res.key, None):
        key = ident(obj)
        if key not in before and key not in after and visible(obj):
            shown.add(key)
    return shown
