"""Pure routing functions between nodes: state in, next node name out. Unit-tested with plain data."""

from __future__ import annotations

from typing import Literal

from graph import state


def after_gather(current: state.IncidentState) -> Literal["diagnose", "report"]:
    """Diagnose what was gathered; a target that no longer exists goes straight to the report."""
    evidence = current.get("evidence") or {}
    return "diagnose" if evidence.get("targetFound", True) else "report"


def after_diagnose(current: state.IncidentState) -> Literal["propose", "report"]:
    """Observe mode stops at the diagnosis, and so does a workload that recovered; else look for a fix."""
    if current.get("phase") == "Resolved":
        return "report"
    return "report" if current.get("mode", "observe") == "observe" else "propose"


def after_propose(current: state.IncidentState) -> Literal["verify", "report"]:
    return "verify" if current.get("plans") else "report"


def after_verify(current: state.IncidentState) -> Literal["gate", "propose", "report"]:
    """A passing plan goes to the gate; a failing one makes room for the next candidate, up to the bound."""
    if (current.get("verification") or {}).get("passed"):
        return "gate"
    tried = len(current.get("attempts", []))
    if tried < current.get("max_candidates", 3) and not (current.get("verification") or {}).get("fatal"):
        return "propose"
    return "report"


def after_gate(current: state.IncidentState) -> Literal["apply", "verify", "report"]:
    if current.get("reverify"):
        return "verify"
    return "apply" if (current.get("decision") or {}).get("outcome") == "approved" else "report"


def after_apply(current: state.IncidentState) -> Literal["confirm", "report"]:
    results = current.get("results") or []
    return (
        "confirm"
        if results and all(r.get("applied") for r in results) and current.get("phase") == "Applying"
        else "report"
    )
