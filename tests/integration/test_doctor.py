"""``aegis doctor`` as a subprocess against the emulated Kubernetes API and a fake Ollama (real HTTP on both sides)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from aegis.sim import apiserver, server
from aegis.sim.ollama import FakeOllama

REPO = pathlib.Path(__file__).resolve().parents[2]


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def doctor(
    *args: str, env: dict[str, str] | None = None, home: pathlib.Path | None = None, output: str = "json"
) -> tuple[int, Any, str]:
    """Run ``aegis doctor``; returns (exit code, parsed JSON (or the text for -o table), stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_") and k != "KUBECONFIG"}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    if home is not None:
        base["HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "doctor", *args, "-o", output, "--timeout", "3"],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.returncode, (json.loads(proc.stdout) if output == "json" else proc.stdout), proc.stderr


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


@pytest.fixture()
def cluster(tmp_path: pathlib.Path) -> Iterator[server.EmulatedCluster]:
    with server.EmulatedCluster(tmp_path / "kubeconfig") as sim:
        yield sim


@pytest.fixture()
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=["llama3.2:latest"]) as fake:
        yield fake


def test_all_ok(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url})
    assert code == 0, report
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [
        "Settings",
        "Kubernetes",
        "CRD Incident",
        "CRD Result (K8sGPT)",
        "Ollama",
    ]
    assert all(c["ok"] is True for c in report["checks"]), report
    assert cluster.url in check(report, "Kubernetes")["detail"]
    assert report["llm"] == {"url": ollama.url, "model": "llama3.2", "mode": "fallback", "timeout_seconds": 60.0}


def test_table_output_is_human_readable(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    code, text, _ = doctor(
        "--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url}, output="table"
    )
    assert code == 0, text
    for word in ("Kubernetes", "CRD Incident", "Ollama", "✓", "all checks passed", "LLM: mode fallback"):
        assert word in text, text
    assert "✗" not in text


def test_model_not_pulled(cluster: server.EmulatedCluster) -> None:
    with FakeOllama(models=["mistral:latest"]) as fake:
        code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": fake.url})
    assert code == 1
    result = check(report, "Ollama")
    assert result["ok"] is False
    assert "ollama pull llama3.2" in result["fix"]
    assert "mistral:latest" in result["detail"]
    assert check(report, "Kubernetes")["ok"] is True


def test_tagged_model_names_match(cluster: server.EmulatedCluster) -> None:
    with FakeOllama(models=["llama3.2:3b", "mistral:latest"]) as fake:
        env = {"AEGIS_OLLAMA_URL": fake.url, "AEGIS_OLLAMA_MODEL": "mistral"}
        code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env=env)
        assert code == 0, report
        env["AEGIS_OLLAMA_MODEL"] = "llama3.2"  # means llama3.2:latest, which is not there
        code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env=env)
    assert code == 1
    assert "ollama pull llama3.2" in check(report, "Ollama")["fix"]


def test_ollama_down(cluster: server.EmulatedCluster) -> None:
    url = closed_port_url()
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": url})
    assert code == 1
    result = check(report, "Ollama")
    assert result["ok"] is False
    assert url in result["detail"]
    assert "ollama serve" in result["fix"] and "AEGIS_OLLAMA_URL" in result["fix"]


def test_not_an_ollama_server(cluster: server.EmulatedCluster) -> None:
    # The Kubernetes API answers /api/tags with JSON that is not Ollama's (no models list): said as such.
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": cluster.url})
    assert code == 1
    result = check(report, "Ollama")
    assert "did not answer Ollama's JSON" in result["detail"]
    assert "Ollama server" in result["fix"]
    # An HTTP error is said as such.
    code, report, _ = doctor(
        "--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": cluster.url + "/nothing-here"}
    )
    assert code == 1
    assert "HTTP 404" in check(report, "Ollama")["detail"]


def test_llm_off_skips_ollama(cluster: server.EmulatedCluster) -> None:
    env = {"AEGIS_OLLAMA_URL": closed_port_url(), "AEGIS_LLM_MODE": "off"}
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env=env)
    assert code == 0, report
    result = check(report, "Ollama")
    assert result["ok"] is None
    assert "AEGIS_LLM_MODE=off" in result["detail"]
    assert report["llm"]["mode"] == "off"


def test_incident_crd_missing(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition("incidents.aegis.dev")
    finally:
        client.close()
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url})
    assert code == 1
    result = check(report, "CRD Incident")
    assert result["ok"] is False
    assert "kubectl apply -f deploy/aegis/crd-incident.yaml" in result["fix"]
    assert (REPO / "deploy/aegis/crd-incident.yaml").is_file()
    assert check(report, "CRD Result (K8sGPT)")["ok"] is True


def test_result_crd_missing(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition("results.core.k8sgpt.ai")
    finally:
        client.close()
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url})
    assert code == 1
    result = check(report, "CRD Result (K8sGPT)")
    assert result["ok"] is False
    assert "deploy/k8sgpt/README.md" in result["fix"]


def test_crds_found_by_discovery_when_crds_are_forbidden(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    def forbid_crds(_method: str, route: apiserver.Route, _query: dict[str, str]) -> apiserver.ApiError | None:
        if route.plural == "customresourcedefinitions":
            return apiserver.ApiError(403, "Forbidden", "customresourcedefinitions is forbidden")
        return None

    assert cluster.api is not None
    cluster.api.faults.append(forbid_crds)
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url})
    assert code == 0, report
    assert "discovery" in check(report, "CRD Incident")["detail"]


def test_cluster_down(tmp_path: pathlib.Path, ollama: FakeOllama) -> None:
    url = closed_port_url()
    kubeconfig = tmp_path / "kubeconfig"
    server.write_kubeconfig(kubeconfig, url)
    code, report, _ = doctor("--kubeconfig", str(kubeconfig), env={"AEGIS_OLLAMA_URL": ollama.url})
    assert code == 1
    result = check(report, "Kubernetes")
    assert result["ok"] is False
    assert f"connection refused at {url}" in result["detail"]
    assert "kind get clusters" in result["fix"]
    assert check(report, "CRD Incident")["ok"] is None  # skipped, not a second failure
    assert check(report, "Ollama")["ok"] is True


def test_no_kubeconfig(tmp_path: pathlib.Path, ollama: FakeOllama) -> None:
    code, report, _ = doctor(env={"AEGIS_OLLAMA_URL": ollama.url}, home=tmp_path)
    assert code == 1
    result = check(report, "Kubernetes")
    assert "no kubeconfig found" in result["detail"]
    assert "KUBECONFIG" in result["fix"] and "--kubeconfig" in result["fix"]


def test_unknown_context(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    code, report, _ = doctor(
        "--kubeconfig", str(cluster.kubeconfig), "--context", "nope", env={"AEGIS_OLLAMA_URL": ollama.url}
    )
    assert code == 1
    assert "kubectl config get-contexts" in check(report, "Kubernetes")["fix"]


def test_invalid_setting(cluster: server.EmulatedCluster, ollama: FakeOllama) -> None:
    env = {"AEGIS_OLLAMA_URL": ollama.url, "AEGIS_MODE": "bogus"}
    code, report, _ = doctor("--kubeconfig", str(cluster.kubeconfig), env=env)
    assert code == 1
    result = check(report, "Settings")
    assert result["ok"] is False
    assert "AEGIS_MODE" in result["detail"]
    # The other checks still run, with the LLM settings read from the environment as it is.
    assert check(report, "Kubernetes")["ok"] is True
    assert check(report, "Ollama")["ok"] is True
