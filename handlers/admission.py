"""Admission of Incident writes -> who decided, as the API server saw it. Thin: parse, delegate, record.

A mutating webhook (served only when ``AEGIS_ADMISSION_WEBHOOK`` is on; see
``handlers.lifecycle`` and ``aegis.kube.webhook``) on every CREATE and UPDATE of an
Incident: ``aegis.approvals.stamp`` decides what ``spec.approval`` must carry about the
requesting user, and Kopf answers the API server with that JSON patch. The request is
always allowed: who may decide is namespace RBAC's business, this only records who did.
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
    changes = approvals.stamp(
        None if old is None else dict(old.get("spec") or {}),
        dict((new or {}).get("spec") or {}),
        dict(userinfo or {}),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
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
