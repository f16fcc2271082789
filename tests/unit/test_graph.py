"""The workflow graph with fakes injected: routing, node outputs, recorded status, checkpoint resume."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from aegis import config, models
from graph import build, context, routing
from graph.nodes import report

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")


class FakeStore:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.timeline: list[dict[str, Any]] = []

    async def set_status(
        self, namespace: str, name: str, status: dict[str, Any], timeline: list[models.TimelineEntry] | None = None
    ) -> None:
        assert (namespace, name) == ("shop", "deployment-web")
        self.status.update(status)
        self.timeline += [line.dump() for line in timeline or []]


class FakeGatherer:
    def __init__(self, evidence: models.Evidence, fail_times: int = 0) -> None:
        self.evidence = evidence
        self.calls = 0
        self.fail_times = fail_times

    async def gather(self, incident: models.Incident, hints: list[str], now: datetime.datetime) -> models.Evidence:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise ConnectionError("API server unreachable")
        assert hints == ['Back-off pulling image "nginx:bad"']
        return self.evidence


def _incident() -> dict[str, Any]:
    now = NOW
    return models.Incident(
        name="deployment-web",
        namespace="shop",
        uid="u1",
        target=TARGET,
        fingerprint="f" * 16,
        sources=[
            models.Source(
                result="k8sgpt/shopweb", kind="Pod", object="shop/web-1", texts=["x"], firstSeen=now, lastSeen=now
            )
        ],
    ).dump()


def _pull_evidence(found: bool = True) -> models.Evidence:
    pod = models.PodSummary(
        name="web-6d4cf56db6-abcde",
        phase="Pending",
        containers=[
            models.ContainerState(
                name="web",
                image="nginx:bad",
                state="waiting",
                reason="ImagePullBackOff",
                message='Back-off pulling image "nginx:bad"',
            )
        ],
    )
    return models.Evidence(target=TARGET, targetFound=found, pods=[pod] if found else [], collectedAt=NOW)


def _deps(store: FakeStore, gatherer: FakeGatherer) -> context.Deps:
    return context.Deps(settings=config.Settings(mode="observe"), incidents=store, gatherer=gatherer, clock=lambda: NOW)


def test_route_after_gather() -> None:
    assert routing.after_gather({"evidence": {"targetFound": True}}) == "diagnose"
    assert routing.after_gather({"evidence": {"targetFound": False}}) == "report"
    assert routing.after_gather({}) == "diagnose"


def test_remediation_routes() -> None:
    assert routing.after_diagnose({"mode": "observe"}) == "report"
    assert routing.after_diagnose({"mode": "propose"}) == "propose"
    assert routing.after_propose({"plans": [{"rank": 1}]}) == "verify"
    assert routing.after_propose({"plans": []}) == "report"
    passed = {"verification": {"passed": True}}
    assert routing.after_verify(passed) == "gate"
    failed = {"verification": {"passed": False}, "attempts": [{}], "max_candidates": 3}
    assert routing.after_verify(failed) == "propose"
    assert routing.after_verify({**failed, "attempts": [{}, {}, {}]}) == "report"
    assert routing.after_gate({"reverify": True}) == "verify"
    assert routing.after_gate({"decision": {"outcome": "approved"}}) == "apply"
    assert routing.after_gate({"decision": {"outcome": "rejected"}}) == "report"
    applied = {"results": [{"applied": True}], "phase": "Applying"}
    assert routing.after_apply(applied) == "confirm"
    assert routing.after_apply({**applied, "phase": "Escalated"}) == "report"
    assert routing.after_apply({"results": [], "phase": "Applying"}) == "report"


def test_report_conclusions() -> None:
    assert report.conclude({"evidence": {"targetFound": False}})[0] == "Failed"
    assert report.conclude({"evidence": {}, "diagnosis": {"category": "unknown"}}) == (
        "Diagnosed",
        "no known failure signature matched; needs a human look",
    )
    phase, reason = report.conclude({"evidence": {}, "diagnosis": {"category": "oom-killed"}})
    assert phase == "Diagnosed" and "oom-killed" in reason
    assert report.conclude({"phase": "Resolved", "reason": "healed"}) == ("Resolved", "healed")
    failed_twice = {
        "mode": "propose",
        "attempts": [{"verification": {"details": ["candidate unhealthy: x"]}}] * 2,
        "verification": {"passed": False},
    }
    phase, reason = report.conclude(failed_twice)
    assert phase == "Escalated" and "2 candidate fix(es) failed" in reason


async def test_run_records_diagnosis_and_timeline() -> None:
    store, gatherer = FakeStore(), FakeGatherer(_pull_evidence())
    graph = build.build_graph(InMemorySaver())
    cfg = {"configurable": {"thread_id": "shop/deployment-web/u1"}}
    final = await graph.ainvoke(
        {"incident": _incident(), "hints": ['Back-off pulling image "nginx:bad"'], "timeline": []},
        cfg,
        context=_deps(store, gatherer),
    )
    assert final["phase"] == "Diagnosed"
    assert store.status["phase"] == "Diagnosed"
    assert store.status["diagnosis"]["category"] == "image-pull"
    assert [line["stage"] for line in store.timeline] == ["intake", "gather", "diagnose", "report"]
    assert [line["stage"] for line in final["timeline"]] == ["intake", "gather", "diagnose", "report"]


async def test_gone_target_skips_diagnosis() -> None:
    store = FakeStore()
    graph = build.build_graph(InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    final = await graph.ainvoke(
        {"incident": _incident(), "hints": ['Back-off pulling image "nginx:bad"']},
        cfg,
        context=_deps(store, FakeGatherer(_pull_evidence(found=False))),
    )
    assert final["phase"] == "Failed"
    assert "diagnosis" not in store.status
    assert [line["stage"] for line in store.timeline] == ["intake", "gather", "report"]


async def test_failed_node_resumes_from_checkpoint_without_rerunning_earlier_nodes() -> None:
    store, gatherer = FakeStore(), FakeGatherer(_pull_evidence(), fail_times=1)
    saver = InMemorySaver()
    cfg = {"configurable": {"thread_id": "t"}}
    deps = _deps(store, gatherer)
    graph = build.build_graph(saver)
    with pytest.raises(ConnectionError):
        await graph.ainvoke(
            {"incident": _incident(), "hints": ['Back-off pulling image "nginx:bad"']}, cfg, context=deps
        )
    snapshot = await graph.aget_state(cfg)
    assert snapshot.next == ("gather",)
    # A new process (fresh graph, same checkpointer) continues where it stopped: intake does not run again.
    final = await build.build_graph(saver).ainvoke(None, cfg, context=deps)
    assert final["phase"] == "Diagnosed"
    assert [line["stage"] for line in store.timeline] == ["intake", "gather", "diagnose", "report"]


def test_a_settling_workload_is_looked_at_again_before_unknown() -> None:
    from graph.nodes import diagnose

    starting = models.PodSummary(
        name="web-1",
        phase="Pending",
        containers=[models.ContainerState(name="web", state="waiting", reason="ContainerCreating")],
    )
    assert diagnose.settling(models.Evidence(target=TARGET, pods=[starting], collectedAt=NOW))
    rolling = models.Evidence(
        target=TARGET,
        collectedAt=NOW,
        targetSummary={"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]},
    )
    assert diagnose.settling(rolling)
    crashing = models.PodSummary(
        name="web-1",
        phase="Running",
        containers=[models.ContainerState(name="web", state="waiting", reason="CrashLoopBackOff", restartCount=3)],
    )
    assert not diagnose.settling(models.Evidence(target=TARGET, pods=[crashing], collectedAt=NOW))


def test_a_workload_healthy_by_the_time_aegis_looks_is_not_escalated() -> None:
    from graph.nodes import diagnose

    ready = models.ContainerState(name="web", image="nginx:1.27", ready=True, state="running")
    pod = models.PodSummary(name="web-6d4cf56db6-x8k2p", phase="Running", containers=[ready])
    healthy = models.Evidence(
        target=TARGET, pods=[pod], targetSummary={"replicas": 1, "status.readyReplicas": 1}, collectedAt=NOW
    )
    assert diagnose.recovered(healthy)
    starting = healthy.model_copy(update={"target_summary": {"replicas": 2, "status.readyReplicas": 1}})
    assert not diagnose.recovered(starting)
    assert not diagnose.recovered(_pull_evidence())
    assert not diagnose.recovered(healthy.model_copy(update={"pods": []}))
    assert routing.after_diagnose({"mode": "propose", "phase": "Resolved"}) == "report"
    assert routing.after_diagnose({"mode": "propose", "phase": "Diagnosing"}) == "propose"
