"""Failover on the REAL control plane: two operator processes (the production entry point, `python -m kopf run -m
handlers`, leader election on, one SQLite file standing for a shared ReadWriteMany volume) and the emulated node
side. The leader is killed with SIGKILL while it verifies a fix; the standby takes over within the lease and a
retry period (measured), resumes the workflow from its checkpoint, and the incident ends Resolved exactly once:
one Incident, the fix applied in one request. Then the new leader is stopped gracefully and releases the Lease:
a new standby takes over within about a retry period (measured).

The scenario is ``examples/incidents/bad-image-tag`` in a namespace of its own (auto mode); the Lease lives in
another. Both, the shadows the killed leader left behind, and every process are removed even on failure.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from aegis.sim import controlplane
from tests import factories
from tests.integration.conftest import Kube, Operator, wait_for
from tests.kube_cli import approval_stamped, http_status, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.real]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples/incidents/bad-image-tag"
LEASE, RENEW_DEADLINE, RETRY = 6, 4, 1
SLACK = 4.0  # API latency and a loaded 2-core machine (the node side, two operators and the control plane)
IN_PROGRESS = ("Verifying",)  # killed while the leader rehearses the fix in its shadow namespaces


@pytest.fixture()
def lab(real_control_plane: controlplane.ControlPlane) -> Iterator[dict[str, Any]]:
    """A namespace for the scenario and one for the Lease; removed afterwards, with any shadow left behind."""
    suffix = secrets.token_hex(3)
    names = {"app": f"ha-storefront-{suffix}", "lease": f"ha-lease-{suffix}"}
    api = kubernetes.config.new_client_from_config(config_file=str(real_control_plane.kubeconfig))
    kube = Kube(api)
    before = set(shadows(kube))
    kube.namespace(names["lease"])
    try:
        yield {"plane": real_control_plane, "kube": kube, **names}
    finally:
        kill_all()  # before the clean-up: a live replica might write its configuration again
        with contextlib.suppress(kubernetes.client.ApiException):  # the webhook test's configuration
            kubernetes.client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(
                configuration(lab_names=names)
            )
        gone = [names["app"], names["lease"], *(set(shadows(kube)) - before)]
        for name in gone:
            with contextlib.suppress(kubernetes.client.ApiException):
                kube.core.delete_namespace(name)
        wait_for(lambda: not {n.metadata.name for n in kube.core.list_namespace().items} & set(gone), 120)
        api.close()


_STARTED: list[Operator] = []


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Whatever happens in a test, no operator process outlives it."""
    yield
    kill_all()


def kill_all() -> None:
    while _STARTED:
        op = _STARTED.pop()
        if op.process is not None and op.process.poll() is None:
            op.process.kill()
            op.process.wait(timeout=10)


def shadows(kube: Kube) -> list[str]:
    return [n.metadata.name for n in kube.core.list_namespace(label_selector="aegis.dev/shadow=true").items]


def replica(lab: dict[str, Any], work: pathlib.Path, name: str, **extra: str) -> Operator:
    (work / name).mkdir(parents=True, exist_ok=True)
    env = {
        "AEGIS_MODE": "auto",
        "AEGIS_WATCH_NAMESPACES": lab["app"],
        "AEGIS_SHADOW_STABILITY_SECONDS": "3",
        "AEGIS_SHADOW_TIMEOUT_SECONDS": "30",
        "AEGIS_CONFIRM_STABILITY_SECONDS": "6",
        "AEGIS_CONFIRM_TIMEOUT_SECONDS": "60",
        "AEGIS_STATE_DB": str(work / "shared" / "state.sqlite"),  # one file for both: a ReadWriteMany volume
        "AEGIS_METRICS_PORT": "0",  # two processes on one host
        "AEGIS_LEADER_ELECTION": "true",
        "AEGIS_LEADER_ELECTION_NAMESPACE": lab["lease"],
        "AEGIS_LEADER_LEASE_SECONDS": str(LEASE),
        "AEGIS_LEADER_RENEW_DEADLINE_SECONDS": str(RENEW_DEADLINE),
        "AEGIS_LEADER_RETRY_SECONDS": str(RETRY),
        "AEGIS_POD_NAME": name,
        **extra,
    }
    op = Operator(lab["plane"].kubeconfig, work / name, env=env)
    _STARTED.append(op)
    return op.start()


def lease(lab: dict[str, Any]) -> dict[str, Any]:
    api = kubernetes.client.CoordinationV1Api(lab["kube"].core.api_client)
    try:
        return api.read_namespaced_lease("aegis", lab["lease"]).to_dict()["spec"]
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def incidents(lab: dict[str, Any]) -> list[dict[str, Any]]:
    return lab["kube"].incidents(lab["app"])


def phase(lab: dict[str, Any]) -> str:
    items = incidents(lab)
    return ((items[0].get("status") or {}).get("phase") or "") if items else ""


