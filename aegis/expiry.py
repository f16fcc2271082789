"""When a fix waits for a human, and when that wait expires (AEGIS_APPROVAL_TIMEOUT_SECONDS).

Pure functions over the Incident as stored (plain dicts): the deadline is computed
from when the wait began as recorded on the Incident — the gate's ``waiting for
approval`` timeline line, else the ``at`` of its pending decision — never from an
in-memory timer, so it survives operator restarts. Used by the engine's sweep (which
ends overdue waits as Expired), the gate (which shows ``status.decision.expiresAt``)
and the review screen.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

AWAITING = "AwaitingApproval"
EXPIRED = "Expired"  # the answer the engine resumes an overdue wait with (spec.approval never holds it)


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp as the API writes it (``...Z`` or with an offset), or None."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def waiting_since(incident: Mapping[str, Any]) -> datetime.datetime | None:
    """When the incident began to wait for a human (None unless it is AwaitingApproval).

    The gate writes a ``waiting for approval`` timeline line when it starts to wait and a pending
    decision stamped with the same moment; the line is preferred (it survives later decisions).
    """
    status = incident.get("status") or {}
    if status.get("phase") != AWAITING:
        return None
    for line in reversed(status.get("timeline") or []):
        if line.get("stage") == "gate" and str(line.get("message", "")).startswith("waiting for approval"):
            return parse_time(line.get("at"))
    decision = status.get("decision") or {}
    if decision.get("outcome", "pending") == "pending":
        return parse_time(decision.get("at"))
    return None


def deadline(incident: Mapping[str, Any], timeout_seconds: float) -> datetime.datetime | None:
    """When the wait of this incident expires (None when it does not wait for a human).

    Counted from the stored start of the wait with the operator's current timeout, so a changed
    AEGIS_APPROVAL_TIMEOUT_SECONDS applies to waits already under way.
    """
    began = waiting_since(incident)
    return None if began is None else began + datetime.timedelta(seconds=timeout_seconds)


def overdue(incident: Mapping[str, Any], timeout_seconds: float, now: datetime.datetime) -> bool:
    """Whether this incident waits for a human past its deadline and nobody has answered yet."""
    due = deadline(incident, timeout_seconds)
    if due is None or now < due:
        return False
    answer = (((incident.get("spec") or {}).get("approval") or {}).get("decision")) or "Pending"
    return answer not in ("Approved", "Rejected")  # an answer given in time is acted on, not expired


def span(seconds: float) -> str:
    """A timeout as people say it: 45s, 2m30s, 1h0m, 1d2h."""
    total = max(round(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def expired_reason(name: str, namespace: str, timeout_seconds: float) -> str:
    """The reason an incident ends Expired, with how to try again."""
    return (
        f"no decision within {span(timeout_seconds)}; the verified fix was not applied; re-trigger by deleting "
        f"the Incident (kubectl delete incident {name} -n {namespace}): K8sGPT's next report opens a new one"
    )
