"""The engine of a replica that does not lead (``AEGIS_LEADER_ELECTION``), against the emulated API over HTTP.

A standby ignores Result and Incident events and runs no janitor; when it leads it lists every Result and
Incident and feeds them through the same paths as Kopf's listing at start-up; deposed in the middle of a
workflow run, it cancels the run, which the next term resumes from its checkpoint: one incident, each stage
once. With leader election off nothing changes (every other test).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from typing import Any

import kubernetes

from aegis import config
from graph import runtime
from tests import factories
from tests.integration.conftest import Kube
from tests.integration.test_operator_flow import NS, PULL_TEXT, arrange_broken_frontend


async def until(condition: Callable[[], Any], within: float, what: str) -> Any:
    """Poll a blocking ``condition`` (a kubectl-like read) off the loop the engine runs in."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = None
    while loop.time() < deadline:
        last = await asyncio.to_thread(condition)
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")


def test_a_standby_ignores_events_catches_up_when_it_leads_and_a_deposed_run_resumes(
    kube: Kube, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path
) -> None:
    _, pod_a, _ = arrange_broken_frontend(kube)
    result = factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT])
    kube.create(result)
    meta = result["metadata"]
    live = kube.custom.get_namespaced_custom_object(
        "core.k8sgpt.ai", "v1alpha1", meta["namespace"], "results", meta["name"]
    )

    async def scenario() -> None:
        settings = config.load_settings(state_db=tmp_path / "state.sqlite", mode="observe", leader_election=True)
        async with runtime.open_runtime(settings, api_client=api) as rt:
            engine = rt.engine
            assert not engine.active
            assert (await engine.on_result(live)).status == "standby"
            await engine.on_incident({"metadata": {"name": "x", "namespace": NS}})
            engine.start_janitor()
            assert engine._janitor is None
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(kube.incidents, NS) == []

            # Lead; the workflow is held inside `gather` so that leadership can be lost in the middle of a run.
            entered, original = asyncio.Event(), engine.deps.gatherer.gather

            async def held(*args: Any, **kwargs: Any) -> Any:
                entered.set()
                await asyncio.Event().wait()

            engine.deps.gatherer.gather = held
            await engine.lead()
            await asyncio.wait_for(entered.wait(), 30)  # the listing found the Result and opened an incident
            assert engine.active and engine._janitor is not None and not engine._janitor.done()
            running = list(engine._tasks.values())
            assert len(running) == 1

            await engine.step_down()
            assert not engine.active and engine._janitor is None and engine._tasks == {}
            assert running[0].cancelled()
            assert (await engine.on_result(live)).status == "standby"
            (mid,) = await asyncio.to_thread(kube.incidents, NS)
            assert mid["status"].get("phase") in (None, "Pending", "Diagnosing"), mid["status"]

            # The next term (here: the same replica again) resumes the run from its checkpoint.
            engine.deps.gatherer.gather = original
            await engine.lead()
            done = await until(
                lambda: [i for i in kube.incidents(NS) if (i.get("status") or {}).get("phase") == "Diagnosed"],
                30,
                "the resumed incident to be Diagnosed",
            )
            assert len(await asyncio.to_thread(kube.incidents, NS)) == 1
            timeline = done[0]["status"]["timeline"]
            # K8sGPT's report opened it (intake), then the workflow ran each stage once: gather was not repeated.
            assert [line["stage"] for line in timeline] == ["intake", "intake", "gather", "diagnose", "report"]
            assert done[0]["status"]["diagnosis"]["category"] == "image-pull"

    asyncio.run(scenario())
