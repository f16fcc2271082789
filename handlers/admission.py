"""Admission of Incident writes -> who decided, as the API server saw it. Thin: parse, delegate, record.

A mutating webhook (served only when ``AEGIS_ADMISSION_WEBHOOK`` is on; see
``handlers.lifecycle`` and ``aegis.kube.webhook``) on every CREATE and UPDATE of an
Incident: ``aegis.approvals.stamp`` decides what ``spec.approval`` must carry about the
requesting user, and Kopf answers the API server with that JSON patch. The request is
always allowed: who may decide is namespace RBAC's business, this only records who did.
Even an error while stamping only logs: the write is admitted unstamped, as when the
webhook is not called (a Kopf handler that raises would deny the request).

The webhook fails open (``ignore_failures``: ``failurePolicy: Ignore``): when the operator is
gone (OOM-killed, node lost, restarted with the webhook off) and its configuration is left
behind, Incident writes still go through, unstamped, and their answers count as unverified.
Failing closed would block every Incident write, the operator's own and ``aegis approve``
included, until someone deleted the configuration by hand.

The stamp is bound to the stored object's ``metadata.uid`` (``old``); a CREATE has none yet,
so a decision written at creation is not stamped (see ``aegis.approvals``).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf

from aegis import approvals, models
from aegis.kube import webhook


@kopf.on.mutate(
    models.API_GROUP,
    models.API_VERSION,
    models.INCIDENT_PLURAL,
    id=webhook.HANDLER_ID,
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,  # failurePolicy: Ignore (fail open; an unstamped answer is merely unverified)
)
async def stamp_approver(
    old: kopf.Body | None,
    new: kopf.Body | None,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    try:
        changes, stamped = _changes(old, new, userinfo, memo.admission_secret)
    except Exception:  # fail open here too: a denial would block the write, an unstamped answer is only unverified
        logger.exception("could not stamp the approver; the write goes through unstamped (so unverified)")
        return
    if not changes:
        return
    patch.setdefault("spec", {}).setdefault("approval", {}).update(changes)
    if stamped:
        logger.info("%s by %s (as the API server authenticated them)", stamped["decision"], stamped["approvedBy"])
    else:
        logger.info("approval identity fields not written by AEGIS were reset: %s", ", ".join(sorted(changes)))


def _changes(
    old: kopf.Body | None, new: kopf.Body | None, userinfo: kopf.UserInfo, secret: bytes
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The merge patch of ``spec.approval`` (``approvals.stamp``), and the approval as admitted when this request
    is stamped with a new decision (None when it is not: nothing to stamp, or fields reset to what they were).

    Whether it is stamped is read from the approval as admitted, not from the patch: a writer who typed some
    of the stamp's values (their own name, ``identity: admission``) leaves those out of the patch."""
    meta = (new or old or {}).get("metadata") or {}
    stored = (old or {}).get("metadata") or {}  # the uid of the object as stored; a CREATE has none yet
    old_spec = None if old is None else dict(old.get("spec") or {})
    new_spec = dict((new or {}).get("spec") or {})
    changes = approvals.stamp(
        old_spec,
        new_spec,
        dict(userinfo or {}),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(stored.get("uid") or ""),
        secret=secret,
        now=datetime.datetime.now(datetime.UTC),
    )
    admitted = {**dict(new_spec.get("approval") or {}), **changes}
    before = dict((old_spec or {}).get("approval") or {})
    decided = old_spec is not None and admitted.get("decision") != before.get("decision")
    return changes, admitted if decided and admitted.get("identity") == approvals.STAMP else None
