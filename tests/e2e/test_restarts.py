"""The operator is killed mid-incident — while waiting for approval, and between dry-run and apply — and a
new one finishes the job: every plan applied exactly once, no shadow namespace left behind."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from aegis.sim import apiserver, cluster
from tests.integration.conftest import Kube, Operator, wait_for

pytestmark = pytest.mark.e2e
ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples/incidents/bad-image-tag"
NS = "storefront"
FAST = {
    "AEGIS_MODE": "propose",
    "AEGIS_SHADOW_STABILITY_SECONDS": "3",
    "AEGIS_SHADOW_TIMEOUT_SECONDS": "30",
    "AEGIS_CONFIRM_STABILITY_SECONDS": "6",
    "AEGIS_CONFIRM_TIMEOUT_SECONDS": "60",
}


@pytest.fixture()
def lab(tmp_path: pathlib.Path) -> Iterator[tuple[cluster.SimCluster, Kube]]:
    with cluster.SimCluster(tmp_path / "kubeconfig", cluster.ClusterOptions(speed=10)) as sim:
        api = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
        yield sim, Kube(api)
        api.close()


def kubectl(sim: cluster.SimCluster, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(sim.kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


_STARTED: list[Operator] = []


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Whatever happens in a test, no operator process outlives it."""
    yield
    while _STARTED:
        op = _STARTED.pop()
        if op.process is not None and op.process.poll() is None:
            op.process.kill()
            op.process.wait(timeout=10)


def operator(sim: cluster.SimCluster, tmp_path: pathlib.Path, mode: str = "propose") -> Operator:
    op = Operator(sim.kubeconfig, tmp_path, env={**FAST, "AEGIS_MODE": mode})
    _STARTED.append(op)
    return op.start()


def break_storefront(sim: cluster.SimCluster) -> None:
    kubectl(sim, "apply", "-f", str(SCENARIO / "manifests.yaml"))
    kubectl(sim, "rollout", "status", "deployment/web", "-n", NS, "--timeout=60s")
    kubectl(sim, "apply", "-f", str(SCENARIO / "change.yaml"))


def incident(kube: Kube) -> dict[str, Any]:
    items = kube.incidents(NS)
    return items[0] if items else {}


def phase(kube: Kube) -> str:
    return (incident(kube).get("status") or {}).get("phase", "")


def image(kube: Kube) -> str:
    return kube.apps.read_namespaced_deployment("web", NS).spec.template.spec.containers[0].image


def shadows(kube: Kube) -> list[str]:
    return [n.metadata.name for n in kube.core.list_namespace(label_selector="aegis.dev/shadow=true").items]


def wait_phase(kube: Kube, op: Operator, wanted: str, timeout: float) -> None:
    """Poll for ``wanted``; on timeout, say where the incident was and what the operator logged."""
    try:
        wait_for(lambda: phase(kube) == wanted, timeout, what=f"the incident to reach {wanted}")
    except AssertionError as exc:
        status = json.dumps(incident(kube).get("status") or {}, indent=1)[-3000:]
        raise AssertionError(f"{exc}\nstatus: {status}\noperator log:\n{op.log()[-3000:]}") from None


def test_killed_while_waiting_for_approval(lab: tuple[cluster.SimCluster, Kube], tmp_path: pathlib.Path) -> None:
    sim, kube = lab
    first = operator(sim, tmp_path)
    break_storefront(sim)
    wait_phase(kube, first, "AwaitingApproval", 90)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert image(kube) == "nginx:1.277"
    wait_for(lambda: shadows(kube) == [], 30, what="the shadow namespaces to finish terminating")

    second = operator(sim, tmp_path)
    try:
        kubectl(
            sim,
            "patch",
            "incident",
            "deployment-web",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": {"approval": {"decision": "Approved", "reason": "go"}}}),
        )
        wait_phase(kube, second, "Resolved", 120)
    finally:
        second.stop()
    assert image(kube) == "nginx:1.27"
    status = incident(kube)["status"]
    assert status["decision"]["outcome"] == "approved" and status["decision"]["identityVerified"] is False
    assert [r["action"]["kind"] for r in status["actions"]["results"]] == ["rollback"]
    assert shadows(kube) == []


def test_killed_between_dry_run_and_apply(lab: tuple[cluster.SimCluster, Kube], tmp_path: pathlib.Path) -> None:
    sim, kube = lab
    applies: list[str] = []
    first: list[Operator] = []

    def crash_on_first_apply(method: str, route: apiserver.Route, query: dict) -> apiserver.ApiError | None:
        real_apply = (
            method == "PATCH"
            and route.plural == "deployments"
            and route.namespace == NS
            and query.get("fieldManager") == "aegis"
            and query.get("dryRun") != "All"
        )
        if not real_apply:
            return None
        if not applies and first:  # the dry-run passed; the operator dies before its patch lands
            applies.append("crashed")
            os.kill(first[0].process.pid, signal.SIGKILL)
            return apiserver.ApiError(503, "ServiceUnavailable", "the operator died")
        applies.append("applied")
        return None

    assert sim.running is not None
    sim.running.api.faults.append(crash_on_first_apply)
    first.append(operator(sim, tmp_path, mode="auto"))
    break_storefront(sim)
    wait_for(lambda: applies, 120, what="the first apply attempt")
    first[0].process.wait(timeout=10)
    assert phase(kube) == "Applying" and image(kube) == "nginx:1.277"

    second = operator(sim, tmp_path, mode="auto")
    try:
        wait_for(lambda: phase(kube) == "Resolved", 120, what="the resumed apply to resolve the incident")
    finally:
        second.stop()
    assert applies == ["crashed", "applied"], "the plan was applied exactly once"
    assert image(kube) == "nginx:1.27"
    annotations = kube.apps.read_namespaced_deployment("web", NS).metadata.annotations
    assert annotations["aegis.dev/applied"].endswith("/1")
    assert shadows(kube) == []
