"""The gate node with fakes: who may skip the human in auto mode, and a human's question is never taken back."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from aegis import config, models
from graph import context, targets
from graph.nodes import gate

NOW = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web", uid="u1")
LIVE = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}, "spec": {"replicas": 2}}


class Store:
    def __init__(self, phase: str = "Verifying") -> None:
        self.status: dict[str, Any] = {"phase": phase}
        self.spec_updates = 0

    async def set_status(self, namespace: str, name: str, status: dict[str, Any], timeline: Any = None) -> None:
        self.status.update(status)

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": dict(self.status)}

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return []

    async def update_spec(self, namespace: str, name: str, mutate: Any) -> None:
        self.spec_updates += 1


class Cluster:
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return LIVE

    async def event(self, *args: Any) -> None:
        return None


@dataclasses.dataclass
class Runtime:
    context: context.Deps


def state(diagnosis_source: str, plan_source: str = "rules") -> dict[str, Any]:
    incident = models.Incident(name="deployment-web", namespace="shop", uid="i1", target=TARGET, fingerprint="f")
    action = models.Action(kind="set-image", target=TARGET, params={"image": "nginx:1.27"}, risk="low")
    return {
        "incident": incident.dump(),
        "chosen": models.Plan(actions=[action], rank=1, source=plan_source).dump(),  # type: ignore[arg-type]
        "verification": models.Verification(passed=True, baselineReproduced=True, candidateHealthy=True).dump(),
        "diagnosis": models.Diagnosis(
            category="image-pull",
            summary="s",
            confidence=0.95,
            source=diagnosis_source,  # type: ignore[arg-type]
        ).dump(),
        "verified": targets.identity(LIVE),
    }


def deps(store: Store, **settings: Any) -> context.Deps:
    return context.Deps(
        settings=config.Settings(mode="auto", **settings),
        incidents=store,
        gatherer=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
        cluster=Cluster(),
    )


async def test_confident_low_risk_rules_plan_is_applied_by_policy_in_auto_mode() -> None:
    update = await gate.run(state("rules"), Runtime(deps(Store())))  # type: ignore[arg-type]
    assert update["decision"]["outcome"] == "approved" and update["decision"]["by"] == "policy"


async def test_a_rules_plan_for_an_llm_diagnosis_needs_a_human() -> None:
    store = Store()
    # Asking is LangGraph's interrupt(), which needs a running graph: reaching it is what this test shows.
    with pytest.raises(RuntimeError):
        await gate.run(state("llm"), Runtime(deps(store)))  # type: ignore[arg-type]
    assert store.status["phase"] == "AwaitingApproval"
    assert "the LLM diagnosed the failure" in store.status["decision"]["reason"]


async def test_a_question_already_asked_is_not_taken_back_by_a_changed_policy() -> None:
    store = Store(phase="AwaitingApproval")  # asked under propose mode; restarted in auto mode
    with pytest.raises(RuntimeError):
        await gate.run(state("rules"), Runtime(deps(store)))  # type: ignore[arg-type]
    assert store.spec_updates == 0  # the answer the human may have given is kept, not reset
    assert "decision" not in store.status or store.status["decision"].get("outcome") != "approved"


def test_an_answer_binds_to_the_question_it_names() -> None:
    from aegis import approvals

    asked = {"decision": {"question": "q2"}}
    assert approvals.answers_question({"decision": "Approved"}, asked)  # plain kubectl: the current question
    assert approvals.answers_question({"decision": "Approved", "question": "q2"}, asked)
    assert not approvals.answers_question({"decision": "Approved", "question": "q1"}, asked)
    cmds = approvals.commands("deployment-web", "shop", "q2")
    assert cmds["approve"] == "aegis approve deployment-web -n shop --question q2"
    assert '"question":"q2"' in cmds["kubectl"]


def test_each_ask_has_its_own_question_id() -> None:
    incident = models.Incident(name="deployment-web", namespace="shop", uid="i1", target=TARGET, fingerprint="f")
    current = state("rules")
    first = gate.question_id(incident, current, NOW)  # type: ignore[arg-type]
    assert first == gate.question_id(incident, current, NOW)  # type: ignore[arg-type]
    assert first != gate.question_id(incident, current, NOW + datetime.timedelta(seconds=1))  # type: ignore[arg-type]
