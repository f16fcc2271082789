"""Node ``apply``: server-side dry-run, then the real patch with field manager ``aegis`` — exactly once.

Before touching anything, the rendered changes and their pre-images are written to
the Incident (``status.actions``): a restart between the dry-run and the apply finds
them there and does not re-render against an already-changed object. Every patch
carries a marker annotation and the live resourceVersion as precondition in the
same request, so a restarted apply sees that it already happened and never applies
twice, and a concurrent change makes it fail instead of being overwritten. The
target must still be the object that was verified (uid and spec), and the change
must be exactly the one verified; if a real patch fails midway, what was applied is
restored.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import actions, models, shadow
from aegis.kube import client
from graph import context, recording, state, targets

_CONFLICT_RETRIES = 3


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    evidence = models.Evidence.model_validate(current["evidence"])
    plan = models.Plan.model_validate(current["chosen"])
    verified = current.get("verified") or {}
    marker = f"{incident.uid}/{plan.rank}"
    ns = incident.namespace
    shown = await deps.incidents.get(ns, incident.name) or {}
    stored = (shown.get("status") or {}).get("actions") or {}
    objects, _, ctx = await targets.live_objects(deps, incident, evidence)
    live = objects.get(f"{incident.target.kind}/{incident.target.name}")
    already = ((live or {}).get("metadata") or {}).get("annotations", {}).get(targets.MARKER) == marker

    if not already and {k: targets.identity(live).get(k) for k in ("uid", "spec")} != {
        k: verified.get(k) for k in ("uid", "spec")
    }:
        return await _stop(deps, current, "the target changed after verification; nothing was applied", "stale")
    if stored.get("marker") == marker:
        results = [models.ActionResult.model_validate(r) for r in stored["results"]]
    else:
        try:
            results = [actions.render(a, objects[f"{a.target.kind}/{a.target.name}"], ctx) for a in plan.actions]
        except (actions.ActionError, KeyError) as exc:
            return await _stop(deps, current, f"the plan no longer fits the target: {exc}", "stale")
        if targets.patch_digest(results) != verified.get("patches"):
            return await _stop(deps, current, "the change would differ from the one verified in the shadow", "stale")
        status = {"phase": "Applying", "actions": {"marker": marker, "results": [r.dump() for r in results]}}
        await deps.incidents.set_status(ns, incident.name, status)

    done: list[models.ActionResult] = []
    for result in results:
        key = f"{result.action.target.kind}/{result.action.target.name}"
        target = objects.get(key) or {}
        if ((target.get("metadata") or {}).get("annotations") or {}).get(targets.MARKER) == marker:
            done.append(result.model_copy(update={"applied": True, "dry_run": "passed"}))
            continue  # applied before a restart: never twice
        try:
            target = await patch_fresh(deps.cluster, ns, result, marker, target, dry_run=True)
        except client.ClusterError as exc:
            failed = result.model_copy(update={"dry_run": "failed", "dry_run_message": str(exc)})
            await _restore(deps, ns, done)
            return await _stop(
                deps,
                current,
                f"the server-side dry-run refused {result.action.kind}: {exc}",
                "dry-run-refused",
                results=[*done, failed],
            )
        try:
            await patch_fresh(deps.cluster, ns, result, marker, target)
        except client.ClusterError as exc:
            restored = await _restore(deps, ns, done)
            return await _stop(
                deps,
                current,
                f"applying {result.action.kind} failed: {exc}"
                + ("; what was applied before it was restored" if restored else ""),
                "failed",
                results=[*done, result.model_copy(update={"error": str(exc)})],
            )
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
    if deps.metrics is not None:
        deps.metrics.applied("applied")
    return {"results": [r.dump() for r in done], "phase": "Applying", "timeline": [line]}


async def patch_fresh(
    cluster: client.Cluster,
    ns: str,
    result: models.ActionResult,
    marker: str,
    target: dict[str, Any],
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The patch (or its server-side dry run) with the live resourceVersion as precondition; the object it was
    made against is returned. A controller writing the target's status in between (a real one does, many times
    a second while pods crash) fails the precondition — 409, or 422 for a JSON patch's ``test`` — without anything
    having changed that matters: read it again and retry while its uid and spec are the ones verified."""
    for attempt in range(_CONFLICT_RETRIES):
        try:
            await shadow.apply_to(cluster, ns, targets.mark(result, marker, target), dry_run=dry_run)
            return target
        except client.ClusterError as exc:
            if exc.status not in (409, 422) or attempt == _CONFLICT_RETRIES - 1 or result.patch_type == "recreate":
                raise
            fresh = await cluster.get(result.action.target.kind, ns, result.action.target.name)
            if fresh is None or targets.identity(fresh) != targets.identity(target):
                raise  # the spec changed under us: not the object that was verified any more
            target = fresh
    raise AssertionError("unreachable")  # pragma: no cover  (the last attempt returns or raises)


async def _restore(deps: context.Deps, ns: str, done: list[models.ActionResult]) -> bool:
    for result in reversed(done):
        try:
            await shadow.undo(deps.cluster, ns, result)
        except client.ClusterError:
            return False
    return bool(done)


async def _stop(
    deps: context.Deps,
    current: state.IncidentState,
    reason: str,
    result: str,
    results: list[models.ActionResult] | None = None,
) -> dict[str, Any]:
    """Escalate with ``reason``; ``result`` is how the attempt counts in ``aegis_applies_total``."""
    if deps.metrics is not None:
        deps.metrics.applied(result)
    status: dict[str, Any] = {}
    if results:
        status["actions"] = {"results": [r.dump() for r in results]}
    line = await recording.record(deps, current, "apply", reason, phase="Escalated", **status)
    return {"phase": "Escalated", "reason": reason, "results": [r.dump() for r in results or []], "timeline": [line]}
