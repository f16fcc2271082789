"""Node ``apply``: server-side dry-run, then the real patch with field manager ``aegis`` — exactly once.

Before touching anything, the rendered changes and their pre-images are written to
the Incident (``status.actions``): a restart between the dry-run and the apply finds
them there and does not re-render against an already-changed object. Every patch
carries a marker annotation in the same request, so a restarted apply sees that it
already happened and never applies twice. The target must still be the object
that was verified (same uid and generation).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import actions, models, shadow
from aegis.kube import client
from graph import context, recording, state, targets


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    evidence = models.Evidence.model_validate(current["evidence"])
    plan = models.Plan.model_validate(current["chosen"])
    marker = f"{incident.uid}/{plan.rank}"
    ns = incident.namespace
    shown = await deps.incidents.get(ns, incident.name) or {}
    stored = (shown.get("status") or {}).get("actions") or {}
    objects, _, ctx = await targets.live_objects(deps, incident, evidence)

    if stored.get("marker") == marker:
        results = [models.ActionResult.model_validate(r) for r in stored["results"]]
    else:
        live = objects.get(f"{incident.target.kind}/{incident.target.name}")
        verified = current.get("verified") or {}
        if (
            live is None
            or live["metadata"].get("uid") != verified.get("uid")
            or live["metadata"].get("generation") != verified.get("generation")
        ):
            return await _stop(
                deps, current, "Escalated", "the target changed after verification and approval; nothing was applied"
            )
        try:
            results = [actions.render(a, objects[f"{a.target.kind}/{a.target.name}"], ctx) for a in plan.actions]
        except (actions.ActionError, KeyError) as exc:
            return await _stop(deps, current, "Escalated", f"the plan no longer fits the target: {exc}")
        await deps.incidents.set_status(
            ns,
            incident.name,
            {"phase": "Applying", "actions": {"marker": marker, "results": [r.dump() for r in results]}},
        )

    done: list[models.ActionResult] = []
    for result in results:
        target = objects.get(f"{result.action.target.kind}/{result.action.target.name}") or {}
        if ((target.get("metadata") or {}).get("annotations") or {}).get(targets.MARKER) == marker:
            done.append(result.model_copy(update={"applied": True, "dry_run": "passed"}))
            continue  # applied before a restart: never twice
        marked = targets.mark(result, marker)
        try:
            await shadow.apply_to(deps.cluster, ns, marked, dry_run=True)
        except client.ClusterError as exc:
            failed = result.model_copy(update={"dry_run": "failed", "dry_run_message": str(exc)})
            return await _stop(
                deps,
                current,
                "Escalated",
                f"the server-side dry-run refused {result.action.kind}: {exc}",
                results=[*done, failed],
            )
        await shadow.apply_to(deps.cluster, ns, marked)
        done.append(result.model_copy(update={"applied": True, "dry_run": "passed", "at": deps.clock()}))
    message = (
        "applied "
        + ", ".join(f"{r.action.kind} on {r.action.target}" for r in done)
        + " (dry-run passed, field manager aegis)"
    )
    line = await recording.record(
        deps,
        current,
        "apply",
        message,
        phase="Applying",
        actions={"marker": marker, "results": [r.dump() for r in done]},
    )
    return {"results": [r.dump() for r in done], "phase": "Applying", "timeline": [line]}


async def _stop(
    deps: context.Deps,
    current: state.IncidentState,
    phase: str,
    reason: str,
    results: list[models.ActionResult] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if results:
        status["actions"] = {"results": [r.dump() for r in results]}
    line = await recording.record(deps, current, "apply", reason, **status)
    return {"phase": phase, "reason": reason, "results": [r.dump() for r in results or []], "timeline": [line]}
