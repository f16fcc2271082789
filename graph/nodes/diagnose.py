"""Node ``diagnose``: name the failure from the evidence (rules first; the LLM joins in a later issue).

K8sGPT may report a moment of a rollout that is still settling (a new pod pulling
its image, endpoints not ready yet). When no rule recognises the evidence and the
workload is visibly still changing, the node looks again a few times before it
concludes ``unknown``: acting on a transient would escalate a problem that has not
shown itself yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from aegis import models, rules
from graph import context, recording, state

SETTLE_LOOKS = 4


def settling(evidence: models.Evidence) -> bool:
    """Whether the target is visibly mid-change: pods starting without an error, or a rollout in progress."""
    for pod in evidence.pods:
        for container in pod.containers:
            if container.state == "waiting" and container.reason in ("ContainerCreating", "PodInitializing", ""):
                return True
            if container.state == "running" and not container.ready and not container.restart_count:
                return True
        if pod.phase == "Pending" and not pod.scheduled_reason:
            return True
    conditions = evidence.target_summary.get("conditions") or []
    return any(c.get("type") == "Progressing" and c.get("reason") == "ReplicaSetUpdated" for c in conditions)


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    evidence = models.Evidence.model_validate(current["evidence"])
    diagnosis = rules.diagnose(evidence)
    looks = 0
    while diagnosis.category == "unknown" and settling(evidence) and looks < SETTLE_LOOKS:
        looks += 1
        await asyncio.sleep(deps.settings.settle_seconds)
        incident = models.Incident.model_validate(current["incident"])
        evidence = await deps.gatherer.gather(incident, list(current.get("hints", [])), deps.clock())
        diagnosis = rules.diagnose(evidence)
    by = f"rule {diagnosis.rule}" if diagnosis.rule else diagnosis.source
    waited = f" (after {looks} more look(s) while the workload settled)" if looks else ""
    message = f"{diagnosis.category} (confidence {diagnosis.confidence:.2f}, {by}){waited}: {diagnosis.summary}"
    line = await recording.record(deps, current, "diagnose", message, diagnosis=diagnosis.dump())
    update: dict[str, Any] = {"diagnosis": diagnosis.dump(), "timeline": [line]}
    if looks:
        update["evidence"] = evidence.dump()
    return update
