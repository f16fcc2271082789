"""Node ``propose``: ranked candidate plans from the diagnosis (rules now; the LLM plugs in here later).

Plans already tried in the shadow are not offered again; candidates that do not
fit the live target, or aim outside the incident's objects, are dropped with the reason.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import actions, models
from aegis.rules import remedies
from graph import context, recording, state, targets


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    evidence = models.Evidence.model_validate(current["evidence"])
    diagnosis = models.Diagnosis.model_validate(current["diagnosis"])
    objects, related, ctx = await targets.live_objects(deps, incident, evidence)
    plans, dropped = remedies.propose(diagnosis, evidence, objects, ctx)
    tried = {targets.plan_key(attempt["plan"]) for attempt in current.get("attempts", [])}
    offered: list[dict[str, Any]] = []
    for plan in plans:
        try:
            for action in plan.actions:
                actions.check_target(action, incident, related)
        except actions.ActionError as exc:
            dropped.append(str(exc))
            continue
        if targets.plan_key(plan.dump()) not in tried:
            offered.append(plan.dump())
    if offered:
        names = "; ".join(f"#{p['rank']} {', '.join(a['kind'] for a in p['actions'])}" for p in offered)
        message = f"{len(offered)} candidate plan(s): {names}"
        status: dict[str, Any] = {"phase": "Verifying", "plan": {"candidates": offered, "dropped": dropped}}
        line = await recording.record(deps, current, "propose", message, **status)
        return {"plans": offered, "dropped": dropped, "phase": "Verifying", "timeline": [line]}
    reason = (
        "no candidate fix is left after " + str(len(tried)) + " failed in the shadow"
        if tried
        else "no safe fix can be proposed: " + ("; ".join(dropped) or "this needs a human")
    )
    line = await recording.record(deps, current, "propose", reason, plan={"candidates": [], "dropped": dropped})
    return {"plans": [], "dropped": dropped, "phase": "Escalated", "reason": reason, "timeline": [line]}
