"""Node ``gate``: policy decides auto, ask or refuse; asking is a LangGraph ``interrupt()`` answered by a human.

The node runs again from its first line when the approval resumes it, so what it
does before ``interrupt()`` is idempotent: the AwaitingApproval status is written
only if the Incident does not show it yet. A wait that outlives
AEGIS_APPROVAL_TIMEOUT_SECONDS is resumed by the engine's sweep with the answer
``{"decision": "Expired"}``: the incident ends Expired and nothing is applied.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from aegis import approvals, expiry, models, policy
from graph import context, recording, state, targets

MAX_REVERIFY = 3


async def _history(deps: context.Deps, incident: models.Incident) -> tuple[datetime.datetime | None, int]:
    """When a fix was last applied to this target, and how many fixes were applied in the last hour."""
    now = deps.clock()
    last: datetime.datetime | None = None
    recent = 0
    for obj in await deps.incidents.list():
        applied_at = ((obj.get("status") or {}).get("outcome") or {}).get("appliedAt")
        if not applied_at:
            continue
        at = datetime.datetime.fromisoformat(applied_at.replace("Z", "+00:00"))
        if now - at < datetime.timedelta(hours=1):
            recent += 1
        same = ((obj.get("spec") or {}).get("target") or {}) == incident.target.dump()
        if same and (last is None or at > last):
            last = at
    return last, recent


async def _unchanged(deps: context.Deps, incident: models.Incident, verified: dict[str, Any]) -> bool:
    live = await deps.cluster.get(incident.target.kind, incident.namespace, incident.target.name)
    return bool(live) and {k: v for k, v in targets.identity(live).items()} == {
        k: verified.get(k) for k in ("uid", "spec")
    }


async def _reset_approval(deps: context.Deps, incident: models.Incident) -> None:
    """An approval is for one verified plan on one state of the target: asking again needs a fresh answer."""
    await deps.incidents.update_spec(
        incident.namespace,
        incident.name,
        # (and no approver: a name from an earlier answer is not this answer's; see aegis.approvals)
        lambda _: {"approval": {"decision": "Pending", "reason": "", **dict.fromkeys(approvals.FIELDS)}},
    )


def question_id(incident: models.Incident, current: state.IncidentState, at: datetime.datetime) -> str:
    """A short id of one ask: this incident, this verified plan on this state of the target, asked at this time."""
    verified = current.get("verified") or {}
    material = "|".join(
        [str(incident.uid), targets.plan_key(current["chosen"]), str(verified.get("patches")), at.isoformat()]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:10]


def outcome_of(answer: Any) -> str:
    """The decision outcome a resume answer means: approved, expired, or (anything else) rejected."""
    decision = str((answer or {}).get("decision") if isinstance(answer, dict) else answer)
    return {"Approved": "approved", expiry.EXPIRED: "expired"}.get(decision, "rejected")


def expired(incident: models.Incident, timeout_seconds: float, now: datetime.datetime) -> dict[str, Any]:
    """The state update (and status) of an approval nobody gave in time: phase Expired, outcome expired."""
    reason = expiry.expired_reason(incident.name, incident.namespace, timeout_seconds)
    decision = models.Decision(verdict="ask", outcome="expired", reason=reason, at=now)
    return {"decision": decision.dump(), "reverify": False, "phase": "Expired", "reason": reason}


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    plan = models.Plan.model_validate(current["chosen"])
    verification = models.Verification.model_validate(current["verification"])
    diagnosis = models.Diagnosis.model_validate(current["diagnosis"])
    unchanged = await _unchanged(deps, incident, current.get("verified") or {})
    if not unchanged:
        if current.get("reverifications", 0) >= MAX_REVERIFY:
            reason = f"the target kept changing during verification ({MAX_REVERIFY} times); a human must look"
            line = await recording.record(deps, current, "gate", reason)
            return {"reverify": False, "phase": "Escalated", "reason": reason, "timeline": [line]}
        await _reset_approval(deps, incident)
        # Phase Verifying (not AwaitingApproval): when the gate comes back, it asks a new question with a new deadline.
        line = await recording.record(
            deps, current, "gate", "the target changed since verification: verifying again", phase="Verifying"
        )
        return {
            "reverify": True,
            "reverifications": current.get("reverifications", 0) + 1,
            "plans": [current["chosen"], *current.get("plans", [])],
            "timeline": [line],
        }
    last_apply, recent = await _history(deps, incident)
    facts = policy.Facts(
        namespace=incident.namespace,
        actions=tuple(plan.actions),
        confidence=diagnosis.confidence,
        baseline_reproduced=verification.baseline_reproduced,
        candidate_passed=verification.passed,
        target_unchanged=True,
        now=deps.clock(),
        last_apply_on_target=last_apply,
        applies_last_hour=recent,
        # A plan from the rules for a category the LLM chose is the LLM's call as much as its own plan would be.
        source="llm" if "llm" in (plan.source, diagnosis.source) else "rules",
    )
    judgement = policy.judge(deps.policy, facts)
    now = deps.clock()
    shown = await deps.incidents.get(incident.namespace, incident.name)
    asked = ((shown or {}).get("status") or {}).get("phase") == "AwaitingApproval"
    if asked and judgement.verdict == "auto":
        # A human was asked already (the policy changed since, and the operator restarted): their answer stands.
        judgement = policy.Judgement("ask", "a human was asked before the policy changed: their answer decides")
    if judgement.verdict in ("refuse", "observe"):
        decision = models.Decision(
            verdict=judgement.verdict, outcome="not-applicable", by="policy", reason=judgement.reason, at=now
        )
        line = await recording.record(deps, current, "gate", f"refused: {judgement.reason}", decision=decision.dump())
        return {
            "decision": decision.dump(),
            "reverify": False,
            "phase": "Escalated",
            "reason": judgement.reason,
            "timeline": [line],
        }
    if judgement.verdict == "auto":
        decision = models.Decision(verdict="auto", outcome="approved", by="policy", reason=judgement.reason, at=now)
        line = await recording.record(
            deps, current, "gate", f"approved by policy: {judgement.reason}", decision=decision.dump()
        )
        return {"decision": decision.dump(), "reverify": False, "timeline": [line]}

    expires = now + datetime.timedelta(seconds=deps.settings.approval_timeout_seconds)
    question = question_id(incident, current, now)
    pending = models.Decision(
        verdict="ask", outcome="pending", reason=judgement.reason, at=now, expiresAt=expires, question=question
    )
    if not asked:
        await _reset_approval(deps, incident)  # an answer given before this question is not an answer to it
        approve = approvals.commands(incident.name, incident.namespace, question)["approve"]
        await recording.record(
            deps,
            current,
            "gate",
            f"waiting for approval ({judgement.reason}): {approve}",
            phase="AwaitingApproval",
            decision=pending.dump(),
        )
        await recording.notify(deps, current, "awaiting-approval", (current.get("verified") or {}).get("results"))
    answer = interrupt(
        {"incident": f"{incident.namespace}/{incident.name}", "plan": plan.dump(), "reason": judgement.reason}
    )
    outcome = outcome_of(answer)
    if outcome == "expired":
        update = expired(incident, deps.settings.approval_timeout_seconds, deps.clock())
        status = {k: update[k] for k in ("decision", "phase", "reason")}
        waited = expiry.span(deps.settings.approval_timeout_seconds)
        late = " (an approval arrived after the deadline and was not used)" if (answer or {}).get("late") else ""
        message = f"approval expired: no decision within {waited}{late}"
        line = await recording.record(deps, current, "gate", message, **status)
        return {**update, "timeline": [line]}
    approved = outcome == "approved"
    decision = models.Decision(
        verdict="ask",
        outcome="approved" if approved else "rejected",
        by=(answer or {}).get("by") or "unverified",
        identityVerified=bool((answer or {}).get("verified")),
        reason=str((answer or {}).get("reason") or ""),
        at=deps.clock(),
    )
    by = decision.by or "unverified"
    who = by if decision.identity_verified or by.startswith("unverified") else f"{by} (identity unverified)"
    message = f"{'approved' if approved else 'rejected'} by {who}" + (f": {decision.reason}" if decision.reason else "")
    if approved and not await _unchanged(deps, incident, current.get("verified") or {}):
        # The approval was for the object as verified: the next verification needs a new one.
        await _reset_approval(deps, incident)
        line = await recording.record(
            deps,
            current,
            "gate",
            message + "; the target changed meanwhile: verifying again",
            decision=decision.dump(),
            phase="Verifying",
        )
        return {"reverify": True, "plans": [current["chosen"], *current.get("plans", [])], "timeline": [line]}
    status: dict[str, Any] = {"decision": decision.dump()}
    update: dict[str, Any] = {"decision": decision.dump(), "reverify": False}
    if not approved:
        # Phase and reason in one write: a reader that sees "Rejected" also sees why.
        status |= {"phase": "Rejected", "reason": f"the fix was rejected by {who}"}
        update |= {"phase": "Rejected", "reason": status["reason"]}
    line = await recording.record(deps, current, "gate", message, **status)
    return {**update, "timeline": [line]}
