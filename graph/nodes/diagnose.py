"""Node ``diagnose``: name the failure from the evidence, rules first, the LLM where it adds value.

``AEGIS_LLM_MODE``: ``off`` never asks the model; ``fallback`` (default) asks it only
when no rule is sure (unknown, or below ``AEGIS_LLM_MIN_CONFIDENCE``) and keeps the
rules' answer when the model is down, slow, wrong or less sure; ``explain`` also has
it explain a rules diagnosis in plain language; ``only`` lets the model diagnose alone
(to evaluate a model on the scenarios). Every call is recorded on the Incident.

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
from aegis.llm import advisor
from graph import context, recording, state

SETTLE_LOOKS = 4


def recovered(evidence: models.Evidence) -> bool:
    """Whether the target looks healthy now: every pod running and ready, every replica ready, a Service served.

    K8sGPT can report a moment of a rollout (a Service without ready endpoints while its first pods start);
    when AEGIS looks, the workload may be fine. Then there is nothing to fix, and nothing to escalate.
    """
    if not evidence.target_found:
        return False
    if evidence.service is not None:
        return evidence.service.ready_endpoints > 0 and evidence.service.not_ready_endpoints == 0
    pods = [pod for pod in evidence.pods if not pod.terminating]  # going away: never judged
    if not pods:
        return False
    for pod in pods:
        if pod.phase != "Running" or pod.scheduled_reason:
            return False
        if any(not c.ready or c.state != "running" for c in pod.containers if not c.init):
            return False
    summary = evidence.target_summary
    wanted = summary.get("replicas")
    return wanted is None or summary.get("status.readyReplicas", 0) >= wanted


def settling(evidence: models.Evidence) -> bool:
    """Whether the target is visibly mid-change: pods starting without an error or being deleted, or a rollout
    in progress."""
    if any(pod.terminating for pod in evidence.pods):
        return True
    for pod in evidence.pods:
        for container in pod.containers:
            if container.state == "waiting" and container.reason in ("ContainerCreating", "PodInitializing", ""):
                return True
            if container.state == "running" and not container.ready and not container.restart_count:
                return True
        if pod.phase == "Pending" and not pod.scheduled_reason:
            return True
        # Claims bound since the scheduler last tried: it places the pod at its next try.
        waits_for_claims = "unbound immediate PersistentVolumeClaims" in pod.scheduled_message
        bound = bool(evidence.claims) and all(c.phase == "Bound" for c in evidence.claims)
        if pod.phase == "Pending" and waits_for_claims and bound:
            return True
    summary = evidence.target_summary
    want = summary.get("replicas")
    if isinstance(want, int) and (
        int(summary.get("status.updatedReplicas") or 0) < want or int(summary.get("status.replicas") or 0) > want
    ):
        return True  # a rollout under way: new pods not all there yet, or old ones not yet gone
    if int(summary.get("status.observedGeneration") or 0) < int(summary.get("generation") or 0):
        return True  # a change the controller has not acted on yet (a real one takes a moment)
    conditions = summary.get("conditions") or []
    return any(c.get("type") == "Progressing" and c.get("reason") == "ReplicaSetUpdated" for c in conditions)


async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
    deps = runtime.context
    llm_mode = deps.settings.llm_mode if deps.advisor is not None else "off"
    evidence = models.Evidence.model_validate(current["evidence"])
    diagnosis = rules.diagnose(evidence)
    looks = 0
    # Whether the failure has shown itself is the rules' call in every mode, also when the model diagnoses.
    # A workload that looks healthy is watched over the same looks too: a wrong liveness probe or a slow leak
    # shows itself only after a while, and "it went away on its own" must not be concluded from one glance.
    while diagnosis.category == "unknown" and (settling(evidence) or recovered(evidence)) and looks < SETTLE_LOOKS:
        looks += 1
        await asyncio.sleep(deps.settings.settle_seconds)
        incident = models.Incident.model_validate(current["incident"])
        evidence = await deps.gatherer.gather(incident, list(current.get("hints", [])), deps.clock())
        diagnosis = rules.diagnose(evidence)
    if diagnosis.category == "unknown" and recovered(evidence):
        reason = "the workload is healthy now: the reported problem went away on its own; nothing was changed"
        line = await recording.record(deps, current, "diagnose", reason, diagnosis=diagnosis.dump())
        update = {"diagnosis": diagnosis.dump(), "phase": "Resolved", "reason": reason, "timeline": [line]}
        return update | ({"evidence": evidence.dump()} if looks else {})
    if llm_mode == "only":
        diagnosis = _stand_aside()
    diagnosis, calls, llm_error, llm_note = await _consult(deps, current, evidence, diagnosis, llm_mode)
    by = f"rule {diagnosis.rule}" if diagnosis.rule else diagnosis.source
    waited = f" (after {looks} more look(s) while the workload settled)" if looks else ""
    message = f"{diagnosis.category} (confidence {diagnosis.confidence:.2f}, {by}){waited}: {diagnosis.summary}"
    status: dict[str, Any] = {"diagnosis": diagnosis.dump()}
    if calls:
        status["llm"] = advisor.summary([*current.get("llm_calls", []), *calls])
    line = await recording.record(deps, current, "diagnose", message + llm_note, **status)
    update: dict[str, Any] = {"diagnosis": diagnosis.dump(), "timeline": [line], "llm_calls": calls}
    if llm_error:
        update["llm_error"] = llm_error
    if looks:
        update["evidence"] = evidence.dump()
    return update


def _stand_aside() -> models.Diagnosis:
    return models.Diagnosis(
        category="unknown", summary="AEGIS_LLM_MODE=only: the rules stand aside.", confidence=0.0, source="rules"
    )


def wants_llm(diagnosis: models.Diagnosis, llm_mode: str, min_confidence: float) -> bool:
    """Whether the model is asked to diagnose: always in ``only`` mode, else when no rule is sure."""
    if llm_mode == "off":
        return False
    return llm_mode == "only" or diagnosis.category == "unknown" or diagnosis.confidence < min_confidence


async def _consult(
    deps: context.Deps,
    current: state.IncidentState,
    evidence: models.Evidence,
    diagnosis: models.Diagnosis,
    llm_mode: str,
) -> tuple[models.Diagnosis, list[dict[str, Any]], str, str]:
    """(diagnosis to keep, calls made, why the model could not help, a note for the timeline)."""
    if llm_mode == "off":
        return diagnosis, [], "", ""
    incident = models.Incident.model_validate(current["incident"])
    if wants_llm(diagnosis, llm_mode, deps.settings.llm_min_confidence):
        advice = await deps.advisor.diagnose(incident, evidence)
        calls = [c.dump() for c in advice.calls]
        found = advice.value
        if found is None:
            kept = "no diagnosis" if llm_mode == "only" else "the rules' answer stands"
            if diagnosis.category == "unknown":
                diagnosis = diagnosis.model_copy(
                    update={"summary": f"{diagnosis.summary} The LLM could not help: {advice.error}."[:2000]}
                )
            return diagnosis, calls, advice.error, f" [LLM: {advice.error}; {kept}]"
        if llm_mode == "only" or (found.category != "unknown" and found.confidence > diagnosis.confidence):
            return found, calls, "", f" [LLM diagnosis; rules said {diagnosis.category}]"
        return diagnosis, calls, "", f" [LLM said {found.category} at {found.confidence:.2f}; the rules' answer stands]"
    if llm_mode == "explain" and diagnosis.category != "unknown":
        advice = await deps.advisor.explain(incident, evidence, diagnosis)
        calls = [c.dump() for c in advice.calls]
        if advice.value:
            return diagnosis.model_copy(update={"explanation": advice.value}), calls, "", " [explained by the LLM]"
        return diagnosis, calls, advice.error, f" [LLM explanation unavailable: {advice.error}]"
    return diagnosis, [], "", ""
