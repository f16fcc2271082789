"""Node ``confirm``: watch the real workload with the shadow's health rules (``aegis.health``); if it does not
heal, restore the pre-image of exactly the fields that were changed (``aegis.shadow.undo``) and confirm that."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import health, models, shadow
from aegis.kube import client
from graph import context, recording, state


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    results = [models.ActionResult.model_validate(r) for r in current.get("results", [])]
    ns = incident.namespace
    keys = {f"{incident.target.kind}/{incident.target.name}"} | {
        f"{r.action.target.kind}/{r.action.target.name}" for r in results
    }
    objects = {}
    for key in keys:
        kind, name = key.split("/", 1)
        live = await deps.cluster.get(kind, ns, name)
        if live is not None:
            objects[key] = live
    observer = health.Observer(deps.cluster, deps.settings)
    verdict = await observer.observe(
        ns,
        objects,
        expect_healthy=True,
        limit=deps.settings.confirm_timeout_seconds,
        window=deps.settings.confirm_stability_seconds,
    )
    applied_at = next((r.at for r in results if r.at), deps.clock())
    if verdict.healthy:
        outcome = models.Outcome(phase="Resolved", reason="the fix healed the workload", applied=True, healed=True)
        message = "healed: the workload is rolled out and Ready over the stability window"
        line = await recording.record(
            deps, current, "confirm", message, outcome={**outcome.dump(), "appliedAt": applied_at.isoformat()}
        )
        return {"outcome": outcome.dump(), "phase": "Resolved", "reason": outcome.reason, "timeline": [line]}

    problems = "; ".join(verdict.reasons)
    restored: list[str] = []
    for result in reversed(results):
        if not result.applied:
            continue
        try:
            await shadow.undo(deps.cluster, ns, result)
            restored.append(result.action.kind)
        except client.ClusterError as exc:
            reason = f"the fix did not heal ({problems}) and restoring the pre-image failed: {exc}"
            if deps.metrics is not None:
                deps.metrics.rolled_back("failed")
            line = await recording.record(deps, current, "rollback", reason)
            return {"phase": "Failed", "reason": reason, "timeline": [line]}
    if deps.metrics is not None:
        deps.metrics.rolled_back("restored")
    back = await observer.observe(ns, objects, expect_healthy=False, limit=30)
    outcome = models.Outcome(
        phase="RolledBack",
        reason=f"the fix did not heal the workload ({problems}); the pre-image was restored",
        applied=True,
        healed=False,
        rolledBack=True,
    )
    message = f"did not heal ({problems}): restored the pre-image of {', '.join(restored)}" + (
        "; the workload is back as it was" if not back.healthy else "; the workload is healthy again"
    )
    line = await recording.record(
        deps, current, "rollback", message, outcome={**outcome.dump(), "appliedAt": applied_at.isoformat()}
    )
    return {"outcome": outcome.dump(), "phase": "RolledBack", "reason": outcome.reason, "timeline": [line]}
