"""The gate's rules: may a verified plan be applied automatically, must a human say yes, or is it refused?

Per-namespace mode (glob patterns, first match wins, else the default):

- ``observe``: diagnose only; nothing is proposed for applying.
- ``propose`` (the default): verify in a shadow namespace, then wait for a human.
- ``auto``: apply without asking when every action is low risk, the baseline
  reproduced the failure, the candidate passed, the diagnosis is confident, and
  the plan came from the rules (LLM-written plans need a human unless
  ``AEGIS_LLM_AUTO_APPLY`` allows them).

Refused outright (Escalated, with the reason): denied namespaces, actions outside
the vocabulary or above the allowed risk, actions on a kind AEGIS never changes
(``models.UNCHANGED_KINDS``: DaemonSet, Job, CronJob), targets that changed since verification
(re-verify instead), and rate limits (a cooldown per target, a cap per hour).
Pure functions of plain data; called by the gate node.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
from typing import Literal

from aegis import models

Mode = Literal["observe", "propose", "auto"]
Verdict = Literal["observe", "auto", "ask", "refuse"]
_RISK_ORDER = {"low": 0, "medium": 1, "high": 2}


@dataclasses.dataclass(frozen=True)
class Policy:
    default_mode: Mode = "propose"
    modes: tuple[tuple[str, Mode], ...] = ()  # (namespace glob, mode), first match wins
    deny_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    max_risk: models.Risk = "medium"  # above this, refused even with a human
    auto_min_confidence: float = 0.8
    auto_llm_plans: bool = False  # plans the LLM wrote are applied only with a human's yes, unless allowed
    cooldown: datetime.timedelta = datetime.timedelta(minutes=10)
    max_applies_per_hour: int = 10

    def mode_for(self, namespace: str) -> Mode:
        for pattern, mode in self.modes:
            if fnmatch.fnmatchcase(namespace, pattern):
                return mode
        return self.default_mode


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the gate knows when it decides."""

    namespace: str
    actions: tuple[models.Action, ...]
    confidence: float
    baseline_reproduced: bool | None
    candidate_passed: bool
    target_unchanged: bool
    now: datetime.datetime
    last_apply_on_target: datetime.datetime | None = None
    applies_last_hour: int = 0
    source: str = "rules"  # llm when the LLM diagnosed the failure or wrote the plan, else rules


@dataclasses.dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(policy: Policy, facts: Facts) -> Judgement:
    """The gate's verdict and why, in the order an SRE would check."""
    if any(fnmatch.fnmatchcase(facts.namespace, pattern) for pattern in policy.deny_namespaces):
        return Judgement("refuse", f"namespace {facts.namespace} is denied by policy")
    mode = policy.mode_for(facts.namespace)
    if mode == "observe":
        return Judgement("observe", f"namespace {facts.namespace} is in observe mode: diagnosis only")
    if not facts.actions:
        return Judgement("refuse", "there is no action to apply")
    vocabulary = set(models.ActionKind.__args__)  # type: ignore[attr-defined]
    for action in facts.actions:
        if action.kind not in vocabulary:
            return Judgement("refuse", f"{action.kind!r} is not in the action vocabulary")
        if _RISK_ORDER[action.risk] > _RISK_ORDER[policy.max_risk]:
            return Judgement("refuse", f"{action.kind} is {action.risk} risk, above the allowed {policy.max_risk}")
        if action.target.kind in models.UNCHANGED_KINDS:
            return Judgement(
                "refuse", f"{action.kind} on {action.target}: AEGIS never changes a {action.target.kind}; a human must"
            )
    if not facts.candidate_passed:
        return Judgement("refuse", "the fix did not pass verification in the shadow namespace")
    if not facts.target_unchanged:
        return Judgement("refuse", "the target changed since verification; it must be verified again")
    if facts.last_apply_on_target and facts.now - facts.last_apply_on_target < policy.cooldown:
        return Judgement("refuse", f"a fix was applied to this target less than {policy.cooldown} ago (cooldown)")
    if facts.applies_last_hour >= policy.max_applies_per_hour:
        return Judgement(
            "refuse",
            f"{facts.applies_last_hour} fixes were applied in the last hour (cap {policy.max_applies_per_hour})",
        )
    if mode == "auto":
        blockers = []
        if any(action.risk != "low" for action in facts.actions):
            blockers.append("not every action is low risk")
        if facts.baseline_reproduced is not True:
            blockers.append("the shadow baseline did not reproduce the failure")
        if facts.source == "llm" and not policy.auto_llm_plans:
            blockers.append("the LLM diagnosed the failure or wrote the plan")
        if facts.confidence < policy.auto_min_confidence:
            blockers.append(f"confidence {facts.confidence:.2f} is below {policy.auto_min_confidence:.2f}")
        if not blockers:
            return Judgement("auto", "low risk, reproduced, verified and confident: applied without asking")
        return Judgement("ask", "auto mode, but " + "; ".join(blockers) + ": a human decides")
    return Judgement("ask", f"namespace {facts.namespace} is in propose mode: a human decides")
