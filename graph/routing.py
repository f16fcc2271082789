"""Pure routing functions between nodes: state in, next node name out. Unit-tested with plain data."""

from __future__ import annotations

from typing import Literal

from graph import state


def after_gather(current: state.IncidentState) -> Literal["diagnose", "report"]:
    """Diagnose what was gathered; a target that no longer exists goes straight to the report."""
    evidence = current.get("evidence") or {}
    return "diagnose" if evidence.get("targetFound", True) else "report"
