"""Kubernetes Events as the cluster's components write them: reason, message, source, count.

A repeat of the same (object, type, reason, message) increments ``count`` and
``lastTimestamp`` on the existing Event, as client-go's event recorder does.
Used by the simulated controllers, scheduler and kubelet.
"""

from __future__ import annotations

import collections
import datetime
import logging
import secrets
from typing import Any

from aegis.sim import client

logger = logging.getLogger("aegis.sim.events")
_REMEMBERED = 5000


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, api: client.SimClient, component: str, host: str | None = None) -> None:
        self.api = api
        self.component = component
        self.host = host
        self._seen: collections.OrderedDict[tuple[str, str, str, str, str, str], tuple[str, int]] = (
            collections.OrderedDict()
        )

    async def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        kind = obj.get("kind") or ""
        key = (namespace, kind, meta.get("name", ""), type_, reason, message)
        now = _now()
        try:
            if key in self._seen:
                name, count = self._seen[key]
                count += 1
                await self.api.patch("Event", namespace, name, {"count": count, "lastTimestamp": now})
                self._seen[key] = (name, count)
                self._seen.move_to_end(key)
                return
            name = f"{meta.get('name', 'object')}.{secrets.token_hex(8)}"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": kind,
                    "name": meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "reportingComponent": self.component,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            await self.api.create(body, namespace)
            self._seen[key] = (name, 1)
            while len(self._seen) > _REMEMBERED:  # a forgotten series simply starts a new Event
                self._seen.popitem(last=False)
        except client.ApiError as exc:  # an event is best effort, as in Kubernetes
            self._seen.pop(key, None)
            logger.debug("event %s/%s not recorded: %s", reason, meta.get("name"), exc)
