"""Node ``intake``: mark the Incident as being worked on and say where it came from."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import models
from graph import context, recording, state


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    incident = models.Incident.model_validate(current["incident"])
    reporters = ", ".join(sorted({f"{s.kind} {s.object}" for s in incident.sources})) or "no source"
    via = f" via {' -> '.join(str(ref) for ref in incident.owner_chain)}" if incident.owner_chain else ""
    message = f"K8sGPT reported a problem on {incident.target}{via} ({reporters})"
    deps = runtime.context
    mode = deps.policy.mode_for(incident.namespace)
    line = await recording.record(deps, current, "intake", f"{message}; mode {mode}", phase="Diagnosing", reason="")
    return {"phase": "Diagnosing", "mode": mode, "max_candidates": deps.settings.max_candidates, "timeline": [line]}
