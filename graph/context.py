"""Collaborators injected into every node through LangGraph's runtime context.

Built by ``graph.runtime`` for the operator and by tests with fakes; nodes never
build clients themselves.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Protocol

from aegis import config, models, policy


class IncidentRecorder(Protocol):
    async def set_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        timeline: list[models.TimelineEntry] | None = None,
    ) -> Any: ...

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]: ...

    async def update_spec(
        self, namespace: str, name: str, mutate: Callable[[models.Incident], dict[str, Any] | None]
    ) -> Any: ...


class Gatherer(Protocol):
    async def gather(self, incident: models.Incident, hints: list[str], now: datetime.datetime) -> models.Evidence: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def policy_from(settings: config.Settings) -> policy.Policy:
    return policy.Policy(
        default_mode=settings.mode,
        modes=tuple(settings.namespace_modes.items()),  # type: ignore[arg-type]
        cooldown=datetime.timedelta(seconds=settings.cooldown_seconds),
        max_applies_per_hour=settings.max_applies_per_hour,
        auto_llm_plans=settings.llm_auto_apply,
    )


@dataclasses.dataclass(frozen=True)
class Deps:
    settings: config.Settings
    incidents: IncidentRecorder
    gatherer: Gatherer
    clock: Callable[[], datetime.datetime] = utcnow
    cluster: Any = None  # aegis.kube.client.Cluster: reads and writes for the remediation stages
    verifier: Any = None  # aegis.shadow.ShadowVerifier
    notifier: Any = None  # aegis.notify.Notifier: webhook messages (waiting for approval, ended); None: none
    advisor: Any = None  # aegis.llm.advisor.Advisor: the LLM's diagnoses and plans; None: rules only
    metrics: Any = None  # aegis.metrics.Metrics: stage latency, applies, rollbacks, escalations; None: not counted

    @property
    def policy(self) -> policy.Policy:
        return policy_from(self.settings)
