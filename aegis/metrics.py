"""Prometheus metrics of one operator: a ``Metrics`` object owning its own registry and every AEGIS metric.

Built once per runtime by ``graph.runtime.open_runtime`` (tests build as many as they
like: nothing is registered on prometheus_client's global default registry, and
nothing happens at import time) and handed to the collaborators that count things:
``aegis.kube.client.Cluster`` (API errors), ``aegis.llm.advisor.Advisor`` (LLM calls,
failures, latency, tokens, queue depth), ``aegis.shadow.ShadowVerifier`` (shadow
namespaces), the graph's nodes through ``graph.context.Deps`` (stage latency, applies,
rollbacks, escalations) and the engine (every Incident event, and the janitor's view of
shadow namespaces). ``aegis.metrics_server`` serves ``registry`` on ``/metrics``.

The gauges about Incidents (by phase and category, approvals pending and the age of the
oldest one) are computed at scrape time from the Incidents the operator has seen through
its watch (``incident_seen``): Kopf lists every Incident at start-up, so they are right
after a restart too. Labels only take values from small fixed sets (phases, categories,
stages, reason classes, HTTP verbs and codes): never an incident, object or namespace name.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import core, registry

from aegis import expiry, models

STAGES: tuple[str, ...] = ("intake", "gather", "diagnose", "propose", "verify", "gate", "apply", "confirm", "report")
LLM_PURPOSES: tuple[str, ...] = ("diagnose", "propose", "explain")
LLM_FAILURE_REASONS: tuple[str, ...] = (
    "unreachable",  # Ollama refused the connection
    "timeout",  # no answer in time
    "no-model",  # HTTP 404: the model is not pulled
    "http-error",  # any other HTTP error status
    "invalid-answer",  # an answer that is not the JSON asked for (each attempt counts)
    "busy",  # every LLM slot stayed taken too long (the call was never sent)
    "other",
)
APPLY_RESULTS: tuple[str, ...] = (
    "applied",  # every patch of the plan landed (dry-run first)
    "dry-run-refused",  # the server-side dry-run refused a patch: nothing more was applied
    "failed",  # a real patch failed (what was applied before it was restored)
    "stale",  # the target or the change is no longer the one verified: nothing was applied
)
ROLLBACK_RESULTS: tuple[str, ...] = ("restored", "failed")
ESCALATION_CLASSES: tuple[str, ...] = (
    "needs-human",  # diagnosed, but no safe typed fix exists (a value only a human knows)
    "unknown-cause",  # no rule recognised the failure, and no model diagnosed it
    "llm-unavailable",  # the model was needed (no rule was sure) and could not help
    "unsupported-target",  # a Job, CronJob or DaemonSet: AEGIS's typed fixes do not change them
    "shadow-failed",  # every candidate fix failed in the shadow namespaces
    "policy-refused",  # the gate's policy refused the verified fix
    "target-changed",  # the target kept changing, or changed between verification and apply
    "apply-failed",  # the dry-run or the real patch failed
    "other",
)
API_VERBS: tuple[str, ...] = ("get", "list", "create", "patch", "delete", "replace", "other")
TOKEN_DIRECTIONS: tuple[str, ...] = ("prompt", "answer")
PHASES: tuple[str, ...] = models.Phase.__args__  # type: ignore[attr-defined]
NO_CATEGORY = "none"  # an Incident not diagnosed yet
OTHER = "other"

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def bounded(value: str, allowed: Iterable[str], fallback: str = OTHER) -> str:
    """``value`` if it is one of ``allowed``, else ``fallback``: label values stay a small fixed set."""
    return value if value in allowed else fallback


def api_verb(method_name: str) -> str:
    """The verb of a ``kubernetes`` client method: ``read_namespaced_pod_log`` -> get, ``list_namespace`` -> list."""
    verb = method_name.split("_", 1)[0]
    return bounded({"read": "get"}.get(verb, verb), API_VERBS)


class Metrics:
    """Every AEGIS metric, in ``self.registry`` (a registry of its own: several can live in one process)."""

    def __init__(self, clock: Callable[[], datetime.datetime] = _utcnow) -> None:
        self.clock = clock
        self.registry = registry.CollectorRegistry()  # what /metrics serves
        reg = registry.CollectorRegistry()  # the metric objects; served through _WithoutCreated
        self.stage_duration = prometheus_client.Histogram(
            "aegis_stage_duration_seconds",
            "Time a workflow stage (graph node) took to complete; a gate waiting for a human counts from the answer.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=reg,
        )
        self.llm_calls = prometheus_client.Counter(
            "aegis_llm_calls", "Requests sent to the LLM (also those that then failed).", ["purpose"], registry=reg
        )
        self.llm_failures = prometheus_client.Counter(
            "aegis_llm_failures",
            "LLM calls without a usable answer, by reason class (busy: never sent, no slot came free).",
            ["reason"],
            registry=reg,
        )
        self.llm_cache_hits = prometheus_client.Counter(
            "aegis_llm_cache_hits", "Questions answered from the answer cache (no LLM call).", ["purpose"], registry=reg
        )
        self.llm_duration = prometheus_client.Histogram(
            "aegis_llm_call_duration_seconds",
            "Time of one LLM request, once it had a concurrency slot (queueing excluded).",
            ["purpose"],
            buckets=LLM_BUCKETS,
            registry=reg,
        )
        self.llm_tokens = prometheus_client.Counter(
            "aegis_llm_tokens",
            "Tokens the LLM reported: prompt (evaluated input) and answer (generated output).",
            ["direction"],
            registry=reg,
        )
        self.llm_queue_depth = prometheus_client.Gauge(
            "aegis_llm_queue_depth", "LLM calls waiting for a concurrency slot (AEGIS_LLM_CONCURRENCY).", registry=reg
        )
        self.applies = prometheus_client.Counter(
            "aegis_applies", "Verified plans taken to production, by result.", ["result"], registry=reg
        )
        self.rollbacks = prometheus_client.Counter(
            "aegis_rollbacks",
            "Applied fixes that did not heal the workload and were rolled back to their pre-image, by result.",
            ["result"],
            registry=reg,
        )
        self.escalations = prometheus_client.Counter(
            "aegis_escalations",
            "Incidents that ended Escalated, by why (a fixed set of classes).",
            ["reason_class"],
            registry=reg,
        )
        self.api_errors = prometheus_client.Counter(
            "aegis_kubernetes_api_errors",
            "Kubernetes API calls that failed (404 Not Found is an answer, not an error); code none: no HTTP answer.",
            ["verb", "code"],
            registry=reg,
        )
        # Every series of a fixed label set exists from the start (at 0): rates and dashboards need no special case.
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)
        for purpose in LLM_PURPOSES:
            self.llm_calls.labels(purpose=purpose)
            self.llm_cache_hits.labels(purpose=purpose)
            self.llm_duration.labels(purpose=purpose)
        for reason in LLM_FAILURE_REASONS:
            self.llm_failures.labels(reason=reason)
        for direction in TOKEN_DIRECTIONS:
            self.llm_tokens.labels(direction=direction)
        for result in APPLY_RESULTS:
            self.applies.labels(result=result)
        for result in ROLLBACK_RESULTS:
            self.rollbacks.labels(result=result)
        for reason_class in ESCALATION_CLASSES:
            self.escalations.labels(reason_class=reason_class)

        self._lock = threading.Lock()  # the views below may be read by a scrape in another thread
        self._incidents: dict[str, tuple[str, str, datetime.datetime | None]] = {}  # key -> phase, category, since
        self._combinations: set[tuple[str, str]] = set()  # (phase, category) pairs ever shown: they stay, at 0
        self._shadows_own: set[str] = set()  # shadow namespaces the verifier created and has not deleted yet
        self._shadows_found: set[str] = set()  # shadow namespaces the janitor found (e.g. left by a crash)
        self._shadows_closed: set[str] = set()  # deleted since the janitor's last look
        self.registry.register(_WithoutCreated(reg))
        self.registry.register(_StateCollector(self))

    # --- workflow --------------------------------------------------------------------------------------------------

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage=bounded(stage, STAGES)).observe(max(seconds, 0.0))

    def applied(self, result: str) -> None:
        self.applies.labels(result=bounded(result, APPLY_RESULTS, "failed")).inc()

    def rolled_back(self, result: str) -> None:
        self.rollbacks.labels(result=bounded(result, ROLLBACK_RESULTS, "failed")).inc()

    def escalated(self, reason_class: str) -> None:
        self.escalations.labels(reason_class=bounded(reason_class, ESCALATION_CLASSES)).inc()

    # --- LLM -------------------------------------------------------------------------------------------------------

    def llm_called(self, purpose: str, seconds: float) -> None:
        """One request sent to the model (whatever came of it) and how long it took."""
        label = bounded(purpose, LLM_PURPOSES)
        self.llm_calls.labels(purpose=label).inc()
        self.llm_duration.labels(purpose=label).observe(max(seconds, 0.0))

    def llm_failed(self, reason: str) -> None:
        self.llm_failures.labels(reason=bounded(reason, LLM_FAILURE_REASONS)).inc()

    def llm_answered(self, prompt_tokens: int, answer_tokens: int) -> None:
        """The token counts the model reported for one answer (Ollama's prompt_eval_count / eval_count)."""
        self.llm_tokens.labels(direction="prompt").inc(max(prompt_tokens, 0))
        self.llm_tokens.labels(direction="answer").inc(max(answer_tokens, 0))

    def llm_cached(self, purpose: str) -> None:
        self.llm_cache_hits.labels(purpose=bounded(purpose, LLM_PURPOSES)).inc()

    @contextlib.contextmanager
    def llm_queued(self) -> Iterator[None]:
        """Around waiting for an LLM slot: the call counts in ``aegis_llm_queue_depth`` meanwhile."""
        self.llm_queue_depth.inc()
        try:
            yield
        finally:
            self.llm_queue_depth.dec()

    # --- Kubernetes API --------------------------------------------------------------------------------------------

    def api_error(self, verb: str, code: int | None) -> None:
        self.api_errors.labels(verb=bounded(verb, API_VERBS), code=str(code) if code else "none").inc()

    # --- what the operator sees ------------------------------------------------------------------------------------

    def incident_seen(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        """An Incident as the watch delivered it (listed, changed or deleted): the gauges follow it."""
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        with self._lock:
            if deleted:
                self._incidents.pop(key, None)
                return
            status = obj.get("status") or {}
            phase = bounded(str(status.get("phase") or "Pending"), PHASES)
            diagnosis = status.get("diagnosis") or {}
            category = bounded(str(diagnosis.get("category")), models.CATEGORIES) if diagnosis else NO_CATEGORY
            self._incidents[key] = (phase, category, expiry.waiting_since(obj))
            self._combinations.add((phase, category))

    def shadow_opened(self, name: str) -> None:
        with self._lock:
            self._shadows_own.add(name)

    def shadow_closed(self, name: str) -> None:
        with self._lock:
            self._shadows_own.discard(name)
            self._shadows_found.discard(name)
            self._shadows_closed.add(name)

    def shadow_left(self, name: str) -> None:
        """A shadow namespace that could not be deleted: it exists until the janitor's next look says otherwise."""
        with self._lock:
            self._shadows_own.discard(name)
            self._shadows_found.add(name)

    def shadows_found(self, names: Iterable[str]) -> None:
        """The shadow namespaces that exist (not terminating), as the janitor listed them: after a restart too."""
        with self._lock:
            self._shadows_found = set(names) - self._shadows_closed  # one closed while the list was on its way
            self._shadows_closed = set()

    def snapshot(self) -> dict[str, Any]:
        """What the scrape-time gauges show now (plain data; also for tests)."""
        now = self.clock()
        with self._lock:
            incidents = list(self._incidents.values())
            combinations = set(self._combinations)
            shadows = len(self._shadows_own | self._shadows_found)
        counts = dict.fromkeys(combinations, 0)
        waiting: list[datetime.datetime | None] = []
        for phase, category, since in incidents:
            counts[(phase, category)] = counts.get((phase, category), 0) + 1
            if phase == expiry.AWAITING:
                waiting.append(since)
        known = [since for since in waiting if since is not None]
        oldest = max(((now - since).total_seconds() for since in known), default=0.0)
        return {
            "incidents": counts,
            "approvals_pending": len(waiting),
            "oldest_approval_age_seconds": max(oldest, 0.0),
            "shadow_namespaces": shadows,
        }


class _WithoutCreated(registry.Collector):
    """The metrics of ``inner`` without prometheus_client's ``*_created`` series (a creation timestamp per counter
    and histogram series: twice the series, and Prometheus's text format gives them no meaning)."""

    def __init__(self, inner: registry.CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[core.Metric]:
        for family in self.inner.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family


class _StateCollector(registry.Collector):
    """The gauges computed at scrape time from what the operator has seen."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[core.Metric]:
        return list(self._families({"incidents": {}, "approvals_pending": 0, "oldest_approval_age_seconds": 0}))

    def collect(self) -> Iterator[core.Metric]:
        yield from self._families(self.metrics.snapshot())

    def _families(self, snap: Mapping[str, Any]) -> Iterator[core.Metric]:
        incidents = core.GaugeMetricFamily(
            "aegis_incidents",
            "Incidents the operator sees, by phase and diagnosis category (none: not diagnosed yet).",
            labels=["phase", "category"],
        )
        for (phase, category), count in sorted(snap["incidents"].items()):
            incidents.add_metric([phase, category], count)
        yield incidents
        yield core.GaugeMetricFamily(
            "aegis_approvals_pending",
            "Incidents whose verified fix waits for a human (phase AwaitingApproval).",
            value=snap["approvals_pending"],
        )
        yield core.GaugeMetricFamily(
            "aegis_approval_pending_age_seconds",
            "How long the oldest pending approval has waited (0 when none waits).",
            value=snap["oldest_approval_age_seconds"],
        )
        yield core.GaugeMetricFamily(
            "aegis_shadow_namespaces_active",
            "Shadow namespaces that exist now (being verified in, or left behind and not yet expired).",
            value=snap.get("shadow_namespaces", 0),
        )
