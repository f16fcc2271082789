"""Installed and run as users do, on the real control plane: `kubectl apply --server-side -k deploy/aegis`, then the
operator started with exactly the configuration that Deployment gives its pod, handling a scenario end to end.

What a kubelet would do for the pod is done here by hand, from the objects as the API server stored them: the
container's args (`aegis run …`), its environment (the `aegis-settings` ConfigMap through `envFrom`, the downward
API fields), the ServiceAccount's token (`kubectl create token`), and the state volume (its mount path mapped to a
folder). Four things cannot hold outside a cluster, and only these are changed: the webhook is reached by URL on
loopback (a Service cannot route to a process on this machine), the probe and metrics ports are free ports on
127.0.0.1, and the time windows are shortened (the emulated node side runs ten times faster than real time).
The liveness and readiness probes the Deployment declares are asked as a kubelet would ask them.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from aegis import config
from aegis.sim import controlplane
from tests.kube_cli import get_json, http_status, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.real]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples" / "incidents" / "bad-image-tag"
NAMESPACE = "storefront"


class Pod:
    """The Deployment's pod, run as a local process the way its spec says."""

    def __init__(self, installed: Any, workdir: pathlib.Path) -> None:
        admin = installed.plane.kubeconfig
        deployment = get_json(admin, "deployment", "aegis", "-n", "aegis-system")
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "aegis"
        (container,) = spec["containers"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            name = source["configMapRef"]["name"]
            env.update(get_json(admin, "configmap", name, "-n", "aegis-system")["data"])
        fields = {"metadata.name": "aegis-7d9f-install", "metadata.namespace": deployment["metadata"]["namespace"]}
        for var in container.get("env") or []:
            env[var["name"]] = var["value"] if "value" in var else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        # The state volume: its mount path is a folder here.
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "state"]
        assert env["AEGIS_STATE_DB"].startswith(mount["mountPath"] + "/"), env["AEGIS_STATE_DB"]
        self.volume = workdir / "state-volume"
        self.volume.mkdir()
        env["AEGIS_STATE_DB"] = str(self.volume) + env["AEGIS_STATE_DB"][len(mount["mountPath"]) :]
        self.settings_env = dict(env)
        # Outside a cluster: the webhook by URL on loopback, free local ports, shorter windows.
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        local = {name: controlplane.free_port() for name in ports}
        env.update(
            AEGIS_ADMISSION_SERVICE="",
            AEGIS_ADMISSION_HOST="127.0.0.1",
            AEGIS_ADMISSION_ADDR="127.0.0.1",
            AEGIS_ADMISSION_PORT=str(local["webhook"]),
            AEGIS_METRICS_ADDR="127.0.0.1",
            AEGIS_METRICS_PORT=str(local["metrics"]),
            AEGIS_SETTLE_SECONDS="1",
            AEGIS_SHADOW_STABILITY_SECONDS="3",
            AEGIS_CONFIRM_STABILITY_SECONDS="6",
            AEGIS_CONFIRM_TIMEOUT_SECONDS="60",
        )
        assert ports["webhook"] == int(self.settings_env["AEGIS_ADMISSION_PORT"]), "the webhook port is the pod's"
        liveness = rf"\g<1>127.0.0.1:{local['health']}"
        args = [re.sub(r"^(--liveness=http://)[^/]+", liveness, arg) for arg in container["args"]]
        self.probes = {
            kind: f"http://127.0.0.1:{local[container[kind]['httpGet']['port']]}{container[kind]['httpGet']['path']}"
            for kind in ("livenessProbe", "readinessProbe")
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
        base["KUBECONFIG"] = str(installed.operator_kubeconfig)  # in a pod: the mounted ServiceAccount token
        self.log = workdir / "operator.log"
        with self.log.open("wb") as log:
            # The image's entrypoint is `aegis`.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aegis.cli", *args],
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def pod(aegis_installed: Any, real_node_side: Any) -> Iterator[Pod]:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="aegis-install-"))
    the_pod = Pod(aegis_installed, workdir)
    try:
        yield the_pod
    finally:
        the_pod.stop()
        kubectl(aegis_installed.plane.kubeconfig, "delete", "namespace", NAMESPACE, "--ignore-not-found", check=False)


def wait_for(what: str, check: Any, pod: Pod, limit: float = 120) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert pod.process.poll() is None, f"the operator exited ({pod.process.returncode}):\n{pod.tail()}"
        time.sleep(0.3)
    raise AssertionError(f"{what} within {limit:.0f}s\n{pod.tail()}")


