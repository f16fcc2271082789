"""Node ``diagnose``: name the failure from the evidence (rules first; the LLM joins in a later issue)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from aegis import models, rules
from graph import context, recording, state


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    evidence = models.Evidence.model_validate(current["evidence"])
    diagnosis = rules.diagnose(evidence)
    by = f"rule {diagnosis.rule}" if diagnosis.rule else diagnosis.source
    message = f"{diagnosis.category} (confidence {diagnosis.confidence:.2f}, {by}): {diagnosis.summary}"
    line = await recording.record(runtime.context, current, "diagnose", message, diagnosis=diagnosis.dump())
    return {"diagnosis": diagnosis.dump(), "timeline": [line]}
