"""Each scenario, end to end: `aegis demo --incident DIR --json` (emulated cluster + the real operator)
checked against the scenario's own expected.yaml."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "examples" / "incidents").iterdir() if (p / "manifests.yaml").is_file())


def demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aegis.cli", "demo", "--json", "--approve", "auto", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def every_scenario() -> tuple[dict[str, dict], subprocess.CompletedProcess[str]]:
    """One `aegis demo --approve auto --json` over every scenario (they run side by side, as in the demo)."""
    args: list[str] = []
    for scenario in SCENARIOS:
        args += ["--incident", str(scenario)]
    proc = demo(*args, timeout=600)
    reports = {r["scenario"]: r for r in (json.loads(line) for line in proc.stdout.splitlines() if line.strip())}
    return reports, proc


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_meets_its_expectations(scenario: pathlib.Path, every_scenario: tuple[dict, Any]) -> None:
    expected = yaml.safe_load((scenario / "expected.yaml").read_text())
    reports, _ = every_scenario
    report = reports[scenario.name]
    assert report["met"], json.dumps(report, indent=2)
    assert report["detected"] is True
    assert report["incident"] == f"{expected['target']['kind'].lower()}-{expected['target']['name']}"
    assert report["diagnosis"]["category"] == expected["category"], report["diagnosis"]
    assert report["diagnosis"]["source"] == "rules" and report["diagnosis"]["confidence"] >= 0.7
    assert report["extra_incidents"] == [], "one problem, one incident"
    assert report["llm_calls"] == 0
    assert {"detect", "intake", "gather", "diagnose", "total"} <= set(report["timings"])
    if expected["outcome"] == "heal":
        assert report["phase"] == "Resolved", report["reason"]
        assert report["verification"]["baselineReproduced"] is True, report["verification"]
        assert report["verification"]["candidateHealthy"] is True
        assert report["decision"] == "approved" and report["applied"] is True and report["healed"] is True
        assert report["actions"][0]["kind"] in expected["actions"]
        assert {"propose", "verify", "gate", "apply", "confirm"} <= set(report["timings"])
    else:
        assert report["phase"] == "Escalated" and report["reason"], report
        assert report["applied"] is False and report["actions"] == [] and report["workload_changed"] is False


def test_the_demo_reports_every_scenario_and_summarises(every_scenario: tuple[dict, Any]) -> None:
    reports, proc = every_scenario
    assert proc.returncode == 0, proc.stderr
    assert sorted(reports) == sorted(p.name for p in SCENARIOS)
    assert f"{len(SCENARIOS)}/{len(SCENARIOS)} scenarios met their expected.yaml" in proc.stderr
    assert "diagnosing with rules only" in proc.stderr  # no Ollama on this machine, said in one line


def test_a_failing_candidate_makes_room_for_the_next(every_scenario: tuple[dict, Any]) -> None:
    """Doubling a 100Mi limit is not enough for a 300 MB worker: that plan fails in the shadow, the rollback wins."""
    report = every_scenario[0]["oom-doubling-not-enough"]
    assert report["attempts"] == [
        {"rank": 1, "actions": ["set-resources"], "passed": False},
        {"rank": 2, "actions": ["rollback"], "passed": True},
    ]
    assert report["phase"] == "Resolved" and [a["kind"] for a in report["actions"]] == ["rollback"]


def test_a_scenario_outside_the_repo_and_a_failing_expectation(tmp_path: pathlib.Path) -> None:
    scenario = tmp_path / "my-incident"
    scenario.mkdir()
    (scenario / "manifests.yaml").write_text(
        (ROOT / "examples/incidents/bad-image-tag/manifests.yaml")
        .read_text()
        .replace("storefront", "elsewhere")
        .replace("nginx:1.27", "nginx:9.9")
    )
    (scenario / "expected.yaml").write_text(
        "target: {kind: Deployment, name: web}\ncategory: oom-killed\nactions: [set-resources]\noutcome: heal\n"
    )
    proc = demo("--incident", str(scenario))
    report = json.loads(proc.stdout.strip().splitlines()[0])
    assert report["diagnosis"]["category"] == "image-pull"
    assert report["checks"]["category"] is False and report["met"] is False
    assert proc.returncode == 1


def test_denied_fixes_end_rejected_and_change_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "demo", "--json", "--approve", "deny"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(reports) == len(SCENARIOS)
    rejected = 0
    for report in reports:
        # Whatever happens, a denied or unverified fix never touches the workload.
        assert report["applied"] is False, report["scenario"]
        assert report["workload_changed"] is False, f"{report['scenario']}: the workload was changed"
        if report["expected"]["outcome"] == "heal" and report["phase"] == "Rejected":
            assert report["verification"]["passed"] is True  # verified, then a human said no
            assert report["decision"] == "rejected"
            rejected += 1
        else:
            # Escalation scenarios; or, on a loaded machine, a shadow run that could not prove a fix in time
            # (then nobody is even asked), or a report caught before the failure showed and the workload looked
            # healthy over every look (Resolved, nothing changed): each ends with its reason, nothing applied.
            assert report["phase"] in ("Escalated", "Resolved") and report["reason"], report["scenario"]
    heal = sum(1 for r in reports if r["expected"]["outcome"] == "heal")
    assert rejected >= heal - 2, f"only {rejected} of {heal} fixes reached the human who rejected them"
    assert proc.returncode == 1  # heal scenarios did not heal


def test_a_fix_that_passes_the_shadow_but_not_production_is_rolled_back() -> None:
    """The leaky worker's doubled limit survives the shadow window, then leaks past it in production."""
    proc = demo("--incident", str(ROOT / "tests/e2e/scenarios/leaky-worker"), "--timeout", "180", "--speed", "20")
    report = json.loads(proc.stdout.strip().splitlines()[0])
    assert report["verification"]["passed"] is True, report["verification"]
    assert report["phase"] == "RolledBack", report
    assert report["applied"] is True and report["healed"] is False
    assert "pre-image was restored" in report["reason"]
    assert report["workload_changed"] is False, "the exact pre-image is back"
