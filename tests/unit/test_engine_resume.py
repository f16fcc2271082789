"""When the engine takes a thread for finished, with a fake graph: a checkpoint whose last node saved its writes
before the process died (no ``next``, but that task with its writes) is resumed, not left; a finished thread is
not run again; and an engine that does not lead (leader election) starts no run at all."""

from __future__ import annotations

import dataclasses
import datetime
import types
from typing import Any

from aegis import config, models
from graph import engine

TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")
INCIDENT = models.Incident(name="deployment-web", namespace="shop", uid="u1", target=TARGET, fingerprint="f")


@dataclasses.dataclass
class Snapshot:
    values: dict[str, Any]
    next: tuple[str, ...] = ()
    tasks: tuple[Any, ...] = ()
    interrupts: tuple[Any, ...] = ()


class Graph:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.payloads: list[Any] = []

    async def aget_state(self, config_: dict[str, Any]) -> Snapshot:
        return self.snapshot

    async def ainvoke(self, payload: Any, config_: dict[str, Any], context: Any = None) -> dict[str, Any]:
        self.payloads.append(payload)
        self.snapshot = Snapshot(values=self.snapshot.values or {"phase": "Resolved"})
        return self.snapshot.values


def an_engine(graph: Graph, **settings: Any) -> engine.Engine:
    deps = types.SimpleNamespace(clock=lambda: datetime.datetime.now(datetime.UTC), metrics=None)
    return engine.Engine(
        settings=config.load_settings(**settings),
        cluster=None,
        store=None,
        deps=deps,
        graph=graph,
    )


async def test_a_step_whose_node_saved_its_writes_before_the_crash_is_resumed() -> None:
    propose = types.SimpleNamespace(name="propose", writes=[("phase", "Verifying")], interrupts=())
    graph = Graph(Snapshot(values={"phase": "Verifying"}, next=(), tasks=(propose,)))
    await an_engine(graph)._run(INCIDENT)
    assert graph.payloads == [None]  # resumed from the checkpoint (its saved writes are applied, not redone)


async def test_a_finished_thread_is_not_run_again() -> None:
    graph = Graph(Snapshot(values={"phase": "Resolved"}))
    await an_engine(graph)._run(INCIDENT)
    assert graph.payloads == []


async def test_a_new_thread_starts_from_the_incident() -> None:
    graph = Graph(Snapshot(values={}))
    await an_engine(graph)._run(INCIDENT)
    assert len(graph.payloads) == 1 and graph.payloads[0]["incident"]["name"] == "deployment-web"


async def test_a_standby_engine_starts_no_run_until_it_leads() -> None:
    graph = Graph(Snapshot(values={}))
    standby = an_engine(graph, leader_election=True)
    obj = {"metadata": {"name": "deployment-web", "namespace": "shop", "uid": "u1"}, "spec": {"target": TARGET.dump()}}
    assert standby.active is False
    assert await standby._ensure_running(obj) is False
    assert (await standby.on_result({"metadata": {"name": "r"}})).status == "standby"
    assert an_engine(graph).active is True  # leader election off: always working
