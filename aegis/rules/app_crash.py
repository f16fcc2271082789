"""Rule: the program itself exits (non-zero, or at all when it should keep running), not the platform.

A container in CrashLoopBackOff or terminated with a non-OOM reason and no failing
liveness probe behind the restarts. Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models
from aegis.rules import probe_failure


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    troubled = probe_failure.troubled_pods(evidence)
    probe_kills = any(e.reason == "Killing" and "probe" in e.message and e.object in troubled for e in evidence.events)
    if probe_kills:
        return None  # the kubelet kills it: a probe problem, not the program's own exit
    for pod in evidence.pods:
        for container in pod.containers:
            reason = container.last_reason or (container.reason if container.state == "terminated" else "")
            if not reason or reason == "OOMKilled":
                continue
            exit_code = container.last_exit_code if container.last_reason else container.exit_code
            looping = container.state == "waiting" and container.reason == "CrashLoopBackOff"
            # Between two crashes a container is briefly running again: it counts until it has been stable a while.
            restarted = container.state == "running" and container.restart_count > 0
            if not (looping or restarted or container.state == "terminated"):
                continue
            if container.stable_since(evidence.collected_at):
                continue
            lines = evidence.logs.get(f"{pod.name}/{container.name}") or []
            tail = [line for line in lines if line.strip()][-5:]
            what = "exits with code" if reason != "Completed" else "keeps exiting (code"
            # A run-to-completion pod (a Job's) is not restarted: it failed once, and its Job decides what next.
            once = container.state == "terminated" and container.restart_count == 0
            how = (
                f"and fails (reason {reason})"
                if once
                else f"and is restarted in a loop ({container.restart_count} restarts, reason {reason})"
            )
            summary = (
                f"Container {container.name} of {evidence.target} {what} {exit_code}"
                f"{')' if reason == 'Completed' else ''} {how}"
                + (f"; its last words: {tail[-1].strip()!r}." if tail else "; it logged nothing.")
            )
            return models.Diagnosis(
                category="app-crash",
                summary=summary,
                evidence=[
                    f"pod {pod.name} container {container.name}: {container.reason or container.state}, "
                    f"last termination {reason} exit code {exit_code}, restarts {container.restart_count}"
                ]
                + [f"log {pod.name}/{container.name}: {line.strip()}" for line in tail],
                confidence=0.8 if tail else 0.7,
                source="rules",
            )
    return None
