"""Approval expiry: the deadline read from a stored Incident, and the gate's handling of an "Expired" answer."""

from __future__ import annotations

import datetime
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from aegis import config, expiry, models
from graph import context, engine, routing, state, targets
from graph.nodes import gate, report

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
HOUR = 3600.0
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web", uid="d1")


def waiting(at: str, *, lines: list[dict[str, Any]] | None = None, answer: str = "Pending") -> dict[str, Any]:
    """An Incident as stored while it waits for approval (pending decision stamped ``at``)."""
    return {
        "metadata": {"name": "deployment-web", "namespace": "shop"},
        "spec": {"approval": {"decision": answer}},
        "status": {
            "phase": "AwaitingApproval",
            "decision": {"verdict": "ask", "outcome": "pending", "at": at},
            "timeline": lines or [],
        },
    }


def line(at: str, message: str, stage: str = "gate") -> dict[str, Any]:
    return {"at": at, "stage": stage, "message": message}


def test_the_deadline_counts_from_the_latest_wait_on_the_timeline() -> None:
    first = line("2026-11-21T08:00:00Z", "waiting for approval (propose mode): aegis approve deployment-web -n shop")
    again = line("2026-11-21T09:30:00Z", "waiting for approval (propose mode): aegis approve deployment-web -n shop")
    incident = waiting("2026-11-21T09:30:00.004Z", lines=[first, line("2026-11-21T09:00:00Z", "verifying"), again])
    assert expiry.deadline(incident, HOUR) == datetime.datetime(2026, 11, 21, 10, 30, tzinfo=datetime.UTC)
    assert expiry.deadline(incident, 5) == datetime.datetime(2026, 11, 21, 9, 30, 5, tzinfo=datetime.UTC)


def test_without_its_timeline_line_the_pending_decision_dates_the_wait() -> None:
    incident = waiting("2026-11-21T09:00:00+00:00")
    assert expiry.deadline(incident, HOUR) == NOW
    assert expiry.overdue(incident, HOUR, NOW)  # due at NOW: expired
    assert not expiry.overdue(incident, HOUR, NOW - datetime.timedelta(seconds=1))


def test_only_an_unanswered_wait_is_overdue() -> None:
    assert not expiry.overdue(waiting("2026-11-21T08:00:00Z", answer="Approved"), HOUR, NOW)
    assert not expiry.overdue(waiting("2026-11-21T08:00:00Z", answer="Rejected"), HOUR, NOW)
    resolved = waiting("2026-11-21T08:00:00Z")
    resolved["status"]["phase"] = "Resolved"
    assert expiry.deadline(resolved, HOUR) is None and not expiry.overdue(resolved, HOUR, NOW)
    assert expiry.deadline({"status": {"phase": "AwaitingApproval"}}, HOUR) is None  # nothing dates it
    no_spec = waiting("2026-11-21T08:00:00Z")
    del no_spec["spec"]
    assert expiry.overdue(no_spec, HOUR, NOW)


def test_timeouts_and_the_expired_reason_read_as_people_say_them() -> None:
    assert [expiry.span(s) for s in (5, 90, 3600, 5400, 86400 + 7200)] == ["5s", "1m30s", "1h0m", "1h30m", "1d2h"]
    reason = expiry.expired_reason("deployment-web", "shop", HOUR)
    assert reason.startswith("no decision within 1h0m; the verified fix was not applied; re-trigger by ")
    assert "kubectl delete incident deployment-web -n shop" in reason


def test_the_sweep_runs_often_enough_for_the_timeout() -> None:
    assert engine.sweep_interval(HOUR) == 60.0
    assert engine.sweep_interval(300) == 30.0
    assert engine.sweep_interval(5) == 0.5
    assert engine.sweep_interval(1) == 0.5


