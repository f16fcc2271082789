"""The operator is killed mid-incident — while waiting for approval, and between dry-run and apply — and a
new one finishes the job: every plan applied exactly once, no shadow namespace left behind.

Each test runs twice: on the emulated cluster, and on the real control plane (with the emulated node side
attached, and a fault-injecting proxy in front of the real API server where a test needs to stop a request)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from aegis.sim import apiserver, cluster, proxy
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


@dataclasses.dataclass
class Lab:
    """A cluster for one test: the kubeconfig the operator and kubectl use, a client, and the request faults."""

    kubeconfig: pathlib.Path
    kube: Kube
    faults: list[Any]


@pytest.fixture(params=["emulated", pytest.param("real", marks=pytest.mark.real)])
def lab(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Lab]:
    if request.param == "emulated":
        with cluster.SimCluster(tmp_path / "kubeconfig", cluster.ClusterOptions(speed=10)) as sim:
            api = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
            assert sim.running is not None
            yield Lab(sim.kubeconfig, Kube(api), sim.running.api.faults)
            api.close()
        return
    plane = request.getfixturevalue("real_control_plane")
    request.getfixturevalue("real_node_side")
    with proxy.FaultProxy(plane.kubeconfig) as front:
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        try:
            yield Lab(front.kubeconfig(tmp_path / "kubeconfig"), Kube(api), front.faults)
        finally:
            remove_namespaces(Kube(api), [NS, *shadows(Kube(api))])
            api.close()


def remove_namespaces(kube: Kube, names: list[str]) -> None:
    """On the shared real control plane a test leaves nothing behind for the next one."""
    for name in names:
        with contextlib.suppress(kubernetes.client.ApiException):
            kube.core.delete_namespace(name)

    def gone() -> bool:
        left = {n.metadata.name for n in kube.core.list_namespace().items}
        return not left & set(names)

    wait_for(gone, 120, what=f"namespaces {names} to be removed")


def kubectl(lab: Lab, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(lab.kubeconfig), *args], capture_output=True, text=True, timeout=60
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


def operator(lab: Lab, tmp_path: pathlib.Path, mode: str = "propose") -> Operator:
    op = Operator(lab.kubeconfig, tmp_path, env={**FAST, "AEGIS_MODE": mode})
    _STARTED.append(op)
    return op.start()


def break_storefront(lab: Lab) -> None:
    kubectl(lab, "apply", "-f", str(SCENARIO / "manifests.yaml"))
    kubectl(lab, "rollout", "status", "deployment/web", "-n", NS, "--timeout=60s")
    kubectl(lab, "apply", "-f", str(SCENARIO / "change.yaml"))


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


def test_killed_while_waiting_for_approval(lab: Lab, tmp_path: pathlib.Path) -> None:
    kube = lab.kube
    first = operator(lab, tmp_path)
    break_storefront(lab)
    wait_phase(kube, first, "AwaitingApproval", 90)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert image(kube) == "nginx:1.277"
    wait_for(lambda: shadows(kube) == [], 30, what="the shadow namespaces to finish terminating")

    second = operator(lab, tmp_path)
    try:
        kubectl(
            lab,
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
    # No shadow namespace is left behind (a real server finishes deleting one asynchronously: its pods first).
    wait_for(lambda: shadows(kube) == [], 60, what="every shadow namespace to be gone")


def test_killed_between_dry_run_and_apply(lab: Lab, tmp_path: pathlib.Path) -> None:
    kube = lab.kube
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

    lab.faults.append(crash_on_first_apply)
    first.append(operator(lab, tmp_path, mode="auto"))
    break_storefront(lab)
    wait_for(lambda: applies, 120, what="the first apply attempt")
    first[0].process.wait(timeout=10)
    assert phase(kube) == "Applying" and image(kube) == "nginx:1.277"

    second = operator(lab, tmp_path, mode="auto")
    try:
        wait_for(lambda: phase(kube) == "Resolved", 120, what="the resumed apply to resolve the incident")
    finally:
        second.stop()
    assert applies == ["crashed", "applied"], "the plan was applied exactly once"
    assert image(kube) == "nginx:1.27"
    annotations = kube.apps.read_namespaced_deployment("web", NS).metadata.annotations
    assert annotations["aegis.dev/applied"].endswith("/1")
    # No shadow namespace is left behind (a real server finishes deleting one asynchronously: its pods first).
    wait_for(lambda: shadows(kube) == [], 60, what="every shadow namespace to be gone")
