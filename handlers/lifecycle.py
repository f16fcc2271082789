"""Operator start-up and clean-up: settings, Kopf tuning, and the AEGIS runtime in Kopf's memo.

A test or the demo may put a ready ``engine`` into the memo (``kopf.Memo(engine=...)``);
then nothing is built here. Invalid settings stop the operator at start-up with a
message naming the variable.

The admission webhook (``handlers.admission``) is served, and its
MutatingWebhookConfiguration managed, only when ``AEGIS_ADMISSION_WEBHOOK`` is on;
otherwise Kopf gets a server that never listens, and approvals stay unverified. A
configuration (``AEGIS_ADMISSION_CONFIGURATION``) that an earlier run with the webhook
on left behind (Kopf removes its webhook only on a graceful exit) is then deleted at
start-up, best effort (``aegis.kube.webhook.remove_stale``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import kopf

from aegis import approvals, config
from aegis.kube import client, webhook
from graph import runtime


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Handlers log to Kubernetes Events only for problems (a malformed Result is worth an Event on it).
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    if memo.get("engine") is not None:
        given = getattr(memo.engine, "settings", None)
        _admission(settings, memo, given, logger)
        await _remove_stale_configuration(given, getattr(memo.engine, "cluster", None), logger)
        memo.engine.start_janitor()
        return
    try:
        aegis_settings = config.load_settings()
    except config.SettingsError as exc:
        raise kopf.PermanentError(str(exc)) from None
    _admission(settings, memo, aegis_settings, logger)
    stack = contextlib.AsyncExitStack()
    the_runtime = await stack.enter_async_context(runtime.open_runtime(aegis_settings))
    memo.exit_stack = stack
    memo.engine = the_runtime.engine
    await _remove_stale_configuration(aegis_settings, the_runtime.cluster, logger)
    memo.engine.start_janitor()
    logger.info(
        "AEGIS ready: state in %s, up to %d concurrent incidents, ignoring namespaces %s",
        aegis_settings.state_db,
        aegis_settings.max_concurrent_incidents,
        ", ".join(aegis_settings.ignore_namespaces) or "none",
    )


def _admission(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    aegis_settings: Any,
    logger: logging.Logger,
) -> None:
    """Serve the approver-stamping webhook (and manage its configuration) only when it is switched on."""
    if not isinstance(aegis_settings, config.Settings) or not aegis_settings.admission_webhook:
        settings.admission.server = webhook.disabled
        settings.admission.managed = None
        return
    try:
        webhook.check(aegis_settings)
        memo.admission_secret = approvals.secret_for(aegis_settings)
    except (OSError, ValueError, webhook.MissingCryptography) as exc:
        raise kopf.PermanentError(str(exc)) from None
    settings.admission.server = webhook.server(aegis_settings)
    settings.admission.managed = aegis_settings.admission_configuration or None
    logger.info(
        "admission webhook on port %d%s: approvers are recorded as the API server authenticated them",
        aegis_settings.admission_port,
        f", managing MutatingWebhookConfiguration {aegis_settings.admission_configuration}"
        if aegis_settings.admission_configuration
        else " (its MutatingWebhookConfiguration is managed by hand)",
    )


async def _remove_stale_configuration(aegis_settings: Any, cluster: Any, logger: logging.Logger) -> None:
    """With the webhook off, a configuration left by an earlier run with it on would call nobody: delete it."""
    if not isinstance(aegis_settings, config.Settings) or aegis_settings.admission_webhook:
        return
    if isinstance(cluster, client.Cluster):
        await webhook.remove_stale(cluster, aegis_settings.admission_configuration, logger)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    stack = memo.get("exit_stack")
    if stack is not None:
        await stack.aclose()
        logger.info("AEGIS stopped; unfinished incidents resume at the next start")
