"""Rules: pods stay Pending because the scheduler finds no node, or a volume claim is not bound.

From the PodScheduled condition's message (the scheduler's own words) and the
claims' phase: unschedulable-resources (Insufficient cpu/memory), unschedulable-
constraints (node selector, affinity, taints, spread), pvc-pending (unbound claim,
missing StorageClass). A namespace ResourceQuota that refuses the pods themselves
(no pod exists at all: the ReplicaSet's ``FailedCreate`` event and ``ReplicaFailure``
condition say "exceeded quota") is unschedulable-resources too: the closest category
of the taxonomy. Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

import dataclasses
import re

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
    """A claim that cannot bind: missing, its StorageClass missing, provisioning failed, or the scheduler says so.

    A claim that is merely Pending behind a pod that cannot be scheduled for other reasons
    (WaitForFirstConsumer binding) is a symptom, not the cause.
    """
    waiting = [
        (pod, message)
        for pod, message in _pending(evidence)
        if "unbound immediate PersistentVolumeClaims" in message or "persistentvolumeclaim" in message
    ]
    failures = [
        e
        for e in evidence.events
        if e.reason in ("ProvisioningFailed", "FailedBinding")
        and e.object.split("/", 1)[-1] in {c.name for c in evidence.claims}
    ]
    reasons = []
    for claim in evidence.claims:
        if claim.phase == "Bound":
            continue
        if claim.phase == "Missing":
            reasons.append(f"claim {claim.name} does not exist")
        elif claim.storage_class and claim.storage_class_exists is False:
            reasons.append(f"claim {claim.name} asks for StorageClass {claim.storage_class!r}, which does not exist")
        elif any(e.object.endswith(f"/{claim.name}") for e in failures):
            reasons.append(f"claim {claim.name} cannot be provisioned")
    if not reasons and not waiting:
        return None
    if not reasons and evidence.claims and all(c.phase == "Bound" for c in evidence.claims):
        # The scheduler's word predates the binding (it retries with a back-off): nothing is wrong with the claims.
        return None
    lines = [f"pod {p.name} Pending: {m}" for p, m in waiting[:2]]
    lines += [
        f"PersistentVolumeClaim {c.name}: phase {c.phase}, storageClass {c.storage_class}"
        for c in evidence.claims
        if c.phase != "Bound"
    ]
    lines += [f"event {e.object} {e.reason}: {e.message}" for e in failures[-2:]]
    summary = (
        f"{evidence.target} cannot start because its volume claim is not bound: "
        f"{'; '.join(reasons) or 'the scheduler waits for an unbound claim'}."
    )
    return models.Diagnosis(
        category="pvc-pending", summary=summary, evidence=lines, confidence=0.95 if reasons else 0.7, source="rules"
    )


# The API server's quota admission text: 'pods "web-7d9c-xyz" is forbidden: exceeded quota: compute, requested:
# requests.memory=512Mi, used: requests.memory=1Gi, limited: requests.memory=1Gi'
_QUOTA = re.compile(r"exceeded quota: ([^,\s]+), requested: (\S+), used: (\S+), limited: (\S+)")


@dataclasses.dataclass(frozen=True)
class QuotaRefusal:
    """One "exceeded quota" refusal: the quota's name and its resources (requested, used, limited)."""

    quota: str
    requested: dict[str, str]
    used: dict[str, str]
    limited: dict[str, str]
    where: str  # the line of evidence it came from

    def describe(self) -> str:
        parts = [
            f"{key} requested {value}, used {self.used.get(key, '?')} of {self.limited.get(key, '?')}"
            for key, value in self.requested.items()
        ]
        return f"ResourceQuota {self.quota!r} ({'; '.join(parts)})"


def _pairs(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.strip().rstrip(".,").split(",") if "=" in part)


def parse_quota(text: str) -> QuotaRefusal | None:
    """The quota refusal in an event or condition message, or None."""
    match = _QUOTA.search(text)
    if not match:
        return None
    name, requested, used, limited = match.groups()
    return QuotaRefusal(name, _pairs(requested), _pairs(used), _pairs(limited), text)


def quota_refusals(evidence: models.Evidence) -> list[QuotaRefusal]:
    """Pod creations refused by a ResourceQuota: FailedCreate events, then ReplicaFailure conditions of the
    target (a StatefulSet) or its ReplicaSets (a Deployment), newest last."""
    found: list[QuotaRefusal] = []
    for event in evidence.events:
        if event.type == "Warning" and event.reason == "FailedCreate":
            refusal = parse_quota(event.message)
            if refusal:
                found.append(dataclasses.replace(refusal, where=f"event {event.object} FailedCreate: {event.message}"))
    owners = [("", evidence.target_summary)] + [
        (f"ReplicaSet {rs.get('name')}", rs) for rs in evidence.target_summary.get("replicaSets") or []
    ]
    for where, summary in owners:
        for condition in summary.get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status", "True") == "True":
                refusal = parse_quota(str(condition.get("message") or ""))
                if refusal:
                    line = f"{where or evidence.target} condition ReplicaFailure ({condition.get('reason')}): "
                    found.append(dataclasses.replace(refusal, where=line + str(condition.get("message"))))
    return found


def quota(evidence: models.Evidence) -> models.Diagnosis | None:
    refusals = quota_refusals(evidence)
    if not refusals:
        return None
    latest = refusals[-1]
    live = [p for p in evidence.pods if not p.terminating]
    summary = (
        f"Pods of {evidence.target} cannot be created: the namespace's {latest.describe()} is exhausted, so the "
        f"API server refuses every new pod{' (no pod exists)' if not live else ''}. Raising the quota or "
        "deciding the workload's size is a human's call, unless a bad rollout raised the requests."
    )
    return models.Diagnosis(
        category="unschedulable-resources",
        summary=summary,
        evidence=list(dict.fromkeys(r.where for r in reversed(refusals)))[:5],
        confidence=0.95,
        source="rules",
    )
