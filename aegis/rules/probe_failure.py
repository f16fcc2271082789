"""Rule: a liveness, readiness or startup probe fails while the program itself runs.

Reads the kubelet's Unhealthy and Killing events and compares the probe with the
ports the container declares. Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

import re

from aegis import models

_PORT = re.compile(r"dial tcp [^\s:]+:(\d+): connect")


def troubled_pods(evidence: models.Evidence) -> set[str]:
    """Pods that are not ready or have restarted now: probe failures elsewhere are start-up noise."""
    return {
        f"Pod/{pod.name}"
        for pod in evidence.pods
        if any(not c.ready or c.restart_count for c in pod.containers if not c.init)
    }


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    troubled = troubled_pods(evidence)
    unhealthy = [
        e for e in evidence.events if e.reason == "Unhealthy" and "probe failed" in e.message and e.object in troubled
    ]
    if not unhealthy:
        return None
    kills = [e for e in evidence.events if e.reason == "Killing" and "probe" in e.message and e.object in troubled]
    declared = sorted(
        {
            port.get("containerPort")
            for pod in evidence.pods
            for c in pod.containers
            for port in c.ports
            if port.get("containerPort")
        }
    )
    message = unhealthy[-1].message
    kind = message.split(" probe failed")[0]
    details = []
    match = _PORT.search(message)
    if "connection refused" in message and match:
        port = int(match.group(1))
        details.append(
            f"nothing listens on port {port}" + (f" (the container declares {declared})" if declared else "")
        )
    elif "statuscode: 404" in message:
        details.append("the probe's HTTP path does not exist in the application (404)")
    elif "statuscode:" in message:
        details.append("the probe's endpoint answers with an error status")
    consequence = (
        "the container is killed and restarted" if kills else "the pod never becomes Ready, so it gets no traffic"
    )
    summary = (
        f"The {kind.lower()} probe of {evidence.target} fails: {'; '.join(details) or message}. As a result "
        f"{consequence}; the program itself is running."
    )
    lines = [f"event {e.object} {e.reason} (x{e.count}): {e.message}" for e in unhealthy[-3:]]
    lines += [f"event {e.object} {e.reason}: {e.message}" for e in kills[-2:]]
    return models.Diagnosis(
        category="probe-failure", summary=summary, evidence=lines, confidence=0.9 if details else 0.75, source="rules"
    )
