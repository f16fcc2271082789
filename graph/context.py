"""Collaborators injected into every node through LangGraph's runtime context.

Built by ``graph.runtime`` for the operator and by tests with fakes; nodes never
build clients themselves.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Protocol

from aegis import config, models


class IncidentRecorder(Protocol):
    async def set_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        timeline: list[models.TimelineEntry] | None = None,
    ) -> Any: ...


class Gatherer(Protocol):
    async def gather(self, incident: models.Incident, hints: list[str], now: datetime.datetime) -> models.Evidence: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Deps:
    settings: config.Settings
    incidents: IncidentRecorder
    gatherer: Gatherer
    clock: Callable[[], datetime.datetime] = utcnow
