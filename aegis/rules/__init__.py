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
from aegis.rules import (
    app_crash,
    image_pull,
    init_container,
    missing_config,
    missing_env,
    oom_killed,
    probe_failure,
    scheduling,
    service_port,
    service_selector,
)

Rule = Callable[[models.Evidence], models.Diagnosis | None]

# Order matters only between equally confident answers: the more specific rule comes first.
RULES: tuple[tuple[str, Rule], ...] = (
    ("image-pull", image_pull.check),
    ("init-container", init_container.check),
    ("missing-config", missing_config.check),
    ("pvc-pending", scheduling.pvc),
    ("unschedulable-resources", scheduling.resources),
    ("resource-quota", scheduling.quota),
    ("unschedulable-constraints", scheduling.constraints),
    ("oom-killed", oom_killed.check),
    ("missing-env", missing_env.check),
    ("probe-failure", probe_failure.check),
    ("service-selector-mismatch", service_selector.check),
    ("service-port-mismatch", service_port.check),
    ("app-crash", app_crash.check),
)


def diagnose(evidence: models.Evidence, rules: tuple[tuple[str, Rule], ...] = RULES) -> models.Diagnosis:
    """The most confident rule diagnosis, or ``unknown`` when no rule recognises the evidence.

    Pods being deleted (``terminating``) are left out: they are going away, and a rollout is judged on the
    pods that stay.
    """
    evidence = judged(evidence)
    found: list[models.Diagnosis] = []
    for name, rule in rules:
        diagnosis = rule(evidence)
        if diagnosis is not None:
            found.append(diagnosis.model_copy(update={"rule": name}))
    if found:
        return max(found, key=lambda d: d.confidence)  # max() keeps the first of equals: RULES order
    lines = [f"K8sGPT reported: {hint}" for hint in evidence.hints[:5]]
    return models.Diagnosis(
        category="unknown",
        summary="No known failure signature matched the evidence; a human (or the LLM) must look.",
        evidence=lines,
        confidence=0.0,
        source="rules",
        rule=None,
    )


def judged(evidence: models.Evidence) -> models.Evidence:
    """The evidence without the pods that are terminating (kept as they are when there are none)."""
    if not any(pod.terminating for pod in evidence.pods):
        return evidence
    return evidence.model_copy(update={"pods": [pod for pod in evidence.pods if not pod.terminating]})