def test_answers_map_to_outcomes_and_expired_ends_the_incident() -> None:
    assert gate.outcome_of({"decision": "Approved", "by": "ada"}) == "approved"
    assert gate.outcome_of({"decision": "Rejected"}) == "rejected"
    assert gate.outcome_of({"decision": "Expired"}) == "expired"
    assert gate.outcome_of(None) == "rejected" and gate.outcome_of({"decision": "maybe"}) == "rejected"
    incident = models.Incident(name="deployment-web", namespace="shop", target=TARGET, fingerprint="f" * 16)
    update = gate.expired(incident, HOUR, NOW)
    assert update["phase"] == "Expired" and update["reverify"] is False
    assert update["decision"]["outcome"] == "expired" and update["decision"]["verdict"] == "ask"
    assert update["reason"] == update["decision"]["reason"] == expiry.expired_reason("deployment-web", "shop", HOUR)
    assert routing.after_gate(update) == "report"
    assert report.conclude({**update, "evidence": {}}) == ("Expired", update["reason"])


# --- the gate node itself, in a one-node graph with fakes: ask, then resume with "Expired" ----------------------


LIVE = {"metadata": {"name": "web", "namespace": "shop", "uid": "d1"}, "spec": {"replicas": 2}}


class FakeStore:
    def __init__(self) -> None:
        self.obj: dict[str, Any] = {"spec": {"approval": {"decision": "Pending"}}, "status": {}}

    async def set_status(
        self, namespace: str, name: str, status: dict[str, Any], timeline: list[models.TimelineEntry] | None = None
    ) -> None:
        self.obj["status"].update(status)
        self.obj["status"]["timeline"] = self.obj["status"].get("timeline", []) + [t.dump() for t in timeline or []]

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.obj

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self.obj]

    async def update_spec(self, namespace: str, name: str, mutate: Any) -> None:
        self.obj["spec"].update(mutate(None))


class FakeCluster:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.live = LIVE

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.live

    async def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def gate_only() -> Any:
    builder = StateGraph(state.IncidentState, context_schema=context.Deps)
    builder.add_node("gate", gate.run)
    builder.add_edge(START, "gate")
    builder.add_edge("gate", END)
    return builder.compile(checkpointer=InMemorySaver())


def asking(store: FakeStore, cluster: FakeCluster) -> tuple[context.Deps, dict[str, Any]]:
    settings = config.Settings(mode="propose", approval_timeout_seconds=HOUR)
    deps = context.Deps(settings=settings, incidents=store, gatherer=None, cluster=cluster, clock=lambda: NOW)  # type: ignore[arg-type]
    incident = models.Incident(name="deployment-web", namespace="shop", uid="u1", target=TARGET, fingerprint="f" * 16)
    action = models.Action(kind="rollback", target=TARGET, risk="low")
    start = {
        "incident": incident.dump(),
        "chosen": models.Plan(actions=[action]).dump(),
        "verification": models.Verification(passed=True, baselineReproduced=True).dump(),
        "diagnosis": models.Diagnosis(category="image-pull", summary="bad tag", confidence=0.9, source="rules").dump(),
        "verified": targets.identity(LIVE),
        "plans": [],
        "timeline": [],
    }
    return deps, start


async def test_the_gate_shows_the_deadline_and_an_expired_answer_ends_it_expired() -> None:
    graph = gate_only()
    store, cluster = FakeStore(), FakeCluster()
    deps, start = asking(store, cluster)
    thread = {"configurable": {"thread_id": "t"}}

    await graph.ainvoke(start, thread, context=deps)
    asked = store.obj["status"]
    assert asked["phase"] == "AwaitingApproval"
    assert asked["decision"]["outcome"] == "pending"
    assert expiry.parse_time(asked["decision"]["expiresAt"]) == NOW + datetime.timedelta(hours=1)
    assert expiry.deadline(store.obj, HOUR) == NOW + datetime.timedelta(hours=1)  # the same moment

    final = await graph.ainvoke(Command(resume={"decision": "Expired"}), thread, context=deps)
    assert final["phase"] == "Expired" and final["decision"]["outcome"] == "expired"
    status = store.obj["status"]
    assert status["phase"] == "Expired" and status["decision"]["outcome"] == "expired"
    assert status["reason"].startswith("no decision within 1h0m; the verified fix was not applied; re-trigger by ")
    assert status["timeline"][-1]["message"] == "approval expired: no decision within 1h0m"
    assert cluster.events[-1][:2] == ("Warning", "AegisGate")
    assert "approval expired" in cluster.events[-1][2]
    assert routing.after_gate(final) == "report"


