"""Assembles a running AEGIS: API access, Incident store, evidence, notifier, metrics, checkpointer, graph, engine.

``open_runtime`` is an async context manager used by the Kopf start-up handler
(``handlers.lifecycle``) and by the demo; it owns every resource it opens and
closes them on exit. Nothing is built at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import kubernetes
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from aegis import config, notify, shadow
from aegis import metrics as aegis_metrics
from aegis.kube import client, evidence, incidents
from aegis.llm import advisor
from graph import build, context, engine


@dataclasses.dataclass
class Runtime:
    settings: config.Settings
    cluster: client.Cluster
    store: incidents.IncidentStore
    engine: engine.Engine
    metrics: aegis_metrics.Metrics  # what handlers.lifecycle serves on /metrics


@contextlib.asynccontextmanager
async def open_runtime(
    settings: config.Settings,
    api_client: kubernetes.client.ApiClient | None = None,
    metrics: aegis_metrics.Metrics | None = None,
) -> AsyncIterator[Runtime]:
    """Open everything AEGIS needs; close it all on exit (running workflows get a short grace period).

    ``metrics``: where every collaborator counts (default: a fresh ``Metrics`` with its own registry).
    """
    metrics = metrics if metrics is not None else aegis_metrics.Metrics()
    cluster = client.Cluster(api_client or client.api_client_from_config(), settings, metrics=metrics)
    try:
        settings.state_db.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(settings.state_db)) as checkpointer:
            store = incidents.IncidentStore(cluster)
            notifier = notify.Notifier(settings)
            deps = context.Deps(
                settings=settings,
                incidents=store,
                gatherer=evidence.EvidenceGatherer(cluster, settings),
                cluster=cluster,
                verifier=shadow.ShadowVerifier(cluster, settings, metrics=metrics),
                notifier=notifier,
                advisor=advisor.Advisor(settings, metrics=metrics) if settings.llm_mode != "off" else None,
                metrics=metrics,
            )
            the_engine = engine.Engine(
                settings=settings, cluster=cluster, store=store, deps=deps, graph=build.build_graph(checkpointer)
            )
            try:
                yield Runtime(settings=settings, cluster=cluster, store=store, engine=the_engine, metrics=metrics)
            finally:
                try:
                    await the_engine.shutdown()
                finally:
                    await notifier.aclose()  # pending webhook deliveries get a short grace period
    finally:
        cluster.close()
