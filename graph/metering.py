"""What the workflow counts in the operator's metrics (``aegis.metrics``), through ``Deps.metrics``.

``timed`` wraps every node in ``graph.build``: a node that completes is observed in
``aegis_stage_duration_seconds{stage}`` (a node that raises — an error, or the gate's
``interrupt()`` while it waits for a human — is not; the gate resumed by an answer is
timed from the answer on). ``escalation_class`` says, from the final state, why an
incident ended Escalated — one of ``aegis.metrics.ESCALATION_CLASSES`` — and
``ended`` (called by the ``report`` node) counts it. Pure functions over plain state;
with ``Deps.metrics`` None nothing is counted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.runtime import Runtime

from aegis import models
from graph import context, state

Node = Callable[[state.IncidentState, Runtime[context.Deps]], Awaitable[dict[str, Any]]]
# Targets AEGIS's typed fixes do not change (Job, CronJob, DaemonSet: aegis.rules.remedies.unsupported_reason).
UNCHANGED_KINDS = models.UNCHANGED_KINDS


def timed(stage: str, node: Node) -> Node:
    """``node``, observed in ``aegis_stage_duration_seconds{stage=...}`` each time it completes."""

    @functools.wraps(node)
    async def run(current: state.IncidentState, runtime: Runtime[context.Deps]) -> dict[str, Any]:
        started = time.monotonic()
        update = await node(current, runtime)
        metrics = getattr(runtime.context, "metrics", None)
        if metrics is not None:
            metrics.stage_finished(stage, time.monotonic() - started)
        return update

    return run


def escalation_class(current: state.IncidentState) -> str:
    """Why this workflow ended Escalated, as one of a small fixed set (``aegis.metrics.ESCALATION_CLASSES``).

    Read from the stage that handed the incident to the report (the last timeline line so far) and what that
    stage decided: the gate's verdict, apply's results, the shadow attempts, the target's kind, and the
    diagnosis with what the LLM could not do.
    """
    timeline = current.get("timeline") or []
    stage = timeline[-1].get("stage") if timeline else ""
    if stage == "apply":  # stopped before or while applying
        failed = any(r.get("error") or r.get("dryRun") == "failed" for r in current.get("results") or [])
        return "apply-failed" if failed else "target-changed"
    if stage == "gate":
        verdict = (current.get("decision") or {}).get("verdict")
        return "policy-refused" if verdict in ("refuse", "observe") else "target-changed"
    if stage == "verify":
        return "shadow-failed"
    if stage != "propose":
        return "other"
    if current.get("attempts"):
        return "shadow-failed"  # no candidate left after those that failed in the shadow
    target = (current.get("incident") or {}).get("target") or {}
    if target.get("kind") in UNCHANGED_KINDS:
        return "unsupported-target"
    diagnosis = current.get("diagnosis") or {}
    llm_failed = bool(current.get("llm_error"))
    if diagnosis.get("category", "unknown") == "unknown":
        return "llm-unavailable" if llm_failed else "unknown-cause"
    if diagnosis.get("source") == "llm" and llm_failed:
        return "llm-unavailable"  # the model diagnosed it and then could not propose a fix
    return "needs-human"


def ended(deps: context.Deps, current: state.IncidentState, phase: str) -> None:
    """The workflow's final phase, as the report node writes it: an escalation is counted with its class."""
    if deps.metrics is not None and phase == "Escalated":
        deps.metrics.escalated(escalation_class(current))