def test_the_review_screen_and_the_approval_message_show_the_deadline() -> None:
    import io

    from rich.console import Console

    from aegis import notify, review
    from tests import factories

    incident = factories.incident("storefront", "web")
    incident["status"]["decision"]["expiresAt"] = "2026-11-21T11:00:04Z"
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(review.screen(incident, now=NOW))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "expires at: 2026-11-21 11:00:04Z (in 1h; unanswered, it ends Expired, nothing applied)" in text
    assert notify.build_message(incident, "awaiting-approval", now=NOW)["expiresAt"] == "2026-11-21T11:00:04Z"
    assert notify.build_message(incident, "ended", now=NOW)["expiresAt"] is None
    slack = notify.slack(notify.build_message(incident, "awaiting-approval", now=NOW))
    assert "*Decide by:* 2026-11-21T11:00:04Z" in str(slack)

    incident["status"]["decision"]["outcome"] = "expired"
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(review.screen(incident, now=NOW))
    assert "expires at" not in console.file.getvalue()  # type: ignore[attr-defined]


async def test_a_target_changed_while_waiting_leaves_the_wait_so_the_next_question_is_a_new_one() -> None:
    graph = gate_only()
    store, cluster = FakeStore(), FakeCluster()
    deps, start = asking(store, cluster)
    thread = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(start, thread, context=deps)
    assert store.obj["status"]["phase"] == "AwaitingApproval"

    cluster.live = {**LIVE, "spec": {"replicas": 2, "progressDeadlineSeconds": 601}}
    store.obj["spec"]["approval"] = {"decision": "Approved"}
    final = await graph.ainvoke(Command(resume={"decision": "Approved"}), thread, context=deps)
    assert final["reverify"] is True and routing.after_gate(final) == "verify"
    assert store.obj["status"]["phase"] == "Verifying"  # the gate's next visit writes a new wait and deadline
    assert store.obj["status"]["timeline"][-1]["message"] == "the target changed since verification: verifying again"
    assert store.obj["spec"]["approval"]["decision"] == "Pending"  # the approval was for the object as verified


def test_an_approval_seen_after_the_deadline_is_late_unless_signed_in_time() -> None:
    import types

    from aegis import config
    from graph import engine

    began = datetime.datetime(2026, 11, 22, 8, 0, tzinfo=datetime.UTC)
    waiting = {
        "status": {
            "phase": "AwaitingApproval",
            "timeline": [{"at": began.isoformat(), "stage": "gate", "message": "waiting for approval (x): aegis ..."}],
        }
    }

    def late(now: datetime.datetime, approval: dict, verified: bool) -> bool:
        fake = types.SimpleNamespace(
            settings=config.Settings(approval_timeout_seconds=3600), deps=types.SimpleNamespace(clock=lambda: now)
        )
        return engine.Engine._late(fake, waiting, approval, verified)  # type: ignore[arg-type]

    in_time = began + datetime.timedelta(minutes=30)
    after = began + datetime.timedelta(hours=3)
    assert not late(in_time, {"decision": "Approved"}, verified=False)
    assert late(after, {"decision": "Approved"}, verified=False)  # when it was given is unknown
    signed_in_time = {"decision": "Approved", "approvedAt": in_time.isoformat()}
    assert not late(after, signed_in_time, verified=True)  # given in time, seen late (operator was down)
    assert late(after, signed_in_time, verified=False)  # an unsigned time proves nothing
    assert late(after, {"decision": "Approved", "approvedAt": after.isoformat()}, verified=True)
