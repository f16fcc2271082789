"""Rule: a Service selects running pods but its targetPort matches no port they declare, so it has no endpoints.

Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    service = evidence.service
    if service is None or not service.matching_pods or service.ready_endpoints or service.not_ready_endpoints:
        return None
    pods = [pod for pod in evidence.pods if pod.name in service.matching_pods]
    if not pods or not all(pod.phase == "Running" for pod in pods):
        return None  # pods that are not running have no endpoints anyway: not a port problem
    names = {port.get("name") for pod in pods for c in pod.containers for port in c.ports if port.get("name")}
    numbers = {port.get("containerPort") for pod in pods for c in pod.containers for port in c.ports}
    broken = []
    for port in service.ports:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and target not in names:
            broken.append((port, target))
    if not broken:
        return None
    port, target = broken[0]
    declared = ", ".join(sorted(f"{n}" for n in names)) or "none"
    summary = (
        f"Service {service.name} selects {len(pods)} running pod(s) but has no endpoints: its port "
        f"{port.get('port')} targets the named port {target!r}, which the pods do not declare "
        f"(named ports: {declared}; container ports: {sorted(n for n in numbers if n)})."
    )
    lines = [
        f"Service {service.name} port {port.get('port')} -> targetPort {target!r}",
        f"pods {', '.join(service.matching_pods[:3])} declare ports {sorted(n for n in numbers if n)} named {declared}",
        "endpoints: 0 ready, 0 not ready",
    ]
    return models.Diagnosis(
        category="service-port-mismatch", summary=summary, evidence=lines, confidence=0.9, source="rules"
    )
