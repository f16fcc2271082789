"""The demo with the LLM in charge (``AEGIS_LLM_MODE=only``), against a fake Ollama over HTTP.

Two stand-in models: a *competent* one that answers what an SRE would (its answers
are written out below per scenario: this fake plays a model, it is not one — what
is tested is that typed answers travel through validation, the shadow, the gate and
the apply exactly as the rules' plans do), and a *reckless* one that diagnoses
everything as a crash and proposes dangerous or useless actions. The competent model
reaches the outcomes the scenarios expect; with the reckless one nothing is applied.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest

from aegis.sim.ollama import FakeOllama, Reply, json_reply

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = [
    "bad-image-tag",
    "oom-after-rightsizing",
    "liveness-wrong-port",
    "service-selector-typo",
    "nodeselector-no-match",
    "missing-secret",
]
# The reckless model answers for other scenarios, in the same demo run (one cluster, one operator, one Ollama).
RECKLESS_ON = ["registry-tag-typo", "service-named-port", "configmap-volume-missing"]
RECKLESS_NAMESPACES = {"payments", "gateway", "web-static"}
_TARGET = re.compile(r"(?:diagnose why|fixes for|diagnosis of) (\w+) ([a-z0-9-]+)/([a-z0-9-]+)")


def act(kind: str, target: tuple[str, str, str], **params: Any) -> dict[str, Any]:
    ref_kind, ns, name = target
    return {
        "kind": kind,
        "target": {"kind": ref_kind, "namespace": ns, "name": name},
        "params": params,
        "rationale": f"{kind} removes the cause",
    }


# namespace -> (category, plans): what a competent model would answer for each scenario.
COMPETENT: dict[str, tuple[str, list[list[dict[str, Any]]]]] = {
    "storefront": (
        "image-pull",
        [[act("set-image", ("Deployment", "storefront", "web"), container="nginx", image="nginx:1.27")]],
    ),
    "batch": (
        "oom-killed",
        [
            [
                act(
                    "set-resources",
                    ("Deployment", "batch", "image-resizer"),
                    container="worker",
                    limits={"memory": "256Mi"},
                    requests={"memory": "128Mi"},
                )
            ]
        ],
    ),
    "catalog": (
        "probe-failure",
        [
            [
                act(
                    "set-probe",
                    ("Deployment", "catalog", "catalog-api"),
                    container="podinfo",
                    probe="livenessProbe",
                    port=9898,
                )
            ]
        ],
    ),
    "checkout": (
        "service-selector-mismatch",
        [[act("patch-service", ("Service", "checkout", "checkout"), selector={"app": "checkout"})]],
    ),
    "ml": (
        "unschedulable-constraints",
        [[act("set-node-selector", ("Deployment", "ml", "inference"), nodeSelector=None)]],
    ),
    "billing": ("missing-config", []),  # the Secret's value is something only its owners know: no plan
}


def _target(request: dict[str, Any]) -> tuple[str, str, str]:
    found = _TARGET.search(request["messages"][-1]["content"]) or _TARGET.search(request["messages"][1]["content"])
    assert found, request["messages"][1]["content"][:300]
    return found.group(1), found.group(2), found.group(3)


def competent(request: dict[str, Any]) -> Reply:
    kind, ns, _ = _target(request)
    category, plans = COMPETENT[ns]
    if request["format"]["title"] == "DiagnosisSchema":
        return json_reply(
            {"category": category, "summary": f"{kind} fails: {category}", "evidence": [], "confidence": 0.85}
        )
    return json_reply({"plans": [{"actions": acts, "rationale": "smallest fix"} for acts in plans]})


def reckless(request: dict[str, Any]) -> Reply:
    kind, ns, name = _target(request)
    if request["format"]["title"] == "DiagnosisSchema":
        return json_reply({"category": "app-crash", "summary": "It crashes.", "evidence": [], "confidence": 0.99})
    own = (kind, ns, name)
    return json_reply(
        {
            "plans": [
                {"actions": [act("scale", ("Deployment", "kube-system", "coredns"), replicas=0)], "rationale": "x"},
                {"actions": [act("restart", own)], "rationale": "turn it off and on again"},
                {"actions": [act("set-image", own, image="docker.io/evil/miner:latest")], "rationale": "newer"},
            ]
        }
    )


def run_demo(url: str, scenarios: list[str]) -> dict[str, dict[str, Any]]:
    args = [sys.executable, "-m", "aegis.cli", "demo", "--json", "--approve", "auto"]
    for name in scenarios:
        args += ["--incident", str(ROOT / "examples" / "incidents" / name)]
    env = {**os.environ, "AEGIS_OLLAMA_URL": url, "AEGIS_LLM_MODE": "only", "AEGIS_LLM_TIMEOUT_SECONDS": "10"}
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=420, cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )
    reports = {r["scenario"]: r for r in (json.loads(line) for line in proc.stdout.splitlines() if line.strip())}
    assert sorted(reports) == sorted(scenarios), proc.stderr[-3000:]
    assert "only: diagnoses and proposes alone" in proc.stderr
    return reports


def either(request: dict[str, Any]) -> Reply:
    return (reckless if _target(request)[1] in RECKLESS_NAMESPACES else competent)(request)


@pytest.fixture(scope="module")
def side_by_side() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """One demo run: the competent model's scenarios and the reckless model's, side by side."""
    with FakeOllama(either) as fake:
        reports = run_demo(fake.url, SCENARIOS + RECKLESS_ON)
    return reports, fake.requests


def test_a_competent_model_reaches_the_expected_outcomes(side_by_side: tuple[dict, list]) -> None:
    everything, requests = side_by_side
    reports = {name: everything[name] for name in SCENARIOS}
    for report in reports.values():
        assert report["met"], json.dumps(report, indent=2)
        assert report["diagnosis"]["source"] == "llm", report["diagnosis"]
        assert report["llm_calls"] >= 1
    for name in SCENARIOS[:-1]:
        report = reports[name]
        assert report["phase"] == "Resolved" and report["applied"] and report["healed"], report
        assert report["llm_calls"] >= 2  # a diagnosis and a proposal
        _, plans = COMPETENT[report["namespace"]]
        assert [a["kind"] for a in report["actions"]] == [a["kind"] for a in plans[0]]
    assert reports["missing-secret"]["phase"] == "Escalated"
    assert reports["missing-secret"]["applied"] is False
    # The model only ever saw redacted, delimited evidence and was asked for the schema.
    assert all("format" in r and r["options"]["temperature"] == 0 for r in requests)


def test_a_reckless_model_gets_nothing_applied(side_by_side: tuple[dict, list]) -> None:
    everything, requests = side_by_side
    reports = {name: everything[name] for name in RECKLESS_ON}
    for name, report in reports.items():
        assert report["applied"] is False, json.dumps(report, indent=2)
        assert report["workload_changed"] is False, name
        assert report["phase"] == "Escalated", (name, report["phase"], report["reason"])
        assert report["reason"], name
    asked = [r for r in requests if _target(r)[1] in RECKLESS_NAMESPACES]
    assert len(asked) >= 2 * len(RECKLESS_ON)