def test_the_kustomization_is_server_side_applied(aegis_installed: Any) -> None:
    admin = aegis_installed.plane.kubeconfig
    rendered = [d for d in yaml.safe_load_all(kubectl(admin, "kustomize", str(ROOT / "deploy/aegis")).stdout) if d]
    stored = get_json(admin, "-k", str(ROOT / "deploy/aegis"), "--show-managed-fields")["items"]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in stored
    )
    for obj in stored:
        applied = [m for m in obj["metadata"].get("managedFields") or [] if m.get("operation") == "Apply"]
        assert applied, f"{obj['kind']} {obj['metadata']['name']} was not server-side applied"


def test_the_deployment_configuration_runs_a_scenario_end_to_end(aegis_installed: Any, pod: Pod) -> None:
    admin = aegis_installed.plane.kubeconfig
    # Probes, as a kubelet asks them: alive (Kopf's), and ready once it leads.
    wait_for("the liveness probe answering 200", lambda: http_status(pod.probes["livenessProbe"]) == 200, pod)
    wait_for("the readiness probe answering 200", lambda: http_status(pod.probes["readinessProbe"]) == 200, pod)
    lease = get_json(admin, "lease", "aegis", "-n", "aegis-system")
    assert lease["spec"]["holderIdentity"].startswith("aegis-7d9f-install"), lease["spec"]
    # The scenario, as a user meets it: a healthy release, then the bad change.
    kubectl(admin, "apply", "-f", str(SCENARIO / "manifests.yaml"))
    kubectl(admin, "rollout", "status", "deployment/web", "-n", NAMESPACE, "--timeout=90s")
    kubectl(admin, "apply", "-f", str(SCENARIO / "change.yaml"))

    def asking() -> dict[str, Any] | None:
        items = get_json(admin, "incidents.aegis.dev", "-n", NAMESPACE)["items"]
        waiting = [i for i in items if (i.get("status") or {}).get("phase") == "AwaitingApproval"]
        return waiting[0] if waiting else None

    incident = wait_for("a verified fix waiting for approval (propose mode, from the ConfigMap)", asking, pod, 180)
    name = incident["metadata"]["name"]
    assert incident["status"]["verification"]["passed"] is True
    # A human approves, with the CLI, as themselves (the admin token here).
    approve = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "approve", name, "-n", NAMESPACE, "--kubeconfig", str(admin)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approve.returncode == 0, approve.stderr

    def ended() -> dict[str, Any] | None:
        live = get_json(admin, "incident.aegis.dev", name, "-n", NAMESPACE)
        return live if (live.get("status") or {}).get("phase") in ("Resolved", "RolledBack", "Failed") else None

    final = wait_for("the incident's end", ended, pod, 180)
    assert final["status"]["phase"] == "Resolved", final["status"]
    approval = final["spec"]["approval"]
    assert approval["approvedBy"] == controlplane.ADMIN_USER and approval["identity"] == "admission", approval
    kubectl(admin, "rollout", "status", "deployment/web", "-n", NAMESPACE, "--timeout=60s")
    assert len(get_json(admin, "incidents.aegis.dev", "-n", NAMESPACE)["items"]) == 1
    # Its state is on the volume, and the metrics endpoint counts what it did.
    assert pathlib.Path(pod.settings_env["AEGIS_STATE_DB"]).is_file()
    metrics = urllib.request.urlopen(pod.probes["readinessProbe"].rsplit("/", 1)[0] + "/metrics", timeout=5).read()
    assert b"aegis_applies_total" in metrics


def test_it_opens_no_incidents_about_itself(aegis_installed: Any, pod: Pod) -> None:
    """Its own pod cannot start here (no such image on the emulated nodes) and its webhook Service has no
    endpoints: K8sGPT's analyzer reports both, and nothing comes of it."""
    admin = aegis_installed.plane.kubeconfig

    def reported() -> list[dict[str, Any]]:
        items = get_json(admin, "results.core.k8sgpt.ai", "-A")["items"]
        return [r for r in items if str((r.get("spec") or {}).get("name", "")).startswith("aegis-system/")]

    about_itself = wait_for("K8sGPT reporting something in aegis-system", reported, pod, 120)
    kinds = {r["spec"]["kind"] for r in about_itself}
    assert "Service" in kinds, kinds
    seen = "namespace aegis-system is not watched by AEGIS"
    wait_for("the operator ignoring those Results", lambda: seen in pod.log.read_text(errors="replace"), pod, 60)
    assert get_json(admin, "incidents.aegis.dev", "-n", "aegis-system")["items"] == []
