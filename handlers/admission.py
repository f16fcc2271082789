"""Admission of Incident writes -> who decided, as the API server saw it. Thin: parse, delegate, record.

A mutating webhook (served only when ``AEGIS_ADMISSION_WEBHOOK`` is on; see
``handlers.lifecycle`` and ``aegis.kube.webhook``) on every CREATE and UPDATE of an
Incident: ``aegis.approvals.stamp`` decides what ``spec.approval`` must carry about the
requesting user, and Kopf answers the API server with that JSON patch. The request is
always allowed: who may decide is namespace RBAC's business, this only records who did.

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
    meta = (new or old or {}).get("metadata") or {}
    stored = (old or {}).get("metadata") or {}  # the uid of the object as stored; a CREATE has none yet
    changes = approvals.stamp(
        None if old is None else dict(old.get("spec") or {}),
        dict((new or {}).get("spec") or {}),
        dict(userinfo or {}),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(stored.get("uid") or ""),
        secret=memo.admission_secret,
        now=datetime.datetime.now(datetime.UTC),
    )
    if not changes:
        return
    patch.setdefault("spec", {}).setdefault("approval", {}).update(changes)
    if changes.get("identity") == approvals.STAMP:
        decision = ((new or {}).get("spec") or {}).get("approval", {}).get("decision")
        logger.info("%s by %s (as the API server authenticated them)", decision, changes["approvedBy"])
    else:
        logger.info("approval identity fields not written by AEGIS were reset: %s", ", ".join(sorted(changes)))
