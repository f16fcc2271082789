"""The gate's policy table: every verdict and its reason, from plain facts."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from aegis import models, policy

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")


def act(kind: str = "set-image", risk: models.Risk = "low") -> models.Action:
    return models.Action(kind=kind, target=TARGET, risk=risk)


GOOD = policy.Facts(
    namespace="shop",
    actions=(act(),),
    confidence=0.95,
    baseline_reproduced=True,
    candidate_passed=True,
    target_unchanged=True,
    now=NOW,
)
AUTO = policy.Policy(modes=(("shop", "auto"), ("lab-*", "observe")))


@pytest.mark.parametrize(
    ("rules", "change", "verdict", "reason"),
    [
        (AUTO, {}, "auto", "applied without asking"),
        (policy.Policy(), {}, "ask", "propose mode"),
        (AUTO, {"namespace": "lab-1"}, "observe", "observe mode"),
        (AUTO, {"namespace": "kube-system"}, "refuse", "denied by policy"),
        (AUTO, {"actions": ()}, "refuse", "no action"),
        (AUTO, {"actions": (act("scale", "high"),)}, "refuse", "above the allowed medium"),
        (AUTO, {"candidate_passed": False}, "refuse", "did not pass verification"),
        (AUTO, {"target_unchanged": False}, "refuse", "verified again"),
        (AUTO, {"last_apply_on_target": NOW - datetime.timedelta(minutes=3)}, "refuse", "cooldown"),
        (AUTO, {"applies_last_hour": 10}, "refuse", "cap 10"),
        (AUTO, {"actions": (act("set-env", "medium"),)}, "ask", "not every action is low risk"),
        (AUTO, {"baseline_reproduced": False}, "ask", "did not reproduce"),
        (AUTO, {"baseline_reproduced": None}, "ask", "did not reproduce"),
        (AUTO, {"confidence": 0.5}, "ask", "confidence 0.50 is below 0.80"),
    ],
)
def test_policy_table(rules: policy.Policy, change: dict, verdict: str, reason: str) -> None:
    judgement = policy.judge(rules, dataclasses.replace(GOOD, **change))
    assert judgement.verdict == verdict
    assert reason in judgement.reason


def test_shadow_namespaces_expire_by_their_label() -> None:
    from aegis import shadow

    labelled = {"metadata": {"labels": {shadow.LABEL_SHADOW: "true", shadow.LABEL_EXPIRES: str(int(NOW.timestamp()))}}}
    assert shadow.expired(labelled, NOW) is True
    assert shadow.expired(labelled, NOW - datetime.timedelta(seconds=1)) is False
    assert shadow.expired({"metadata": {"labels": {}}}, NOW) is False  # not ours: never touched
    broken = {"metadata": {"labels": {shadow.LABEL_SHADOW: "true", shadow.LABEL_EXPIRES: "soon"}}}
    assert shadow.expired(broken, NOW) is True
