"""The graph state: everything one incident's workflow knows, as plain JSON-able dicts.

Plain dicts (``models.X.dump()``) rather than pydantic objects keep checkpoints
portable and free of deserialization warnings; nodes validate what they read
with the ``aegis.models`` classes. ``timeline`` accumulates across nodes.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class IncidentState(TypedDict, total=False):
    incident: dict[str, Any]  # models.Incident
    hints: list[str]  # K8sGPT failure texts (untrusted)
    evidence: dict[str, Any]  # models.Evidence
    diagnosis: dict[str, Any]  # models.Diagnosis
    phase: str  # models.Phase
    reason: str
    timeline: Annotated[list[dict[str, Any]], operator.add]  # models.TimelineEntry, appended by nodes
