"""The graph state: everything one incident's workflow knows, as plain JSON-able dicts.

Plain dicts (``models.X.dump()``) rather than pydantic objects keep checkpoints
portable and free of deserialization warnings; nodes validate what they read
with the ``aegis.models`` classes. ``timeline`` and ``attempts`` accumulate across nodes.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class IncidentState(TypedDict, total=False):
    incident: dict[str, Any]  # models.Incident
    hints: list[str]  # K8sGPT failure texts (untrusted)
    evidence: dict[str, Any]  # models.Evidence
    diagnosis: dict[str, Any]  # models.Diagnosis
    plans: list[dict[str, Any]]  # models.Plan, ranked, not yet tried
    dropped: list[str]  # candidates refused by validation, and why
    attempts: Annotated[list[dict[str, Any]], operator.add]  # {"plan", "verification"} per shadow run
    verification: dict[str, Any]  # models.Verification of the plan being taken forward
    chosen: dict[str, Any]  # models.Plan that passed the shadow
    verified: dict[str, Any]  # {"uid", "spec", "patches", "results"} of the target and patches as verified
    decision: dict[str, Any]  # models.Decision
    results: list[dict[str, Any]]  # models.ActionResult of what was applied
    outcome: dict[str, Any]  # models.Outcome
    mode: str  # the gate's mode for this namespace: observe | propose | auto
    max_candidates: int
    reverify: bool  # the target changed after verification: verify again before anything is applied
    reverifications: int
    phase: str  # models.Phase
    reason: str
    timeline: Annotated[list[dict[str, Any]], operator.add]  # models.TimelineEntry, appended by nodes
    llm_calls: Annotated[list[dict[str, Any]], operator.add]  # aegis.llm.advisor.Call, every question asked
    llm_error: str  # why the LLM could not help, when it was asked and could not
