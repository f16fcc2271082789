"""Node ``propose``: ranked candidate plans from the diagnosis, from the rules or, where they have none, the LLM.

The model is asked for plans only for a diagnosis it made itself (or in
``AEGIS_LLM_MODE=only``): where the rules diagnosed and deliberately offer no fix
(a value only a human knows), the model is not invited to invent one. Its plans
are typed actions checked like the rules' ones — vocabulary, target pinning, live
rendering — and every one is verified in the shadow before anyone may apply it.
Plans already tried are not offered again; what failed and what was dropped is fed
back to the model as it proposes again.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime

from aegis import actions, models
from aegis.llm import advisor
from aegis.rules import remedies
from graph import context, recording, state, targets


def asks_llm(diagnosis: models.Diagnosis, llm_mode: str) -> bool:
    """Whether the model proposes: for its own diagnosis, or always in ``only`` mode; never for ``unknown``."""
    if llm_mode == "off" or diagnosis.category == "unknown":
        return False
    return llm_mode == "only" or diagnosis.source == "llm"


def feedback(current: state.IncidentState, dropped: list[str]) -> list[str]:
    """What the model should know before proposing again: failed shadow runs and refused candidates."""
    lines = []
    for attempt in current.get("attempts", []):
        acts = ", ".join(
            f"{a['kind']} {json.dumps(a.get('params') or {}, sort_keys=True)}" for a in attempt["plan"]["actions"]
        )
        details = "; ".join((attempt.get("verification") or {}).get("details", [])[-2:])
        lines.append(f"{acts}: failed in the shadow: {details}")
    return lines + dropped


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    llm_mode = deps.settings.llm_mode if deps.advisor is not None else "off"
    incident = models.Incident.model_validate(current["incident"])
    evidence = models.Evidence.model_validate(current["evidence"])
    diagnosis = models.Diagnosis.model_validate(current["diagnosis"])
    objects, related, ctx = await targets.live_objects(deps, incident, evidence)
    plans: list[models.Plan] = []
    dropped: list[str] = []
    # A Job, CronJob or DaemonSet is no target for the typed fixes (nor for the model's): a human decides, told
    # what to do from the diagnosis.
    unsupported = remedies.unsupported_reason(incident.target, diagnosis, evidence)
    if unsupported:
        dropped = [unsupported]
    elif llm_mode != "only":
        plans, dropped = remedies.propose(diagnosis, evidence, objects, ctx)
    tried = {targets.plan_key(attempt["plan"]) for attempt in current.get("attempts", [])}
    offered = _offer(plans, incident, related, tried, dropped)
    calls: list[dict[str, Any]] = []
    llm_error = current.get("llm_error", "")
    if not offered and not unsupported and asks_llm(diagnosis, llm_mode):
        advice = await deps.advisor.propose(
            incident, evidence, diagnosis, related, objects, ctx, feedback(current, dropped)
        )
        calls = [c.dump() for c in advice.calls]
        dropped += advice.dropped
        offered = _offer(advice.value or [], incident, related, tried, dropped, offset=len(tried))
        llm_error = "" if offered else advice.error
    extra: dict[str, Any] = {"llm": advisor.summary([*current.get("llm_calls", []), *calls])} if calls else {}
    if offered:
        names = "; ".join(f"#{p['rank']} {', '.join(a['kind'] for a in p['actions'])} ({p['source']})" for p in offered)
        message = f"{len(offered)} candidate plan(s): {names}"
        status: dict[str, Any] = {"phase": "Verifying", "plan": {"candidates": offered, "dropped": dropped}, **extra}
        line = await recording.record(deps, current, "propose", message, **status)
        return {"plans": offered, "dropped": dropped, "phase": "Verifying", "timeline": [line], "llm_calls": calls}
    reason = (
        "no candidate fix is left after " + str(len(tried)) + " failed in the shadow"
        if tried
        else "no safe fix can be proposed: " + ("; ".join(dropped) or "this needs a human")
    )
    if llm_error:
        reason += f"; the LLM could not help: {llm_error}"
    line = await recording.record(
        deps, current, "propose", reason, plan={"candidates": [], "dropped": dropped}, **extra
    )
    return {
        "plans": [],
        "dropped": dropped,
        "phase": "Escalated",
        "reason": reason,
        "timeline": [line],
        "llm_calls": calls,
    }


def _offer(
    plans: list[models.Plan],
    incident: models.Incident,
    related: list[models.ObjectRef],
    tried: set[str],
    dropped: list[str],
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Plans pinned to the incident's objects and not tried yet, as dicts (ranks after ``offset``)."""
    offered: list[dict[str, Any]] = []
    for plan in plans:
        try:
            for action in plan.actions:
                actions.check_target(action, incident, related)
        except actions.ActionError as exc:
            dropped.append(str(exc))
            continue
        if targets.plan_key(plan.dump()) not in tried:
            offered.append(plan.model_copy(update={"rank": plan.rank + offset}).dump())
    return offered
