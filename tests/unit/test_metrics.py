"""The operator's Prometheus metrics as plain data: names, types, labels and values after calls; the escalation
reason classes read from workflow states; stage latency from a graph run; API errors counted in ``Cluster._call``;
and the /metrics and /readyz endpoints (in-process aiohttp on a free port)."""

from __future__ import annotations

import datetime
from typing import Any

import httpx
import kubernetes
import prometheus_client
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from prometheus_client import parser

from aegis import config, metrics, metrics_server
from aegis.kube import client
from aegis.llm import advisor
from graph import build, context, metering
from tests.unit import test_graph

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)

# name -> (type, label names) of every family, as Prometheus sees it
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "aegis_incidents": ("gauge", {"phase", "category"}),
    "aegis_stage_duration_seconds": ("histogram", {"stage"}),
    "aegis_llm_calls": ("counter", {"purpose"}),
    "aegis_llm_failures": ("counter", {"reason"}),
    "aegis_llm_cache_hits": ("counter", {"purpose"}),
    "aegis_llm_call_duration_seconds": ("histogram", {"purpose"}),
    "aegis_llm_tokens": ("counter", {"direction"}),
    "aegis_llm_queue_depth": ("gauge", set()),
    "aegis_approvals_pending": ("gauge", set()),
    "aegis_approval_pending_age_seconds": ("gauge", set()),
    "aegis_applies": ("counter", {"result"}),
    "aegis_rollbacks": ("counter", {"result"}),
    "aegis_escalations": ("counter", {"reason_class"}),
    "aegis_shadow_namespaces_active": ("gauge", set()),
    "aegis_kubernetes_api_errors": ("counter", {"verb", "code"}),
}


