"""The real operator against the emulated API: bad input, deletions, restarts, ignored namespaces, bad settings."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import time

import kubernetes

from aegis import config, k8sgpt, models
from aegis.kube import incidents
from graph import runtime
from tests import factories
from tests.integration.conftest import Kube, Operator, wait_for
from tests.integration.test_operator_flow import NS, PULL_TEXT, arrange_broken_frontend, settled


def test_malformed_results_are_reported_and_the_operator_keeps_working(kube: Kube, operator: Operator) -> None:
    _, pod_a, _ = arrange_broken_frontend(kube)
    operator.start()
    no_errors = factories.result(NS, "frontend-broken", [])
    no_errors["metadata"]["name"] = "malformed1"
    bad_name = factories.result(NS, "x", [PULL_TEXT])
    bad_name["spec"]["name"] = "not-namespaced"
    bad_name["metadata"]["name"] = "malformed2"
    node = factories.result(NS, "x", ["worker-2 has condition of type Ready"], kind="Node")
    node["spec"]["name"], node["metadata"]["name"] = "worker-2", "worker2"
    ghost = factories.result(NS, "ghost-7b9c6d5f4-zzzzz", [PULL_TEXT])
    for body in (no_errors, bad_name, node, ghost):
        kube.create(body)
    wait_for(
        lambda: operator.log().count("Result rejected:") >= 3 and "Result ignored:" in operator.log(),
        20,
        what="three rejections and one unsupported kind in the log",
    )
    log = operator.log()
    assert "spec.error is empty" in log
    assert "spec.name 'not-namespaced' is not '<namespace>/<name>'" in log
    assert "kind 'Node' is not something AEGIS remediates" in log
    assert "Pod shop/ghost-7b9c6d5f4-zzzzz no longer exists and its owner is unknown" in log
    assert kube.incidents() == []

    kube.create(factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT]))
    wait_for(lambda: settled(kube), 30, what="the valid Result to be diagnosed")
    assert operator.stop() == 0
    assert "Traceback" not in operator.log()


def test_deleted_result_is_recorded_on_the_incident(kube: Kube, operator: Operator) -> None:
    _, pod_a, _ = arrange_broken_frontend(kube)
    operator.start()
    body = factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT])
    kube.create(body)
    wait_for(lambda: settled(kube), 30, what="a Diagnosed incident")
    kube.custom.delete_namespaced_custom_object(
        "core.k8sgpt.ai", "v1alpha1", body["metadata"]["namespace"], "results", body["metadata"]["name"]
    )

    def deactivated() -> dict | None:
        item = kube.incidents(NS)[0]
        noted = "no longer reports" in item["status"]["timeline"][-1]["message"]
        return item if noted and not item["spec"]["sources"][0]["active"] else None

    incident = wait_for(deactivated, 20, what="the source to be marked inactive")
    last = incident["status"]["timeline"][-1]["message"]
    assert f"K8sGPT no longer reports Result {body['metadata']['namespace']}/{body['metadata']['name']}" in last
    assert "no active K8sGPT report remains" in last
    assert incident["status"]["phase"] == "Diagnosed"
    assert operator.stop() == 0


def test_ignored_namespaces_get_no_incident(kube: Kube, sim, tmp_path: pathlib.Path) -> None:
    _, pod_a, _ = arrange_broken_frontend(kube)
    op = Operator(sim.kubeconfig, tmp_path, env={"AEGIS_IGNORE_NAMESPACES": "kube-system,shop"}).start()
    try:
        kube.create(factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT]))
        time.sleep(2)
        assert kube.incidents() == []
    finally:
        assert op.stop() == 0


def test_restart_resumes_an_unfinished_workflow_where_it_stopped(
    kube: Kube, api: kubernetes.client.ApiClient, sim, tmp_path: pathlib.Path
) -> None:
    """An operator stopped after `gather` (checkpoint saved): the next one finishes without redoing work."""
    _, pod_a, _ = arrange_broken_frontend(kube)
    state_db = tmp_path / "state.sqlite"

    async def run_until_after_gather() -> None:
        settings = config.load_settings(state_db=state_db, mode="observe")
        async with runtime.open_runtime(settings, api_client=api) as rt:
            finding = k8sgpt.parse_result(factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT]))
            target, chain, _ = await k8sgpt.resolve_target(finding, rt.cluster)
            opened = models.Incident(
                name="deployment-frontend", namespace=NS, target=target, ownerChain=chain, fingerprint="f"
            )
            obj, _ = await rt.store.create(opened)
            incident = incidents.incident_from_object(obj)
            cfg = {"configurable": {"thread_id": incident.thread_id}}
            initial = {"incident": incident.dump(), "hints": [PULL_TEXT], "timeline": []}
            await rt.engine.graph.ainvoke(initial, cfg, context=rt.engine.deps, interrupt_after=["gather"])

    asyncio.run(run_until_after_gather())
    mid = kube.incidents(NS)[0]
    assert mid["status"]["phase"] == "Diagnosing"
    assert [line["stage"] for line in mid["status"]["timeline"]] == ["intake", "gather"]

    op = Operator(sim.kubeconfig, tmp_path).start()
    try:
        done = wait_for(lambda: settled(kube), 30, what="the resumed incident to finish")[0]
    finally:
        assert op.stop() == 0
    assert done["status"]["diagnosis"]["category"] == "image-pull"
    assert [line["stage"] for line in done["status"]["timeline"]] == ["intake", "gather", "diagnose", "report"]


def test_invalid_settings_stop_the_operator_with_the_variable_named(sim, tmp_path: pathlib.Path) -> None:
    env = Operator(sim.kubeconfig, tmp_path, env={"AEGIS_MAX_CONCURRENT_INCIDENTS": "zero"}).env
    proc = subprocess.run(
        [sys.executable, "-m", "kopf", "run", "-m", "handlers", "--standalone", "--all-namespaces"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "AEGIS_MAX_CONCURRENT_INCIDENTS" in proc.stdout + proc.stderr


def test_an_api_outage_during_intake_is_retried(kube: Kube, operator: Operator, sim) -> None:
    """K8sGPT may not rewrite a Result for a long time: an intake that hit an API error must retry by itself."""
    from aegis.sim import apiserver

    _, pod_a, _ = arrange_broken_frontend(kube)
    failures = {"left": 2}  # the first attempt and the retry after 5 s fail; the one after 15 s more works

    def flaky_pod_reads(method: str, route: apiserver.Route, query: dict) -> apiserver.ApiError | None:
        if method == "GET" and route.plural == "pods" and route.name and failures["left"] > 0:
            failures["left"] -= 1
            return apiserver.ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        return None

    sim.api.faults.append(flaky_pod_reads)
    operator.start()
    kube.create(factories.result(NS, pod_a["metadata"]["name"], [PULL_TEXT]))
    wait_for(lambda: "retrying in 5s" in operator.log(), 20, what="a scheduled retry")
    wait_for(lambda: settled(kube), 40, what="the incident after the retry")
    assert failures["left"] == 0
    assert operator.stop() == 0


def test_the_janitor_deletes_expired_shadow_namespaces(kube: Kube, sim, tmp_path: pathlib.Path) -> None:
    expired = {"aegis.dev/shadow": "true", "aegis.dev/expires": str(int(time.time()) - 60)}
    fresh = {"aegis.dev/shadow": "true", "aegis.dev/expires": str(int(time.time()) + 3600)}
    kube.core.create_namespace({"metadata": {"name": "aegis-shadow-old-1-b", "labels": expired}})
    kube.core.create_namespace({"metadata": {"name": "aegis-shadow-new-1-b", "labels": fresh}})
    kube.core.create_namespace({"metadata": {"name": "team-a", "labels": {"aegis.dev/expires": "0"}}})
    op = Operator(sim.kubeconfig, tmp_path).start()
    try:
        names = lambda: [n.metadata.name for n in kube.core.list_namespace().items]  # noqa: E731
        wait_for(lambda: "aegis-shadow-old-1-b" not in names(), 20, what="the expired shadow to go")
        assert "aegis-shadow-new-1-b" in names() and "team-a" in names()
    finally:
        assert op.stop() == 0
