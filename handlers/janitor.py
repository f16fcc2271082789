"""Janitor: a Kopf timer on shadow namespaces deletes any that outlived its expiry (left by a crash).

Shadow namespaces are always deleted by the verify stage; this catches the ones an
operator killed mid-verification left behind.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from aegis import shadow


@kopf.timer("", "v1", "namespaces", labels={shadow.LABEL_SHADOW: "true"}, interval=60, initial_delay=5)
async def expire_shadow(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    engine = memo.get("engine")
    if engine is None:
        return
    name = body["metadata"]["name"]
    if shadow.expired(dict(body), engine.deps.clock()):
        logger.info("deleting expired shadow namespace %s", name)
        await engine.cluster.delete_namespace(name)
