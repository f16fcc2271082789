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

Prometheus metrics (``aegis.metrics``) are served on ``AEGIS_METRICS_ADDR``:``AEGIS_METRICS_PORT``
(``/metrics``, ``/readyz``; port 0: not served) for the runtime built here, until clean-up.

With ``AEGIS_LEADER_ELECTION`` (two or more replicas) an ``aegis.kube.leader.Elector`` competes for a Lease
from start-up on, without blocking it; the engine works (``Engine.lead``) only while this replica holds the
Lease, and at clean-up a leader's runs end before it releases it. ``memo.leadership.is_leader`` tells whether
this replica leads (always True with leader election off), for readiness.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import kopf

from aegis import approvals, config, metrics_server
from aegis.kube import client, leader, leases, webhook
from graph import runtime

STOP_GRACE_SECONDS = 5.0  # a stopping leader's runs may finish within this; the rest resume on the next leader


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Handlers log to Kubernetes Events only for problems (a malformed Result is worth an Event on it).
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    if memo.get("engine") is not None:
        given = getattr(memo.engine, "settings", None)
        memo.leadership = _leadership(given)
        _admission(settings, memo, given, logger)
        await _remove_stale_configuration(given, getattr(memo.engine, "cluster", None), logger)
        memo.engine.start_janitor()
        _elect(memo, given, logger)
        return
    try:
        aegis_settings = config.load_settings()
    except config.SettingsError as exc:
        raise kopf.PermanentError(str(exc)) from None
    memo.leadership = _leadership(aegis_settings)
    _admission(settings, memo, aegis_settings, logger)
    stack = contextlib.AsyncExitStack()
    the_runtime = await stack.enter_async_context(runtime.open_runtime(aegis_settings))
    memo.exit_stack = stack
    memo.engine = the_runtime.engine
    await _serve_metrics(stack, aegis_settings, the_runtime, memo.leadership, logger)
    await _remove_stale_configuration(aegis_settings, the_runtime.cluster, logger)
    memo.engine.start_janitor()
    _elect(memo, aegis_settings, logger)
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
    settings.admission.server = webhook.server(
        aegis_settings, leadership=memo.leadership if aegis_settings.leader_election else None
    )
    settings.admission.managed = aegis_settings.admission_configuration or None
    logger.info(
        "admission webhook on port %d%s: approvers are recorded as the API server authenticated them",
        aegis_settings.admission_port,
        f", managing MutatingWebhookConfiguration {aegis_settings.admission_configuration}"
        if aegis_settings.admission_configuration
        else " (its MutatingWebhookConfiguration is managed by hand)",
    )


async def _serve_metrics(
    stack: contextlib.AsyncExitStack,
    aegis_settings: config.Settings,
    rt: runtime.Runtime,
    leadership: leader.Leadership,
    logger: logging.Logger,
) -> None:
    """Serve /metrics and /readyz until clean-up closes ``stack`` (AEGIS_METRICS_PORT=0: not at all).

    Ready means this replica processes incidents: it holds the Lease (always, with leader election off). Only
    the ready replica is behind the webhook's Service; a standby stays alive (Kopf's liveness) but not ready.

    A port that cannot be bound is logged as an error; the operator goes on without metrics (they are not worth
    stopping remediation for).
    """
    addr, port = aegis_settings.metrics_addr, aegis_settings.metrics_port
    if not port:
        return
    try:
        await stack.enter_async_context(
            metrics_server.serve(rt.metrics, addr, port, ready=lambda: leadership.is_leader)
        )
    except OSError as exc:
        logger.error("metrics not served: cannot listen on %s:%d (AEGIS_METRICS_ADDR/_PORT): %s", addr, port, exc)
        return
    logger.info("metrics on http://%s:%d/metrics", addr, port)


async def _remove_stale_configuration(aegis_settings: Any, cluster: Any, logger: logging.Logger) -> None:
    """With the webhook off, a configuration left by an earlier run with it on would call nobody: delete it."""
    if not isinstance(aegis_settings, config.Settings) or aegis_settings.admission_webhook:
        return
    if isinstance(cluster, client.Cluster):
        await webhook.remove_stale(cluster, aegis_settings.admission_configuration, logger)


def _leadership(aegis_settings: Any) -> leader.Leadership:
    """``memo.leadership`` (what readiness reports): leading from the start unless leader election is on."""
    electing = isinstance(aegis_settings, config.Settings) and aegis_settings.leader_election
    return leader.Leadership(leading=not electing)


def _elect(memo: kopf.Memo, aegis_settings: Any, logger: logging.Logger) -> None:
    """With AEGIS_LEADER_ELECTION: compete for the Lease in the background (Kopf serves its liveness probe only
    after the start-up handlers, so a standby must not wait here); the engine leads while this replica does."""
    if not isinstance(aegis_settings, config.Settings) or not aegis_settings.leader_election:
        return
    cluster = getattr(memo.engine, "cluster", None)
    if not isinstance(cluster, client.Cluster):
        raise kopf.PermanentError("leader election needs the engine's Kubernetes client")
    options = leader.Options.from_settings(aegis_settings)
    memo.elector = leader.Elector(
        leases.KubeLeases(cluster.api_client, timeout=options.renew_deadline_seconds / 2),
        options,
        leadership=memo.leadership,
        on_started_leading=memo.engine.lead,
        on_stopped_leading=memo.engine.step_down,
    )
    memo.elector.start()
    logger.info(
        "leader election: competing for Lease %s/%s as %s (lease %ds, renew deadline %gs, retry %gs)",
        options.namespace,
        options.name,
        options.identity,
        options.lease_seconds,
        options.renew_deadline_seconds,
        options.retry_seconds,
    )


async def _stop_electing(memo: kopf.Memo, logger: logging.Logger) -> None:
    """A leader's runs end (grace, then cancelled: they resume on the next leader) before it releases the Lease,
    so that two replicas never run the same workflow."""
    elector = memo.get("elector")
    if elector is None:
        return
    elector.on_started_leading = None  # stopping: never lead again
    if elector.leadership.is_leader:
        await memo.engine.step_down(grace=STOP_GRACE_SECONDS)
    await elector.stop(release=True)
    if isinstance(elector.api, leases.KubeLeases):
        elector.api.close()
    logger.info("leader election: stopped competing for Lease %s", elector.where)


@kopf.on.probe(id="leader")
def leading(memo: kopf.Memo, **_: Any) -> bool:
    """Kopf's liveness answer carries whether this replica leads (it is alive either way)."""
    leadership = memo.get("leadership")
    return bool(leadership is not None and leadership.is_leader)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    await _stop_electing(memo, logger)
    stack = memo.get("exit_stack")
    if stack is not None:
        await stack.aclose()
        logger.info("AEGIS stopped; unfinished incidents resume at the next start")