def scrape(m: metrics.Metrics) -> dict[str, Any]:
    """The text exposition parsed back, as a scraper would: family name -> family."""
    text = prometheus_client.generate_latest(m.registry).decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(m: metrics.Metrics, sample: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist)."""
    found = m.registry.get_sample_value(sample, labels)
    return 0.0 if found is None else found


def incident(name: str, phase: str | None, category: str | None = None, waiting_since: str | None = None) -> dict:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if category:
        status["diagnosis"] = {"category": category}
    if waiting_since:
        status["timeline"] = [{"stage": "gate", "message": "waiting for approval (policy)", "at": waiting_since}]
    return {"metadata": {"namespace": "shop", "name": name}, "status": status}


def test_every_family_has_its_name_type_and_labels() -> None:
    m = metrics.Metrics()
    m.api_error("get", 500)  # a labelled family without fixed label values shows once it has a series
    m.incident_seen(incident("a", "Diagnosing"))
    families = scrape(m)
    for name, (kind, labels) in FAMILIES.items():
        assert name in families, f"{name} missing from {sorted(families)}"
        family = families[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    unexpected = {n for n in families if n.startswith("aegis_")} - set(FAMILIES)
    assert unexpected == set()


def test_prometheus_naming_conventions() -> None:
    text = prometheus_client.generate_latest(metrics.Metrics().registry).decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    counters = [n for n in names if f"# TYPE {n} counter" in text]
    assert counters and all(n.endswith("_total") for n in counters), counters
    histograms = [n for n in names if f"# TYPE {n} histogram" in text]
    assert sorted(histograms) == ["aegis_llm_call_duration_seconds", "aegis_stage_duration_seconds"]
    assert all(n.startswith("aegis_") for n in names)


def test_fixed_label_sets_exist_from_the_start_at_zero() -> None:
    m = metrics.Metrics()
    for stage in metrics.STAGES:
        assert m.registry.get_sample_value("aegis_stage_duration_seconds_count", {"stage": stage}) == 0
    for reason_class in metrics.ESCALATION_CLASSES:
        assert m.registry.get_sample_value("aegis_escalations_total", {"reason_class": reason_class}) == 0
    for result in metrics.APPLY_RESULTS:
        assert m.registry.get_sample_value("aegis_applies_total", {"result": result}) == 0
    assert value(m, "aegis_approvals_pending") == 0 and value(m, "aegis_shadow_namespaces_active") == 0


def test_several_operators_in_one_process_count_apart() -> None:
    first, second = metrics.Metrics(), metrics.Metrics()
    first.applied("applied")
    assert value(first, "aegis_applies_total", result="applied") == 1
    assert value(second, "aegis_applies_total", result="applied") == 0
    assert first.registry is not second.registry is not prometheus_client.REGISTRY
    assert prometheus_client.REGISTRY.get_sample_value("aegis_applies_total", {"result": "applied"}) is None


def test_workflow_counters_and_bounded_labels() -> None:
    m = metrics.Metrics()
    m.stage_finished("verify", 12.5)
    m.stage_finished("verify", 0.5)
    m.stage_finished("no-such-stage", 1.0)
    assert value(m, "aegis_stage_duration_seconds_count", stage="verify") == 2
    assert value(m, "aegis_stage_duration_seconds_sum", stage="verify") == 13.0
    assert value(m, "aegis_stage_duration_seconds_bucket", stage="verify", le="1.0") == 1
    assert value(m, "aegis_stage_duration_seconds_count", stage="other") == 1
    m.applied("applied")
    m.applied("dry-run-refused")
    m.applied("whatever")  # an unknown result counts as a failure, never as a new label value
    assert value(m, "aegis_applies_total", result="dry-run-refused") == 1
    assert value(m, "aegis_applies_total", result="failed") == 1
    m.rolled_back("restored")
    assert value(m, "aegis_rollbacks_total", result="restored") == 1
    m.escalated("shadow-failed")
    m.escalated("made-up")
    assert value(m, "aegis_escalations_total", reason_class="shadow-failed") == 1
    assert value(m, "aegis_escalations_total", reason_class="other") == 1


def test_llm_counters_and_queue_depth() -> None:
    m = metrics.Metrics()
    m.llm_called("diagnose", 2.0)
    m.llm_called("propose", 0.3)
    m.llm_answered(120, 40)
    m.llm_failed("timeout")
    m.llm_failed("nonsense")
    m.llm_cached("explain")
    assert value(m, "aegis_llm_calls_total", purpose="diagnose") == 1
    assert value(m, "aegis_llm_call_duration_seconds_count", purpose="propose") == 1
    assert value(m, "aegis_llm_call_duration_seconds_sum", purpose="diagnose") == 2.0
    assert value(m, "aegis_llm_tokens_total", direction="prompt") == 120
    assert value(m, "aegis_llm_tokens_total", direction="answer") == 40
    assert value(m, "aegis_llm_failures_total", reason="timeout") == 1
    assert value(m, "aegis_llm_failures_total", reason="other") == 1
    assert value(m, "aegis_llm_cache_hits_total", purpose="explain") == 1
    with m.llm_queued():
        with m.llm_queued():
            assert value(m, "aegis_llm_queue_depth") == 2
        assert value(m, "aegis_llm_queue_depth") == 1
    assert value(m, "aegis_llm_queue_depth") == 0
    with pytest.raises(TimeoutError), m.llm_queued():
        raise TimeoutError
    assert value(m, "aegis_llm_queue_depth") == 0


def test_llm_failure_reasons_from_exceptions() -> None:
    class StatusError(Exception):
        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    assert advisor.failure_reason(httpx.ConnectError("refused")) == "unreachable"
    assert advisor.failure_reason(httpx.ReadTimeout("slow")) == "timeout"
    assert advisor.failure_reason(TimeoutError()) == "timeout"
    assert advisor.failure_reason(advisor.Busy("busy")) == "busy"
    assert advisor.failure_reason(StatusError(404)) == "no-model"
    assert advisor.failure_reason(StatusError(500)) == "http-error"
    assert advisor.failure_reason(ValueError("?")) == "other"
    assert {"unreachable", "timeout", "busy", "no-model", "http-error", "other"} <= set(metrics.LLM_FAILURE_REASONS)


def test_incident_gauges_follow_what_the_watch_delivers() -> None:
    m = metrics.Metrics(clock=lambda: NOW)
    m.incident_seen(incident("a", None))  # just created: Pending, not diagnosed
    m.incident_seen(incident("b", "AwaitingApproval", "image-pull", "2026-11-21T09:58:00Z"))
    m.incident_seen(incident("c", "AwaitingApproval", "oom-killed", "2026-11-21T09:59:30Z"))
    m.incident_seen(incident("d", "Escalated", "missing-config"))
    m.incident_seen(incident("e", "Weird", "not-a-category"))
    assert value(m, "aegis_incidents", phase="Pending", category="none") == 1
    assert value(m, "aegis_incidents", phase="AwaitingApproval", category="image-pull") == 1
    assert value(m, "aegis_incidents", phase="other", category="other") == 1
    assert value(m, "aegis_approvals_pending") == 2
    assert value(m, "aegis_approval_pending_age_seconds") == 120.0  # the oldest wait, from its stored start

    m.incident_seen(incident("b", "Resolved", "image-pull"))  # approved and healed
    m.incident_seen(incident("c", "Rejected", "oom-killed"))
    m.incident_seen(incident("d", "Escalated", "missing-config"), deleted=True)
    assert value(m, "aegis_incidents", phase="Resolved", category="image-pull") == 1
    # A series that was shown stays, at 0, rather than vanishing.
    assert m.registry.get_sample_value("aegis_incidents", {"phase": "AwaitingApproval", "category": "image-pull"}) == 0
    assert m.registry.get_sample_value("aegis_incidents", {"phase": "Escalated", "category": "missing-config"}) == 0
    assert value(m, "aegis_approvals_pending") == 0
    assert value(m, "aegis_approval_pending_age_seconds") == 0
    total = sum(s.value for s in scrape(m)["aegis_incidents"].samples)
    assert total == 4  # a, b, c, e: d was deleted


def test_shadow_namespaces_from_the_verifier_and_the_janitor() -> None:
    m = metrics.Metrics()
    m.shadow_opened("aegis-shadow-1-b")
    m.shadow_opened("aegis-shadow-1-c")
    assert value(m, "aegis_shadow_namespaces_active") == 2
    m.shadows_found(["aegis-shadow-1-b", "aegis-shadow-1-c", "aegis-shadow-old-b"])  # one left by a crash
    assert value(m, "aegis_shadow_namespaces_active") == 3
    m.shadow_closed("aegis-shadow-1-b")
    m.shadow_closed("aegis-shadow-1-c")
    assert value(m, "aegis_shadow_namespaces_active") == 1
    # The janitor's list was on its way while the verifier deleted one: it does not count again.
    m.shadow_opened("aegis-shadow-2-b")
    m.shadow_closed("aegis-shadow-2-b")
    m.shadows_found(["aegis-shadow-old-b", "aegis-shadow-2-b"])
    assert value(m, "aegis_shadow_namespaces_active") == 1
    m.shadow_opened("aegis-shadow-3-b")
    m.shadow_left("aegis-shadow-3-b")  # its deletion failed: it exists until the janitor looks again
    assert value(m, "aegis_shadow_namespaces_active") == 2
    m.shadows_found([])  # the janitor expired both
    assert value(m, "aegis_shadow_namespaces_active") == 0


def test_api_verbs_and_error_codes() -> None:
    assert metrics.api_verb("read_namespaced_pod_log") == "get"
    assert metrics.api_verb("list_namespace") == "list"
    assert metrics.api_verb("patch_namespaced_custom_object_status") == "patch"
    assert metrics.api_verb("frobnicate") == "other"
    m = metrics.Metrics()
    m.api_error("patch", 409)
    m.api_error("list", None)
    assert value(m, "aegis_kubernetes_api_errors_total", verb="patch", code="409") == 1
    assert value(m, "aegis_kubernetes_api_errors_total", verb="list", code="none") == 1


async def test_cluster_counts_failed_calls_but_not_not_found() -> None:
    m = metrics.Metrics()
    cluster = client.Cluster(kubernetes.client.ApiClient(), config.Settings(), metrics=m)

    def patch_namespaced_deployment(*_: Any, **__: Any) -> Any:
        raise kubernetes.client.ApiException(status=409, reason="Conflict")

    def read_namespaced_deployment(*_: Any, **__: Any) -> Any:
        raise kubernetes.client.ApiException(status=404, reason="Not Found")

    def list_namespaced_pod(*_: Any, **__: Any) -> Any:
        raise ConnectionRefusedError("no API server")

    try:
        with pytest.raises(client.ClusterError):
            await cluster._call("patch", patch_namespaced_deployment)
        assert await cluster._call("get", read_namespaced_deployment) is None
        with pytest.raises(client.ClusterError):
            await cluster._call("list", list_namespaced_pod)
    finally:
        cluster.close()
    assert value(m, "aegis_kubernetes_api_errors_total", verb="patch", code="409") == 1
    assert value(m, "aegis_kubernetes_api_errors_total", verb="list", code="none") == 1
    assert value(m, "aegis_kubernetes_api_errors_total", verb="get", code="404") == 0


# --- escalation reason classes, from the state the report node sees ------------------------------------------------


def line(stage: str) -> dict[str, Any]:
    return {"at": NOW.isoformat(), "stage": stage, "message": "..."}


def state_after(stage: str, **extra: Any) -> dict[str, Any]:
    target = {"kind": "Deployment", "namespace": "shop", "name": "web"}
    return {"incident": {"target": target}, "timeline": [line("intake"), line(stage)], **extra}


RULES_DIAGNOSIS = {"category": "missing-config", "source": "rules"}
LLM_DIAGNOSIS = {"category": "app-crash", "source": "llm"}


CRONJOB = {"target": {"kind": "CronJob", "namespace": "ops", "name": "db-backup"}}
UNKNOWN = {"category": "unknown", "source": "rules"}
ESCALATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "rules-know-no-fix": (state_after("propose", diagnosis=RULES_DIAGNOSIS), "needs-human"),
    # The explanation failed but the rules knew: the LLM is not why it escalated.
    "explanation-failed": (state_after("propose", diagnosis=RULES_DIAGNOSIS, llm_error="unreachable"), "needs-human"),
    "unknown": (state_after("propose", diagnosis=UNKNOWN), "unknown-cause"),
    "unknown-llm-down": (state_after("propose", diagnosis=UNKNOWN, llm_error="no answer in 60s"), "llm-unavailable"),
    "llm-no-plan": (state_after("propose", diagnosis=LLM_DIAGNOSIS, llm_error="no acceptable plan"), "llm-unavailable"),
    "cronjob": ({**state_after("propose", diagnosis=RULES_DIAGNOSIS), "incident": CRONJOB}, "unsupported-target"),
    "no-candidate-left": (state_after("propose", diagnosis=RULES_DIAGNOSIS, attempts=[{}]), "shadow-failed"),
    "bound-reached": (state_after("verify", attempts=[{}] * 3, verification={"passed": False}), "shadow-failed"),
    "refused": (state_after("gate", decision={"verdict": "refuse", "outcome": "not-applicable"}), "policy-refused"),
    "observe": (state_after("gate", decision={"verdict": "observe", "outcome": "not-applicable"}), "policy-refused"),
    "kept-changing": (state_after("gate", reverifications=3), "target-changed"),
    "changed-before-apply": (state_after("apply", decision={"outcome": "approved"}, results=[]), "target-changed"),
    "dry-run-refused": (state_after("apply", results=[{"dryRun": "failed"}]), "apply-failed"),
    "patch-failed": (state_after("apply", results=[{"applied": True}, {"error": "HTTP 422"}]), "apply-failed"),
    "elsewhere": (state_after("confirm"), "other"),
}


@pytest.mark.parametrize(("current", "expected"), list(ESCALATIONS.values()), ids=list(ESCALATIONS))
def test_escalation_class(current: dict[str, Any], expected: str) -> None:
    assert metering.escalation_class(current) == expected
    assert expected in metrics.ESCALATION_CLASSES


def test_only_escalations_are_counted_when_a_workflow_ends() -> None:
    m = metrics.Metrics()
    deps = context.Deps(settings=config.Settings(), incidents=None, gatherer=None, metrics=m)  # type: ignore[arg-type]
    metering.ended(deps, state_after("propose", diagnosis=RULES_DIAGNOSIS), "Escalated")
    metering.ended(deps, state_after("confirm"), "Resolved")
    metering.ended(deps, state_after("gate"), "Rejected")
    assert value(m, "aegis_escalations_total", reason_class="needs-human") == 1
    assert sum(s.value for s in scrape(m)["aegis_escalations"].samples if s.name.endswith("_total")) == 1
    metering.ended(context.Deps(settings=config.Settings(), incidents=None, gatherer=None), {}, "Escalated")  # type: ignore[arg-type]


# --- stage latency from a real graph run ------------------------------------------------------------------------------


async def test_a_graph_run_observes_every_stage_it_completes() -> None:
    m = metrics.Metrics()
    store, gatherer = test_graph.FakeStore(), test_graph.FakeGatherer(test_graph._pull_evidence())
    deps = context.Deps(
        settings=config.Settings(mode="observe"), incidents=store, gatherer=gatherer, clock=lambda: NOW, metrics=m
    )
    graph = build.build_graph(InMemorySaver())
    final = await graph.ainvoke(
        {"incident": test_graph._incident(), "hints": ['Back-off pulling image "nginx:bad"'], "timeline": []},
        {"configurable": {"thread_id": "shop/deployment-web/u1"}},
        context=deps,
    )
    assert final["phase"] == "Diagnosed"
    for stage in ("intake", "gather", "diagnose", "report"):
        assert value(m, "aegis_stage_duration_seconds_count", stage=stage) == 1, stage
        assert value(m, "aegis_stage_duration_seconds_sum", stage=stage) >= 0
    for stage in ("propose", "verify", "gate", "apply", "confirm"):  # observe mode stops after the diagnosis
        assert value(m, "aegis_stage_duration_seconds_count", stage=stage) == 0, stage
    assert value(m, "aegis_escalations_total", reason_class="needs-human") == 0


async def test_a_stage_that_raises_is_not_observed() -> None:
    m = metrics.Metrics()

    async def broken(_current: Any, _runtime: Any) -> dict[str, Any]:
        raise RuntimeError("API down")

    class Runtime:
        context = context.Deps(settings=config.Settings(), incidents=None, gatherer=None, metrics=m)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError):
        await metering.timed("gather", broken)({}, Runtime())  # type: ignore[arg-type]
    assert value(m, "aegis_stage_duration_seconds_count", stage="gather") == 0


# --- the endpoint ---------------------------------------------------------------------------------------------------


async def test_metrics_and_readyz_endpoints() -> None:
    m = metrics.Metrics()
    m.applied("applied")
    ready = {"now": False}
    async with metrics_server.serve(m, "127.0.0.1", 0, ready=lambda: ready["now"]) as server:
        assert server.port > 0
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
            families = {f.name: f for f in parser.text_string_to_metric_families(scraped.text)}
            assert {s.value for s in families["aegis_applies"].samples if s.labels == {"result": "applied"}} == {1.0}
            assert (await http.get("/readyz")).status_code == 503
            ready["now"] = True
            answer = await http.get("/readyz")
            assert answer.status_code == 200 and answer.text.strip() == "ok"
            assert (await http.get("/nothing")).status_code == 404
    async with (
        metrics_server.serve(m, "127.0.0.1", 0) as server,  # no readiness check: always ready
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        assert (await http.get("/readyz")).status_code == 200


async def test_a_failing_readiness_check_means_not_ready() -> None:
    def check() -> bool:
        raise RuntimeError("lease unknown")

    async with (
        metrics_server.serve(metrics.Metrics(), "127.0.0.1", 0, ready=check) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        assert (await http.get("/readyz")).status_code == 503


def test_settings() -> None:
    assert (config.Settings().metrics_port, config.Settings().metrics_addr) == (9090, "0.0.0.0")
    assert config.load_settings(metrics_port=0).metrics_port == 0
    with pytest.raises(config.SettingsError, match="AEGIS_METRICS_PORT"):
        config.load_settings(metrics_port=70000)
