"""Rule: an init container fails (``Init:CrashLoopBackOff`` / ``Init:Error``), so the app never starts.

A rollout that adds (or changes) an init container that exits non-zero leaves its pods
in ``Init:…``: the init container's status is ``waiting: CrashLoopBackOff`` or
``terminated: Error`` and the app containers wait in ``PodInitializing``. The init
container's own log and error say why: a variable it needs (missing-env), a ConfigMap,
Secret or config file it cannot find (missing-config), or anything else (app-crash).
Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

import re

from aegis import models
from aegis.rules import missing_env

_CONFIG = re.compile(r'\b(configmaps?|secrets?)\s+"?([a-z0-9][-a-z0-9.]*)"?\s+(?:was\s+|is\s+)?not found', re.I)
_FILE = re.compile(r"(no such file or directory|not found|cannot open|can't open)", re.I)


def failing(container: models.ContainerState) -> bool:
    """Whether an init container has failed: in back-off after crashes, or terminated non-zero."""
    if not container.init:
        return False
    if container.state == "waiting" and container.reason == "CrashLoopBackOff":
        return True
    return container.state == "terminated" and (container.exit_code or 0) != 0


def failing_init(evidence: models.Evidence) -> list[tuple[models.PodSummary, models.ContainerState]]:
    """(pod, init container) pairs that fail, pods being deleted left out."""
    return [(pod, c) for pod in evidence.pods if not pod.terminating for c in pod.containers if failing(c)]


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    found = failing_init(evidence)
    if not found:
        return None
    pod, container = found[0]
    lines = [line for line in evidence.logs.get(f"{pod.name}/{container.name}") or [] if line.strip()]
    texts = [*lines, container.message] if container.message else lines
    exit_code = container.last_exit_code if container.state == "waiting" else container.exit_code
    reason = container.last_reason or container.reason or "Error"
    waiting = [c.name for c in pod.containers if not c.init and c.reason == "PodInitializing"]
    status = (
        f"pod {pod.name} init container {container.name}: {container.state} {container.reason}, last termination "
        f"{reason} exit code {exit_code}, restarts {container.restart_count}"
    )
    blocked = (
        f"; app container(s) {', '.join(waiting)} wait in PodInitializing" if waiting else "; the app never starts"
    )
    named: list[str] = []
    for line in texts:
        if missing_env._NEED.search(line):
            named += [var for var in missing_env._VAR.findall(line) if var not in container.env_names]
    named = list(dict.fromkeys(named))
    config = [m for line in texts for m in _CONFIG.findall(line)]
    files = [line for line in texts if _FILE.search(line) and "config" in line.lower()]
    quoted = [f"log {pod.name}/{container.name}: {line.strip()}" for line in lines[-5:]]
    if container.message:
        quoted.append(f"init container {container.name} message: {container.message}")
    evidence_lines = [status + blocked, *quoted][:10]
    head = f"Init container {container.name} of {evidence.target} fails (exit code {exit_code}, {reason})"
    if named:
        return models.Diagnosis(
            category="missing-env",
            summary=f"{head} because it needs {' or '.join(named[:3])}, which it does not set; the app containers "
            "never start. The value is configuration (often a credential) a human must provide, unless a recent "
            "rollout added this init container.",
            evidence=evidence_lines,
            confidence=0.7 if container.env_from else 0.9,
            source="rules",
        )
    if config or files:
        what = ", ".join(f'{kind.lower().rstrip("s")} "{name}"' for kind, name in config) or "its configuration"
        return models.Diagnosis(
            category="missing-config",
            summary=f"{head}: {what} not found; the app containers never start. Either the configuration was "
            "never created or a recent change points the init container at a wrong name.",
            evidence=evidence_lines,
            confidence=0.9,
            source="rules",
        )
    return models.Diagnosis(
        category="app-crash",
        summary=f"{head} and is restarted in a loop ({container.restart_count} restarts), so the app containers "
        "never start" + (f"; its last words: {lines[-1].strip()!r}." if lines else "; it logged nothing."),
        evidence=evidence_lines,
        confidence=0.85 if lines else 0.75,
        source="rules",
    )
