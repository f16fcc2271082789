"""Rule: a container is killed for exceeding its memory limit (OOMKilled).

Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    lines: list[str] = []
    limits: dict[str, str | None] = {}
    restarts = 0
    for pod in evidence.pods:
        for container in pod.containers:
            killed_now = container.state == "terminated" and container.reason == "OOMKilled"
            # lastState stays until the next restart: only a container stable for a while has recovered
            # (a crash-looping one is also Running and Ready for a moment between two kills).
            recovered = container.stable_since(evidence.collected_at)
            killed_before = container.last_reason == "OOMKilled" and not recovered
            if not (killed_now or killed_before):
                continue
            exit_code = container.exit_code if killed_now else container.last_exit_code
            lines.append(
                f"pod {pod.name} container {container.name}: terminated OOMKilled (exit code {exit_code}), "
                f"restarts {container.restart_count}, memory limit {container.memory_limit or 'none'}"
            )
            limits[container.name] = container.memory_limit
            restarts = max(restarts, container.restart_count)
    for event in evidence.events:
        if "OOMKill" in event.reason or "OOMKilled" in event.message:
            lines.append(f"event {event.object} {event.reason}: {event.message}")
    if not limits:
        hinted = [hint for hint in evidence.hints if "OOMKilled" in hint]
        if not hinted:
            return None
        return models.Diagnosis(
            category="oom-killed",
            summary="K8sGPT reports an OOMKilled container, but no pod of the target shows it now.",
            evidence=[f"K8sGPT reported: {hint}" for hint in hinted[:5]],
            confidence=0.5,
            source="rules",
        )
    described = ", ".join(f"{name} (limit {limit or 'none'})" for name, limit in limits.items())
    summary = (
        f"Container {described} of {evidence.target} is killed by the kernel for exceeding its memory limit "
        f"({restarts} restart(s) so far): the workload needs more memory than it is allowed."
    )
    return models.Diagnosis(
        category="oom-killed",
        summary=summary,
        evidence=list(dict.fromkeys(lines))[:10],
        confidence=0.95,
        source="rules",
    )
