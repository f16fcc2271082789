"""The demo on the real control plane: `aegis demo --kubeconfig <real> --sim-nodes`, every public scenario.

The real kube-apiserver, kube-controller-manager and kube-scheduler (v1.28.4) decide what Kubernetes does;
the emulated node side (nodes, kubelet stand-in, volumes, K8sGPT analyzer) is attached by the demo itself.
With `--approve auto` every scenario meets its expected.yaml; with `--approve deny` nothing is applied and
every workload is unchanged. The scenario namespaces are removed at the end of each run.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from aegis.sim import controlplane

pytestmark = [pytest.mark.e2e, pytest.mark.real]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "examples" / "incidents").iterdir() if (p / "manifests.yaml").is_file())


def demo(plane: controlplane.ControlPlane, approve: str, timeout: float = 600) -> tuple[dict[str, dict], Any]:
    args = [sys.executable, "-m", "aegis.cli", "demo", "--json", "--approve", approve]
    args += ["--kubeconfig", str(plane.kubeconfig), "--sim-nodes"]
    for scenario in SCENARIOS:
        args += ["--incident", str(scenario)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    reports = {r["scenario"]: r for r in (json.loads(line) for line in proc.stdout.splitlines() if line.strip())}
    return reports, proc


@pytest.fixture(scope="module")
def approved(real_control_plane: controlplane.ControlPlane) -> tuple[dict[str, dict], Any]:
    return demo(real_control_plane, "auto")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_meets_its_expectations_on_the_real_control_plane(
    scenario: pathlib.Path, approved: tuple[dict[str, dict], Any]
) -> None:
    expected = yaml.safe_load((scenario / "expected.yaml").read_text())
    reports, proc = approved
    assert scenario.name in reports, proc.stderr[-3000:]
    report = reports[scenario.name]
    assert report["met"], json.dumps(report, indent=2)
    assert report["diagnosis"]["category"] == expected["category"], report["diagnosis"]
    assert report["extra_incidents"] == [], "one problem, one incident"
    if expected["outcome"] == "heal":
        assert report["phase"] == "Resolved", report["reason"]
        assert report["verification"]["baselineReproduced"] is True, report["verification"]
        assert report["applied"] is True and report["healed"] is True
    else:
        assert report["phase"] == "Escalated" and report["applied"] is False
        assert report["workload_changed"] is False


def test_the_real_demo_summarises_and_cleans_up(
    real_control_plane: controlplane.ControlPlane, approved: tuple[dict[str, dict], Any]
) -> None:
    reports, proc = approved
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(SCENARIOS)}/{len(SCENARIOS)} scenarios met their expected.yaml" in proc.stderr
    namespaces = subprocess.run(
        ["kubectl", "--kubeconfig", str(real_control_plane.kubeconfig), "get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    left = {f"namespace/{r['namespace']}" for r in reports.values()} & set(namespaces)
    assert not left, f"scenario namespaces left behind: {left}"
    assert not [n for n in namespaces if n.startswith("namespace/aegis-shadow-")], namespaces


def test_denied_fixes_change_nothing_on_the_real_control_plane(
    real_control_plane: controlplane.ControlPlane, approved: tuple[dict[str, dict], Any]
) -> None:
    reports, proc = demo(real_control_plane, "deny")
    assert sorted(reports) == sorted(p.name for p in SCENARIOS), proc.stderr[-3000:]
    rejected = 0
    for report in reports.values():
        assert report["applied"] is False, report["scenario"]
        assert report["workload_changed"] is False, f"{report['scenario']}: the workload was changed"
        if report["expected"]["outcome"] == "heal" and report["phase"] == "Rejected":
            assert report["verification"]["passed"] is True and report["decision"] == "rejected"
            rejected += 1
        else:
            assert report["phase"] in ("Escalated", "Resolved") and report["reason"], report["scenario"]
    heal = sum(1 for r in reports.values() if r["expected"]["outcome"] == "heal")
    assert rejected >= heal - 2, f"only {rejected} of {heal} fixes reached the human who rejected them"
    assert proc.returncode == 1
