"""Rule: the program exits because a required environment variable is not set.

A crashing container whose last log lines name an UPPER_SNAKE variable that the
container does not define (e.g. postgres: "You must specify POSTGRES_PASSWORD").
Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

import re

from aegis import models

_VAR = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])\b")
_NEED = re.compile(
    r"(must specify|must be set|is not set|not set|is required|required|missing|need to specify|"
    r"environment variable|uninitialized)",
    re.IGNORECASE,
)


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    for pod in evidence.pods:
        for container in pod.containers:
            crashed = container.restart_count > 0 or container.last_reason or container.state == "terminated"
            if not crashed or container.last_reason == "OOMKilled" or container.reason == "OOMKilled":
                continue
            lines = evidence.logs.get(f"{pod.name}/{container.name}") or []
            # The variable and the complaint must stand on the same line: "You must specify POSTGRES_PASSWORD".
            named: list[str] = []
            for line in lines:
                if _NEED.search(line):
                    named += [var for var in _VAR.findall(line) if var not in container.env_names]
            named = list(dict.fromkeys(named))
            if not named:
                continue
            quoted = [line for line in lines if any(var in line for var in named) or _NEED.search(line)][:6]
            summary = (
                f"Container {container.name} of {evidence.target} exits at start-up (exit code "
                f"{container.last_exit_code if container.last_exit_code is not None else container.exit_code}) "
                f"because it needs {' or '.join(named[:3])}, which the container does not set. The value is "
                "application configuration (often a credential) that a human must provide."
            )
            return models.Diagnosis(
                category="missing-env",
                summary=summary,
                evidence=[f"log {pod.name}/{container.name}: {line.strip()}" for line in quoted if line.strip()],
                confidence=0.7 if container.env_from else 0.9,  # envFrom may provide it under that name
                source="rules",
            )
    return None
