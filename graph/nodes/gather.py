"""Node ``gather``: read the target, its owners, pods, events and crash logs from the cluster."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import models
from graph import context, recording, state


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    incident = models.Incident.model_validate(current["incident"])
    evidence = await deps.gatherer.gather(incident, list(current.get("hints", [])), deps.clock())
    if not evidence.target_found:
        message = f"{incident.target} no longer exists"
    else:
        log_lines = sum(len(lines) for lines in evidence.logs.values())
        message = f"gathered {len(evidence.pods)} pod(s), {len(evidence.events)} event(s), {log_lines} log line(s)" + (
            f"; could not read: {'; '.join(evidence.gaps)}" if evidence.gaps else ""
        )
    line = await recording.record(deps, current, "gather", message)
    return {"evidence": evidence.dump(), "timeline": [line]}
