"""Rule: a ConfigMap or Secret (or one of its keys) that a container needs does not exist.

Reads the kubelet's CreateContainerConfigError messages and FailedMount events.
Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

import re

from aegis import models

_MISSING = re.compile(r'(configmap|secret) "([^"]+)" not found')
_MISSING_KEY = re.compile(r"couldn't find key (\S+) in (ConfigMap|Secret) (\S+)")


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    lines: list[str] = []
    missing: dict[str, str] = {}
    for pod in evidence.pods:
        for container in pod.containers:
            if container.state == "waiting" and container.reason == "CreateContainerConfigError":
                lines.append(
                    f"pod {pod.name} container {container.name}: CreateContainerConfigError: {container.message}"
                )
                _collect(container.message, missing)
    stuck = {
        f"Pod/{pod.name}"
        for pod in evidence.pods
        for c in pod.containers
        if c.state == "waiting" and c.reason in ("ContainerCreating", "CreateContainerConfigError")
    }
    for event in evidence.events:
        if event.object not in stuck:
            continue  # an old event about a pod that has moved on
        if event.reason == "FailedMount" or (
            event.reason == "Failed"
            and "not found" in event.message
            and ("configmap" in event.message or "secret" in event.message)
        ):
            lines.append(f"event {event.object} {event.reason}: {event.message}")
            _collect(event.message, missing)
    if not missing:
        return None
    what = ", ".join(f"{kind} {name!r}" for name, kind in missing.items())
    secret_involved = any(kind.startswith("secret") for kind in missing.values())
    summary = (
        f"Containers of {evidence.target} cannot start: {what} does not exist in namespace "
        f"{evidence.target.namespace}. "
        + (
            "Its values are secret: only a human can provide them, unless a recent change broke the reference."
            if secret_involved
            else "Either the object was never created or a recent change points at a wrong name."
        )
    )
    return models.Diagnosis(
        category="missing-config",
        summary=summary,
        evidence=list(dict.fromkeys(lines))[:10],
        confidence=0.95,
        source="rules",
    )


def _collect(text: str, missing: dict[str, str]) -> None:
    for kind, name in _MISSING.findall(text):
        missing[name] = kind
    for key, kind, ref in _MISSING_KEY.findall(text):
        missing[f"{ref.split('/')[-1]}[{key}]"] = f"{kind.lower()} key"
