"""Node ``report``: write the final phase, reason and findings onto the Incident, and notify the webhook."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph import context, metering, recording, state


def conclude(current: state.IncidentState) -> tuple[str, str]:
    """The final (phase, reason) for what the workflow found and did."""
    evidence = current.get("evidence") or {}
    if not evidence.get("targetFound", True):
        return "Failed", "the target no longer exists; nothing to remediate"
    phase = current.get("phase", "")
    if phase in ("Resolved", "RolledBack", "Rejected", "Escalated", "Failed", "Expired"):
        return phase, current.get("reason", "")
    diagnosis = current.get("diagnosis") or {}
    category = diagnosis.get("category", "unknown")
    if current.get("mode", "observe") != "observe":
        attempts = current.get("attempts", [])
        if attempts and not (current.get("verification") or {}).get("passed"):
            details = "; ".join(((attempts[-1].get("verification") or {}).get("details") or [])[-2:])
            return "Escalated", f"{len(attempts)} candidate fix(es) failed in the shadow namespace: {details}"
        return "Escalated", current.get("reason") or "no fix could be taken forward; a human must decide"
    if category == "unknown":
        return "Diagnosed", "no known failure signature matched; needs a human look"
    return "Diagnosed", f"diagnosed as {category}; the namespace is in observe mode"


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    phase, reason = conclude(current)
    evidence = current.get("evidence") or {}
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "evidence": {
            "pods": len(evidence.get("pods") or []),
            "events": len(evidence.get("events") or []),
            "gaps": list(evidence.get("gaps") or []),
        },
    }
    if current.get("diagnosis"):
        status["diagnosis"] = current["diagnosis"]
    line = await recording.record(runtime.context, current, "report", f"{phase}: {reason}", **status)
    metering.ended(runtime.context, current, phase)
    await recording.notify(runtime.context, current, "ended")
    return {"phase": phase, "reason": reason, "timeline": [line]}
