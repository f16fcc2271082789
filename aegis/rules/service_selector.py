"""Rule: a Service's selector matches no pod, while pods that look like its backends exist.

Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    service = evidence.service
    if service is None or not service.selector or service.matching_pods:
        return None
    if service.ready_endpoints or service.not_ready_endpoints:
        return None
    selector = service.selector
    # Pods that carry the selector's keys with other values, or share some of its labels, are likely backends.
    near: list[tuple[int, models.PodSummary]] = []
    for pod in evidence.namespace_pods:
        shared_keys = sum(1 for key in selector if key in pod.labels)
        shared_pairs = sum(1 for key, value in selector.items() if pod.labels.get(key) == value)
        value_hits = sum(1 for value in selector.values() if value in pod.labels.values())
        score = shared_keys + shared_pairs + value_hits
        if score:
            near.append((score, pod))
    near.sort(key=lambda item: -item[0])
    wanted = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    lines = [f"Service {service.name} selects {wanted}; no pod in {evidence.target.namespace} has these labels"]
    for _, pod in near[:3]:
        labels = ",".join(f"{key}={value}" for key, value in sorted(pod.labels.items()))
        lines.append(f"pod {pod.name} ({pod.phase}) has labels {labels}")
    if near:
        confidence = 0.9
        summary = (
            f"Service {service.name} has no endpoints because its selector {wanted} matches no pod; "
            f"pod {near[0][1].name} looks like the intended backend but carries different labels."
        )
    elif evidence.namespace_pods:
        confidence = 0.6
        summary = (
            f"Service {service.name} has no endpoints: its selector {wanted} matches none of the namespace's pods."
        )
    else:
        return None  # no pods at all: the backend workload is missing or scaled to zero, not a selector problem
    return models.Diagnosis(
        category="service-selector-mismatch", summary=summary, evidence=lines, confidence=confidence, source="rules"
    )
