"""Incident events -> the engine: unfinished workflows resume (after a restart, at listing time)."""

from __future__ import annotations

from typing import Any

import kopf

from aegis import models


@kopf.on.event(models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL)
async def incident_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = event.get("object") or {}
    await memo.engine.on_incident(body, deleted=event.get("type") == "DELETED")
