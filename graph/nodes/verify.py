"""Node ``verify``: run the best untried plan in the shadow namespaces (baseline must fail, candidate must heal)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import actions, models
from graph import context, recording, state, targets


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    evidence = models.Evidence.model_validate(current["evidence"])
    plan = models.Plan.model_validate(current["plans"][0])
    objects, _, ctx = await targets.live_objects(deps, incident, evidence)
    target_key = f"{incident.target.kind}/{incident.target.name}"
    live_target = objects.get(target_key)
    if live_target is None:
        verification = models.Verification(passed=False, details=[f"{incident.target} no longer exists"])
    else:
        try:
            results = [actions.render(a, objects[f"{a.target.kind}/{a.target.name}"], ctx) for a in plan.actions]
        except (actions.ActionError, KeyError) as exc:
            results = []
            verification = models.Verification(passed=False, details=[f"the plan no longer fits the target: {exc}"])
        if results:
            copies = dict(objects)
            if incident.target.kind == "Service":
                selector = next(
                    (a.params.get("selector") for a in plan.actions if a.params.get("selector")),
                    (live_target.get("spec") or {}).get("selector") or {},
                )
                copies.update(await targets.backends(deps, incident.namespace, selector))
            copies.update(await targets.quotas(deps, incident.namespace, evidence))
            verification = await deps.verifier.verify(
                incident, plan, results, copies, len(current.get("attempts", [])) + 1, deps.clock()
            )
    verdict = "passed" if verification.passed else "failed"
    message = f"plan #{plan.rank} ({', '.join(a.kind for a in plan.actions)}) {verdict} in the shadow: " + "; ".join(
        verification.details[-2:]
    )
    tried = [*current.get("attempts", []), {"plan": plan.dump(), "verification": verification.dump()}]
    status: dict[str, Any] = {
        "verification": verification.dump(),
        "attempts": [
            {
                "rank": a["plan"]["rank"],
                "actions": [x["kind"] for x in a["plan"]["actions"]],
                "passed": a["verification"]["passed"],
            }
            for a in tried
        ],
    }
    if verification.passed:
        status["plan"] = {
            "chosen": plan.dump(),
            "candidates": current["plans"][1:],
            "dropped": current.get("dropped", []),
        }
    line = await recording.record(deps, current, "verify", message, **status)
    update: dict[str, Any] = {
        "verification": verification.dump(),
        "attempts": [{"plan": plan.dump(), "verification": verification.dump()}],
        "plans": current["plans"][1:],
        "timeline": [line],
    }
    if verification.passed and live_target is not None:
        # What was verified: the actions as rendered now (their risk), the exact patches, the object's identity.
        rendered = [
            r.action.model_copy(update={"rationale": a.rationale}) for r, a in zip(results, plan.actions, strict=True)
        ]
        update["chosen"] = plan.model_copy(update={"actions": rendered}).dump()
        update["verified"] = {
            **targets.identity(live_target),
            "patches": targets.patch_digest(results),
            "results": [r.dump() for r in results],  # the exact patches and pre-images (shown to the approver)
        }
    return update
