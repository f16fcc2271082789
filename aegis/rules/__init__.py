"""Deterministic diagnosis of known failure signatures, without any LLM call.

Each rule module exposes ``check(evidence) -> Diagnosis | None`` and reads only
what AEGIS gathered itself (pod statuses, events, the Service and its pods);
K8sGPT's texts are used as a weaker, last-resort hint. ``diagnose`` runs every
rule and keeps the most confident answer, or returns an ``unknown`` diagnosis.

Called by ``graph.nodes.diagnose``.
"""

from __future__ import annotations

from collections.abc import Callable

from aegis import models
from aegis.rules import image_pull, oom_killed, service_selector

Rule = Callable[[models.Evidence], models.Diagnosis | None]

RULES: tuple[tuple[str, Rule], ...] = (
    ("image-pull", image_pull.check),
    ("oom-killed", oom_killed.check),
    ("service-selector-mismatch", service_selector.check),
)


def diagnose(evidence: models.Evidence, rules: tuple[tuple[str, Rule], ...] = RULES) -> models.Diagnosis:
    """The most confident rule diagnosis, or ``unknown`` when no rule recognises the evidence."""
    found: list[models.Diagnosis] = []
    for name, rule in rules:
        diagnosis = rule(evidence)
        if diagnosis is not None:
            found.append(diagnosis.model_copy(update={"rule": name}))
    if found:
        return max(found, key=lambda d: d.confidence)
    lines = [f"K8sGPT reported: {hint}" for hint in evidence.hints[:5]]
    return models.Diagnosis(
        category="unknown",
        summary="No known failure signature matched the evidence; a human (or the LLM) must look.",
        evidence=lines,
        confidence=0.0,
        source="rules",
        rule=None,
    )
