"""Rules: pods stay Pending because the scheduler finds no node, or a volume claim is not bound.

From the PodScheduled condition's message (the scheduler's own words) and the
claims' phase: unschedulable-resources (Insufficient cpu/memory), unschedulable-
constraints (node selector, affinity, taints, spread), pvc-pending (unbound claim,
missing StorageClass). Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models

_CONSTRAINTS = (
    "didn't match Pod's node affinity/selector",
    "untolerated taint",
    "had taint",
    "didn't match pod anti-affinity",
    "didn't match pod affinity",
    "topology spread constraints",
    "node(s) didn't have free ports",
)


def _pending(evidence: models.Evidence) -> list[tuple[models.PodSummary, str]]:
    return [
        (pod, pod.scheduled_message)
        for pod in evidence.pods
        if pod.phase == "Pending" and pod.scheduled_reason == "Unschedulable" and pod.scheduled_message
    ]


def resources(evidence: models.Evidence) -> models.Diagnosis | None:
    pending = [
        (pod, message) for pod, message in _pending(evidence) if "Insufficient" in message or "Too many pods" in message
    ]
    if not pending:
        return None
    pod, message = pending[0]
    wanted = {c.name: c.memory_request for c in pod.containers}
    summary = (
        f"Pods of {evidence.target} cannot be scheduled: no node has enough free capacity for their "
        f"requests (memory requests {wanted}). Scheduler: {message}"
    )
    return models.Diagnosis(
        category="unschedulable-resources",
        summary=summary,
        evidence=[f"pod {p.name} Pending: {m}" for p, m in pending[:3]],
        confidence=0.95,
        source="rules",
    )


def constraints(evidence: models.Evidence) -> models.Diagnosis | None:
    pending = [
        (pod, message) for pod, message in _pending(evidence) if any(marker in message for marker in _CONSTRAINTS)
    ]
    if not pending:
        return None
    selector = evidence.target_summary.get("nodeSelector")
    summary = (
        f"Pods of {evidence.target} cannot be scheduled: no node satisfies their placement constraints"
        + (f" (nodeSelector {selector})" if selector else "")
        + f". Scheduler: {pending[0][1]}"
    )
    return models.Diagnosis(
        category="unschedulable-constraints",
        summary=summary,
        evidence=[f"pod {p.name} Pending: {m}" for p, m in pending[:3]],
        confidence=0.95,
        source="rules",
    )


def pvc(evidence: models.Evidence) -> models.Diagnosis | None:
    unbound = [claim for claim in evidence.claims if claim.phase != "Bound"]
    waiting = [
        (pod, message)
        for pod, message in _pending(evidence)
        if "PersistentVolumeClaim" in message or "persistentvolumeclaim" in message
    ]
    if not unbound and not waiting:
        return None
    lines = [f"pod {p.name} Pending: {m}" for p, m in waiting[:2]]
    reasons = []
    for claim in unbound:
        if claim.phase == "Missing":
            reasons.append(f"claim {claim.name} does not exist")
        elif claim.storage_class and claim.storage_class_exists is False:
            reasons.append(f"claim {claim.name} asks for StorageClass {claim.storage_class!r}, which does not exist")
        else:
            reasons.append(f"claim {claim.name} is {claim.phase or 'not bound'}")
        lines.append(f"PersistentVolumeClaim {claim.name}: phase {claim.phase}, storageClass {claim.storage_class}")
    lines += [
        f"event {e.object} {e.reason}: {e.message}"
        for e in evidence.events
        if e.reason in ("ProvisioningFailed", "FailedBinding")
    ][-2:]
    summary = (
        f"{evidence.target} cannot start because its volume claim is not bound: "
        f"{'; '.join(reasons) or 'the claim is pending'}."
    )
    return models.Diagnosis(
        category="pvc-pending", summary=summary, evidence=lines, confidence=0.95 if reasons else 0.7, source="rules"
    )