def apply_scenario(lab: dict[str, Any], file: str) -> None:
    docs = [doc for doc in yaml.safe_load_all((SCENARIO / file).read_text()) if doc]
    for doc in docs:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = lab["app"]
        else:
            doc["metadata"]["namespace"] = lab["app"]
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(lab["plane"].kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def rollout(lab: dict[str, Any]) -> None:
    kubectl(lab["plane"].kubeconfig, "rollout", "status", "deployment/web", "-n", lab["app"], "--timeout=90s")


def test_the_standby_takes_over_from_a_killed_leader_and_the_incident_heals_once(
    lab: dict[str, Any], real_node_side: object, tmp_path: pathlib.Path
) -> None:
    kube, app = lab["kube"], lab["app"]
    a = replica(lab, tmp_path, "aegis-a")
    wait_for(lambda: lease(lab).get("holder_identity") == "aegis-a", 30, what="aegis-a to lead")
    b = replica(lab, tmp_path, "aegis-b")
    wait_for(lambda: "is held by aegis-a; aegis-b stands by" in b.log(), 30, what="aegis-b to stand by")
    processes = {"aegis-a": a, "aegis-b": b}

    apply_scenario(lab, "manifests.yaml")
    rollout(lab)
    apply_scenario(lab, "change.yaml")
    began = time.monotonic()
    try:
        wait_for(lambda: phase(lab) in IN_PROGRESS, 120, what=f"the incident to reach {IN_PROGRESS}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {incidents(lab)}\naegis-a:\n{a.log()[-3000:]}") from None
    # SIGKILL the leader of the moment (aegis-a, unless a slow API server cost it its Lease already).
    holder = lease(lab)["holder_identity"]
    victim, heir = processes[holder], processes["aegis-b" if holder == "aegis-a" else "aegis-a"]
    heir_name = "aegis-b" if holder == "aegis-a" else "aegis-a"
    killed_in = phase(lab)
    os.kill(victim.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.process.wait(timeout=10)
    transitions = lease(lab)["lease_transitions"]
    wait_for(lambda: lease(lab).get("holder_identity") == heir_name, LEASE + RETRY + SLACK + 20, 0.05, "the takeover")
    took = time.monotonic() - killed
    print(f"\nfailover: {holder} killed (SIGKILL) in phase {killed_in}; {heir_name} led {took:.1f}s later")
    assert took <= LEASE + RETRY + SLACK, f"the standby took {took:.1f}s (lease {LEASE}s, retry {RETRY}s)"
    assert lease(lab)["lease_transitions"] == transitions + 1
    wait_for(lambda: f"became the leader as {heir_name}" in heir.log(), 10, what="the takeover in the log")

    try:
        wait_for(lambda: phase(lab) == "Resolved", 240, what="the incident to be Resolved by the new leader")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {incidents(lab)}\n{heir_name}:\n{heir.log()[-4000:]}") from None
    print(f"resolved {time.monotonic() - began:.0f}s after the bad change")

    # Exactly once: one Incident, one applying request, the marker of one apply, the workload healed.
    items = incidents(lab)
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    status = items[0]["status"]
    assert [r["action"]["kind"] for r in status["actions"]["results"]] in (["rollback"], ["set-image"])
    assert [line["stage"] for line in status["timeline"]].count("apply") == 1, status["timeline"]
    deployment = kube.apps.read_namespaced_deployment("web", app)
    assert deployment.spec.template.spec.containers[0].image == "nginx:1.27"
    assert deployment.metadata.annotations["aegis.dev/applied"] == f"{items[0]['metadata']['uid']}/1"
    plane = lab["plane"]
    if getattr(plane, "audit_log", None) is not None and plane.audit_log.exists():
        applies = [
            e
            for e in plane.audit_events()
            if (e.get("objectRef") or {}).get("resource") == "deployments"
            and (e.get("objectRef") or {}).get("namespace") == app
            and e.get("verb") == "patch"
            and "fieldManager=aegis" in e.get("requestURI", "")
            and "dryRun" not in e.get("requestURI", "")
        ]
        assert len(applies) == 1, [e.get("requestURI") for e in applies]

    # A graceful stop releases the Lease: a fresh standby leads at its next try, not a lease later.
    c = replica(lab, tmp_path, "aegis-c")
    wait_for(lambda: f"is held by {heir_name}; aegis-c stands by" in c.log(), 30, what="aegis-c to stand by")
    assert heir.process is not None
    heir.process.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    wait_for(lambda: lease(lab).get("holder_identity") == "aegis-c", LEASE + SLACK + 20, 0.05, "aegis-c to lead")
    handed = time.monotonic() - stopped
    code = heir.process.wait(timeout=30)  # it exits by itself (a second SIGINT would not be graceful)
    heir.stop()  # closes its log
    assert code == 0, heir.log()[-3000:]
    print(f"graceful stop: aegis-c led {handed:.1f}s after {heir_name} got SIGINT (its runs end, then it releases)")
    assert f"released Lease {lab['lease']}/aegis" in heir.log()
    assert handed < LEASE, f"took {handed:.1f}s: as long as without a release"
    assert c.stop() == 0
    assert lease(lab)["holder_identity"] == ""  # released again
    for op in (heir, c):
        assert "Traceback" not in op.log(), op.log()[-3000:]


def configuration(lab_names: dict[str, Any]) -> str:
    return f"{lab_names['lease']}.aegis.dev"  # a MutatingWebhookConfiguration of this test's own


def hook(lab: dict[str, Any]) -> dict[str, Any]:
    api = kubernetes.client.AdmissionregistrationV1Api(lab["kube"].core.api_client)
    try:
        found = api.read_mutating_webhook_configuration(configuration(lab))
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    hooks = lab["kube"].core.api_client.sanitize_for_serialization(found).get("webhooks") or []
    return hooks[0] if hooks else {}


def served_certificate(port: int) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def trusted(lab: dict[str, Any], port: int) -> bool:
    """The configuration points at ``port`` and its CA bundle is the certificate served there."""
    client_config = hook(lab).get("clientConfig") or {}
    if f"127.0.0.1:{port}/" not in str(client_config.get("url")) or not listening(port):
        return False
    bundle = base64.b64decode(client_config.get("caBundle") or "").decode()
    return ssl.PEM_cert_to_DER_cert(bundle) == served_certificate(port)


def test_only_the_leader_serves_the_admission_webhook_and_its_successor_takes_it_over(
    lab: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    """Both replicas run Kopf's webhook machinery; only the leader makes a certificate, listens, and has its CA
    bundle written into the configuration — two would overwrite each other's and the API server would trust only
    one of them. Killed, its successor writes its own, and the API server calls the successor."""
    ports = {name: controlplane.free_port() for name in ("aegis-a", "aegis-b")}
    readiness = {name: f"http://127.0.0.1:{controlplane.free_port()}/readyz" for name in ports}

    def webhook_env(name: str) -> dict[str, str]:
        return {
            "AEGIS_ADMISSION_WEBHOOK": "true",
            "AEGIS_ADMISSION_ADDR": "127.0.0.1",
            "AEGIS_ADMISSION_HOST": "127.0.0.1",
            "AEGIS_ADMISSION_PORT": str(ports[name]),
            "AEGIS_ADMISSION_CONFIGURATION": configuration(lab),
            "AEGIS_WATCH_NAMESPACES": "none-watched",  # the Incident below is the test's, not a workflow's
            "AEGIS_METRICS_ADDR": "127.0.0.1",  # and the readiness probe deploy/aegis asks: ready = leading
            "AEGIS_METRICS_PORT": readiness[name].split(":")[2].split("/")[0],
        }

    def stamped() -> bool:
        return approval_stamped(lab["plane"].kubeconfig, lab["app"], "deployment-web")

    a = replica(lab, tmp_path, "aegis-a", **webhook_env("aegis-a"))
    wait_for(lambda: lease(lab).get("holder_identity") == "aegis-a", 30, what="aegis-a to lead")
    b = replica(lab, tmp_path, "aegis-b", **webhook_env("aegis-b"))
    wait_for(lambda: "is held by aegis-a; aegis-b stands by" in b.log(), 30, what="aegis-b to stand by")
    wait_for(lambda: trusted(lab, ports["aegis-a"]), 30, what="the configuration to name aegis-a's webhook")
    assert not listening(ports["aegis-b"]), "a standby serves the webhook"
    wait_for(lambda: http_status(readiness["aegis-b"]) == 503, 30, what="the standby to answer its readiness probe")
    assert http_status(readiness["aegis-a"]) == 200, "the leader is not ready"

    lab["kube"].namespace(lab["app"])
    body = factories.incident(lab["app"], "web")
    body["metadata"] = {"name": "deployment-web", "namespace": lab["app"], "labels": body["metadata"]["labels"]}
    body.pop("status", None)
    lab["kube"].custom.create_namespaced_custom_object("aegis.dev", "v1alpha1", lab["app"], "incidents", body)
    wait_for(lambda: stamped(), 30, what="kube-apiserver to call aegis-a")
    for _ in range(3):  # the standby never rewrites the configuration
        time.sleep(RETRY)
        assert trusted(lab, ports["aegis-a"]) and not listening(ports["aegis-b"])

    os.kill(a.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.process.wait(timeout=10)
    wait_for(lambda: trusted(lab, ports["aegis-b"]), LEASE + RETRY + SLACK + 20, 0.1, "aegis-b's webhook")
    moved = time.monotonic() - killed
    assert http_status(readiness["aegis-b"]) == 200, "the new leader is not ready"
    wait_for(lambda: stamped(), 30, what="kube-apiserver to call aegis-b")
    called = time.monotonic() - killed
    print(
        f"\nwebhook: aegis-b's certificate in the configuration {moved:.1f}s after aegis-a was killed; "
        f"the API server called aegis-b at {called:.1f}s"
    )
    assert b.stop() == 0
    assert "Traceback" not in b.log(), b.log()[-3000:]
