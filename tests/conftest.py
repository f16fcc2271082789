"""Session fixtures shared by every tier: the real Kubernetes control plane (started once per session).

``real_control_plane`` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
from the binaries ``aegis.sim.controlplane.find_assets`` finds (``AEGIS_KUBE_ASSETS``,
``KUBEBUILDER_ASSETS``, ``shared/k8s/bin``) and skips, saying why, when there are none.
Tests isolate themselves by namespace. Tests that need it carry the ``real`` marker.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from aegis.sim import controlplane

ROOT = pathlib.Path(__file__).resolve().parents[1]


def kubectl(plane: controlplane.ControlPlane, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(plane.kubeconfig), *args], capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out.stdout


# The tests that run every scenario at once on the emulator: they share a worker with the real tier, so that
# no two all-scenario demos ever load these 2 cores at the same time.
HEAVY = ("tests/e2e/test_scenarios.py", "tests/e2e/test_llm_demo.py")


def pytest_itemcollected(item: pytest.Item) -> None:
    """With pytest-xdist (`-n 2 --dist loadgroup`, the default in pyproject.toml) every real-tier test runs in one
    worker, so the session starts one control plane, and the heavy emulated demos beside it in the same worker;
    the other tests go by module (module fixtures run once)."""
    module = item.nodeid.split("::", 1)[0]
    group = "real-control-plane" if "real" in item.keywords or module in HEAVY else module
    item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if controlplane.find_assets() is not None:
        return
    reason = "no real control plane binaries (set AEGIS_KUBE_ASSETS or KUBEBUILDER_ASSETS): real tier skipped"
    if os.environ.get("AEGIS_REQUIRE_REAL") == "1":
        raise pytest.UsageError(reason + ", but AEGIS_REQUIRE_REAL=1")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def real_control_plane() -> Iterator[controlplane.ControlPlane]:
    """One real control plane for the whole session (about 10 s to start), with its audit log (what RBAC
    coverage counts) and ValidatingAdmissionPolicy on. Token users: ``alice`` (group ``oncall``) and ``bob``
    (group ``guests``, granted nothing)."""
    options = controlplane.ControlPlaneOptions(
        users={"alice": ["oncall"], "bob": ["guests"]}, audit=True, admission_policies=True
    )
    plane = controlplane.ControlPlane(options)
    plane.start()
    try:
        # As a user installs them: the Incident CRD and K8sGPT's Result CRD, from deploy/.
        for crd in ("deploy/aegis/crd-incident.yaml", "deploy/k8sgpt/crd-result.yaml"):
            kubectl(plane, "apply", "-f", str(ROOT / crd))
        kubectl(plane, "wait", "--for=condition=Established", "--timeout=60s", "crd/incidents.aegis.dev")
        kubectl(plane, "wait", "--for=condition=Established", "--timeout=60s", "crd/results.core.k8sgpt.ai")
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def real_node_side(real_control_plane: controlplane.ControlPlane) -> Iterator[object]:
    """The emulated node side (nodes, kubelet stand-in, volumes, K8sGPT analyzer) attached to the real control
    plane for one test module (a demo run in a subprocess attaches its own, so they never overlap)."""
    from aegis.sim import nodes

    with nodes.NodeSide(real_control_plane.kubeconfig, nodes.NodeSideOptions(speed=10)) as side:
        yield side


@dataclasses.dataclass
class AegisInstall:
    """``deploy/aegis`` applied to the real control plane as a user does, and a token of its ServiceAccount."""

    plane: controlplane.ControlPlane
    operator_kubeconfig: pathlib.Path  # logs in as system:serviceaccount:aegis-system:aegis
    policy: list[dict]  # the ValidatingAdmissionPolicy and its binding, as applied (v1beta1 on v1.28)


@pytest.fixture(scope="session")
def aegis_installed(real_control_plane: controlplane.ControlPlane) -> Iterator[AegisInstall]:
    """``kubectl apply --server-side -k deploy/aegis`` (the CRD, applied client-side at session start, is taken
    over), the admission policy of ``deploy/aegis/admission-policy`` as v1beta1 (v1.28 has no v1 yet), and a
    token for the operator's ServiceAccount from ``kubectl create token``."""
    import yaml

    kubectl(real_control_plane, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy/aegis"))
    text = (ROOT / "deploy/aegis/admission-policy/policy.yaml").read_text()
    policy = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in policy:
        doc["apiVersion"] = "admissionregistration.k8s.io/v1beta1"
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(real_control_plane.kubeconfig), "apply", "--server-side", "-f", "-"],
        input=yaml.safe_dump_all(policy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    token = kubectl(real_control_plane, "create", "token", "aegis", "-n", "aegis-system", "--duration=3h").strip()
    path = real_control_plane.dir / "aegis-operator.kubeconfig"
    yield AegisInstall(real_control_plane, real_control_plane.kubeconfig_with_token(token, path, user="aegis"), policy)
