"""K8sGPT Result events -> the engine. Thin: parse, delegate, record in the log.

``on.event`` (not create/update handlers) so AEGIS never writes to K8sGPT's
objects (no Kopf annotations or finalizers on Results) and sees every Result at
start-up, which is how a restarted operator catches up.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from aegis import k8sgpt


@kopf.on.event(k8sgpt.RESULT_GROUP, k8sgpt.RESULT_VERSION, k8sgpt.RESULT_PLURAL)
async def result_event(event: kopf.RawEvent, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        outcome = await memo.engine.on_result_deleted(body)
    else:
        outcome = await memo.engine.on_result(body)
    if outcome.status == "invalid":  # also posted as a Warning Event on the Result
        logger.warning("Result rejected: %s", outcome.reason)
    elif outcome.status == "error":
        logger.warning("Result not processed yet: %s", outcome.reason)
    elif outcome.status in ("created", "joined", "noted"):
        logger.info("%s: %s (%s)", outcome.status, outcome.incident, outcome.reason)
    elif outcome.status == "ignored":
        logger.info("Result ignored: %s", outcome.reason)
    else:
        logger.debug("%s: %s", outcome.status, outcome.reason)
