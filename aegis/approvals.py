"""Who decided an approval, from the API server's point of view, and when AEGIS believes it.

A human answers an Incident by writing ``spec.approval.decision``. A name typed
into the same object proves nothing, so where AEGIS runs its admission webhook
(``handlers.admission``) every write of an Incident passes through ``stamp``:
when the decision changes to Approved or Rejected, the webhook sets

    spec.approval.approvedBy      the requesting user, as the API server authenticated it
    spec.approval.approverGroups  that user's groups
    spec.approval.approvedAt      when
    spec.approval.identity        "admission" (the marker)
    spec.approval.signature       HMAC of the above, keyed by a secret only the operator holds

and any request that writes these fields itself gets them put back as they were
(or removed). ``identity`` tells the engine how much to believe: the name counts as
verified only when this operator runs the webhook and the signature matches, so a
stamp forged while the webhook was not called (operator down, configuration
deleted, or the call failed: the webhook fails open, ``failurePolicy: Ignore``) is
recorded as unverified too. Everything else is ``unverified``, with the name the
writer claimed kept beside it.

The signature covers the Incident's ``metadata.uid`` besides its namespace and name,
so a stamp copied from an earlier Incident of the same name (a recurrence reuses the
name after the old one is deleted) does not verify on the new one. The uid is taken
from the stored object (the request's ``oldObject``), never from the object being
written: on CREATE the API server has not assigned it yet (admission runs first, and
a uid the writer put into the body is discarded), so a decision written together
with the creation of an Incident is not stamped and counts as unverified — decide by
updating the Incident (``aegis approve``, ``kubectl patch``), as the gate asks.

Pure functions on plain data (plus the secret's file); no Kopf, no client.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import shlex
from collections.abc import Mapping
from typing import Any

from aegis import config

STAMP = "admission"  # spec.approval.identity written by the webhook
DECIDED = ("Approved", "Rejected")
FIELDS = ("approvedBy", "approverGroups", "approvedAt", "identity", "signature")
UNVERIFIED = "unverified"
_CLAIM_LIMIT = 120


def _approval(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    approval = (spec or {}).get("approval") if isinstance(spec, Mapping) else None
    return dict(approval) if isinstance(approval, Mapping) else {}


def _signature(secret: bytes, namespace: str, name: str, uid: str, fields: Mapping[str, Any]) -> str:
    material = json.dumps(
        [
            namespace,
            name,
            uid,
            fields.get("decision"),
            fields.get("approvedBy"),
            list(fields.get("approverGroups") or []),
            fields.get("approvedAt"),
            fields.get("identity"),
        ],
        separators=(",", ":"),
    )
    return hmac.new(secret, material.encode(), hashlib.sha256).hexdigest()


def stamp(
    old_spec: Mapping[str, Any] | None,
    new_spec: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    uid: str,
    secret: bytes,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The merge patch of ``spec.approval`` one admission request needs (``{}``: none; ``None`` values remove).

    ``old_spec`` is None for a CREATE; ``uid`` is the stored object's ``metadata.uid`` (from ``oldObject``;
    empty on CREATE). A new decision (Approved/Rejected) is stamped with the requesting user, bound to that
    uid; a decision back to Pending, a request without a user name, or one without a uid to bind to (a
    CREATE) carries no identity at all; a request that leaves the decision alone cannot rewrite who made it.
    """
    old, new = _approval(old_spec), _approval(new_spec)
    decision = new.get("decision")
    wanted: dict[str, Any]
    if old_spec is None or decision != old.get("decision"):
        username = str((userinfo or {}).get("username") or "")
        wanted = {}
        if decision in DECIDED and username and uid and old_spec is not None:
            groups = [str(g) for g in (userinfo or {}).get("groups") or []]
            at = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            wanted = {"approvedBy": username, "approverGroups": groups, "approvedAt": at, "identity": STAMP}
            wanted["signature"] = _signature(secret, namespace, name, uid, {**wanted, "decision": decision})
    else:
        wanted = {key: old[key] for key in FIELDS if key in old}
    return {key: wanted.get(key) for key in FIELDS if new.get(key) != wanted.get(key)}


def approver(
    approval: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    secret: bytes | None,
    uid: str | None = None,
) -> dict[str, Any]:
    """Who answered, for the workflow's resume: ``{"by": ..., "verified": ...}``.

    Verified only with the operator's secret (it runs the webhook) and a stamp whose signature matches this
    Incident (namespace, name and ``uid``, its ``metadata.uid``) and decision; otherwise ``by`` is
    "unverified", with a name the writer typed kept as a claim. Without a uid nothing is verified: a stamp
    cannot be told from one copied off an earlier Incident of the same name.
    """
    approval = approval if isinstance(approval, Mapping) else {}
    claimed = str(approval.get("approvedBy") or "")
    if secret is not None and uid and claimed and approval.get("identity") == STAMP:
        expected = _signature(secret, namespace, name, uid, approval)
        if hmac.compare_digest(str(approval.get("signature") or ""), expected):
            return {"by": claimed, "verified": True}
    if claimed:
        shown = claimed if len(claimed) <= _CLAIM_LIMIT else claimed[: _CLAIM_LIMIT - 1] + "…"
        return {"by": f"{UNVERIFIED} (claimed: {shown})", "verified": False}
    return {"by": UNVERIFIED, "verified": False}


def secret_path(settings: config.Settings) -> pathlib.Path:
    """The stamp secret lives beside the checkpoint database (a volume only the operator mounts)."""
    return settings.state_db.with_name(settings.state_db.name + ".approval-key")


def secret_for(settings: config.Settings) -> bytes | None:
    """The operator's stamp secret when it runs the admission webhook; None otherwise (nothing is verified)."""
    if not settings.admission_webhook:
        return None
    return _load_secret(str(secret_path(settings).resolve()))


@functools.cache
def _load_secret(path: str) -> bytes:
    """Read the secret, creating it (32 random bytes, mode 0600) on first use; kept across restarts."""
    file = pathlib.Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    value = file.read_text().strip()
    if len(value) < 32:
        raise ValueError(f"the approval stamp key {file} is too short; delete it to make a new one")
    return value.encode()


def commands(name: str, namespace: str, question: str | None = None) -> dict[str, str]:
    """The exact commands that answer an approval request (shown by ``aegis show``, the demo and notifications).

    With ``question`` (``status.decision.question``) they answer that ask only: if another fix is asked
    meanwhile, the CLI refuses and the operator ignores the answer instead of applying what nobody reviewed.
    """
    n, ns = shlex.quote(name), shlex.quote(namespace)
    approval: dict[str, str] = {"decision": "Approved"}
    which = ""
    if question:
        approval["question"] = question
        which = f" --question {shlex.quote(question)}"
    body = json.dumps({"spec": {"approval": approval}}, separators=(",", ":"))
    return {
        "approve": f"aegis approve {n} -n {ns}{which}",
        "reject": f'aegis reject {n} -n {ns}{which} --reason "<why>"',
        "kubectl": f"kubectl patch incident {n} -n {ns} --type merge -p '{body}'",
    }


def answers_question(approval: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> bool:
    """Whether an answer is for the question now asked (an answer that names no question is for the current one)."""
    named = (approval or {}).get("question")
    return not named or named == ((status or {}).get("decision") or {}).get("question")
