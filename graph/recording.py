"""Writing a node's progress onto the Incident's status (phase, timeline, and more).

Every node records through ``record``: one status write with the given fields and
the node's timeline line appended to what the Incident already shows (lines the
engine added meanwhile, such as "K8sGPT no longer reports ...", are kept). The
remediation stages also post the line as a Kubernetes Event on the target, so
``kubectl describe`` on the workload tells what AEGIS did to it. ``notify`` hands
the Incident, as stored, to the webhook notifier (gate: a fix waits; report: it ended).
"""

from __future__ import annotations

import logging
from typing import Any

from aegis import models
from graph import context, state

log = logging.getLogger(__name__)


async def record(
    deps: context.Deps, current: state.IncidentState, stage: str, message: str, **status: Any
) -> dict[str, Any]:
    """Write ``status`` and append one timeline line; return that line for the state update."""
    line = models.TimelineEntry(at=deps.clock(), stage=stage, message=message)
    incident = current["incident"]
    await deps.incidents.set_status(incident["namespace"], incident["name"], status, [line])
    if stage in EVENT_STAGES and deps.cluster is not None:
        target = incident["target"]
        involved = {
            "apiVersion": target.get("apiVersion"),
            "kind": target["kind"],
            "metadata": {"name": target["name"], "namespace": target["namespace"], "uid": target.get("uid")},
        }
        failed = stage == "rollback" or status.get("phase") in ("Escalated", "Failed", "Rejected", "Expired")
        await deps.cluster.event(
            involved,
            "Warning" if failed else "Normal",
            f"Aegis{stage.capitalize()}",
            f"incident {incident['name']}: {message}",
        )
    return line.dump()


EVENT_STAGES = frozenset({"verify", "gate", "apply", "confirm", "rollback", "report"})


async def notify(
    deps: context.Deps, current: state.IncidentState, event: str, results: list[dict[str, Any]] | None = None
) -> None:
    """Post ``event`` about this incident to the webhook, if one is configured; never fails the workflow.

    The message is built from the Incident as the store returns it (its whole status); delivery runs in
    the background.
    """
    notifier = deps.notifier
    if notifier is None or not getattr(notifier, "enabled", True):
        return
    incident = current["incident"]
    try:
        obj = await deps.incidents.get(incident["namespace"], incident["name"])
        if obj is None:
            return
        notifier.notify(obj, event, results=results)
    except Exception as exc:  # a notification is never worth a failed workflow
        log.warning("notification %s for %s/%s not sent: %s", event, incident["namespace"], incident["name"], exc)
