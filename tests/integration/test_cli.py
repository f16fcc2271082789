"""`aegis incidents / show / approve / reject` as a user runs them: the real console script in a subprocess, the
real `kubernetes` client, real HTTP against the emulated API (the Incident CRD installed as in a cluster)."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from typer.testing import CliRunner

from aegis.sim import server
from tests import factories
from tests.integration.conftest import Kube

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "aegis.dev", "v1alpha1", "incidents"


class Lab:
    """The emulated API with a broken Deployment and Incidents in several phases."""

    def __init__(self, sim: server.EmulatedCluster, kube: Kube) -> None:
        self.sim, self.kube = sim, kube
        self.kubeconfig = sim.kubeconfig

    def incident(self, ns: str, name: str) -> dict[str, Any]:
        return self.kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an Incident as the operator does: the object, then its status through /status."""
        status = body.pop("status")
        meta = body["metadata"]
        body["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels")}
        self.kube.namespace(meta["namespace"])
        self.kube.custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, body)
        return self.kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    kubeconfig = tmp_path_factory.mktemp("cli") / "kubeconfig"
    with server.EmulatedCluster(kubeconfig) as sim:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        kube = Kube(api)
        deploy = factories.deployment("storefront", "web", "nginx:1.277", labels={"app.kubernetes.io/name": "web"})
        deploy["spec"]["template"]["spec"]["containers"][0]["name"] = "nginx"
        kube.create(deploy)
        lab = Lab(sim, kube)
        lab.add(factories.incident("storefront", "web"))
        lab.add(factories.incident("storefront", "checkout"))
        lab.add(factories.incident("storefront", "search"))
        lab.add(factories.incident("storefront", "payments"))
        lab.add(factories.incident("storefront", "api", phase="Resolved"))
        lab.add(factories.incident("lab", "cart", phase="Diagnosed"))
        yield lab
        api.close()


def aegis(*args: str, kubeconfig: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `aegis` command as a user runs it (no KUBECONFIG in the environment unless given)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(pathlib.Path(kubeconfig or "/nonexistent").parent)  # no ~/.kube/config of the machine
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run(
        [sys.executable, "-m", "aegis.cli", *args, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- listing -------------------------------------------------------------------------------------


def test_incidents_table_across_namespaces(lab: Lab) -> None:
    proc = aegis("incidents", "-A", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TARGET", "PHASE", "CATEGORY", "WAITING", "AGE"]
    # WAITING: the gate's "waiting for approval" line of the fixture is from 2026-11-21 10:00:04.
    assert re.search(
        r"^storefront\s+deployment-web\s+Deployment/web\s+AwaitingApproval\s+image-pull\s+\S+\s+\S+\s*$",
        proc.stdout,
        re.M,
    )
    assert re.search(
        r"^storefront\s+deployment-api\s+Deployment/api\s+Resolved\s+image-pull\s+-\s+\S+\s*$", proc.stdout, re.M
    )
    assert re.search(
        r"^lab\s+deployment-cart\s+Deployment/cart\s+Diagnosed\s+image-pull\s+-\s+\S+\s*$", proc.stdout, re.M
    )
    assert len(lines) == 1 + 6


def test_incidents_in_one_namespace_and_the_contexts_default(lab: Lab, tmp_path: pathlib.Path) -> None:
    proc = aegis("incidents", "-n", "lab", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["NAME", "TARGET", "PHASE", "CATEGORY", "WAITING", "AGE"]
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["deployment-cart"]

    # No -n: the kubeconfig context's namespace ("default" when it names none).
    config = yaml.safe_load(lab.kubeconfig.read_text())
    context = config["contexts"][0]
    config["contexts"] = [
        {"name": "lab", "context": {**context["context"], "namespace": "lab"}},
        {"name": "shop", "context": {**context["context"], "namespace": "storefront"}},
        {"name": "plain", "context": dict(context["context"])},
    ]
    config["current-context"] = "lab"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    proc = aegis("incidents", kubeconfig=kubeconfig)
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["deployment-cart"], proc.stderr
    proc = aegis("incidents", "--context", "shop", kubeconfig=kubeconfig)
    assert "deployment-web" in proc.stdout and "deployment-cart" not in proc.stdout, proc.stderr
    proc = aegis("incidents", "--context", "plain", kubeconfig=kubeconfig)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout
    assert "No incidents found in namespace default." in proc.stderr


def test_incidents_as_json_and_yaml(lab: Lab) -> None:
    proc = aegis("incidents", "-A", "-o", "json", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert listed["kind"] == "List"
    names = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]}
    assert ("storefront", "deployment-web") in names and ("lab", "deployment-cart") in names
    web = next(i for i in listed["items"] if i["metadata"]["name"] == "deployment-web")
    assert web["status"]["phase"] == "AwaitingApproval" and web["status"]["diagnosis"]["category"] == "image-pull"

    proc = aegis("incidents", "-n", "lab", "-o", "yaml", kubeconfig=lab.kubeconfig)
    assert [i["metadata"]["name"] for i in yaml.safe_load(proc.stdout)["items"]] == ["deployment-cart"]
    assert aegis("incidents", "-o", "wide", kubeconfig=lab.kubeconfig).returncode == 2


# --- the review screen ---------------------------------------------------------------------------


def test_show_prints_the_review_screen(lab: Lab) -> None:
    proc = aegis("show", "deployment-web", "-n", "storefront", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Incident storefront/deployment-web" in out
    assert "phase: AwaitingApproval — a verified fix is waiting for a human's decision" in out
    assert "waiting for a decision since: 2026-11-21 10:00:04Z" in out
    # Diagnosis with its evidence.
    assert "category: image-pull (confidence 0.95, from rules: image-pull)" in out
    assert "image 'nginx:1.277' cannot be pulled" in out
    assert '- pod web-7b9c6d5f4-x8k2p container nginx: ImagePullBackOff: Back-off pulling image "nginx:1.277"' in out
    # The fix as a unified diff of the live Deployment.
    assert re.search(r"^\s+--- Deployment/web \(live\)$", out, re.M)
    assert re.search(r"^\s+\+\+\+ Deployment/web \(with the fix\)$", out, re.M)
    assert re.search(r"^\s+-      - image: nginx:1\.277$", out, re.M)
    assert re.search(r"^\s+\+      - image: nginx:1\.27$", out, re.M)
    # Shadow verification, policy, timeline, and the commands.
    assert "baseline reproduced the failure: yes" in out
    assert "candidate healthy over the stability window: yes" in out
    assert "verdict: ask — a human decides" in out
    assert "why: namespace storefront is in propose mode: a human decides" in out
    assert re.search(r"10:00:04\s+verify\s+plan #1 \(set-image\) passed in the shadow", out)
    assert "aegis approve deployment-web -n storefront" in out
    assert 'aegis reject deployment-web -n storefront --reason "<why>"' in out

    proc = aegis("show", "deployment-web", "-n", "storefront", "-o", "json", kubeconfig=lab.kubeconfig)
    assert json.loads(proc.stdout)["spec"]["target"]["name"] == "web"


def test_show_an_applied_fix_without_its_workload(lab: Lab) -> None:
    """Deployment api does not exist here: the review diffs the recorded pre-image against the patch."""
    proc = aegis("show", "deployment-api", "-n", "storefront", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    assert "the live object was not available" in proc.stdout
    assert re.search(r"^\s+-      - image: nginx:1\.277$", proc.stdout, re.M)
    assert "healed: yes" in proc.stdout
    assert "approved by jane@example.com (identity verified)" in proc.stdout


def test_unknown_incident(lab: Lab) -> None:
    for command in ("show", "approve"):
        proc = aegis(command, "deployment-nope", "-n", "storefront", kubeconfig=lab.kubeconfig)
        assert one_line_error(proc) == "no Incident deployment-nope in namespace storefront"


# --- deciding ------------------------------------------------------------------------------------


def test_approve_writes_the_decision(lab: Lab) -> None:
    proc = aegis(
        "approve", "deployment-checkout", "-n", "storefront", "--reason", "tag typo", kubeconfig=lab.kubeconfig
    )
    assert proc.returncode == 0, proc.stderr
    assert "Approved storefront/deployment-checkout" in proc.stdout
    assert "identity: recorded by the API server (or 'unverified' where no admission webhook runs)" in proc.stdout
    assert lab.incident("storefront", "deployment-checkout")["spec"]["approval"] == {
        "decision": "Approved",
        "reason": "tag typo",
    }
    # Asking again is harmless; changing the answer is not possible.
    assert aegis("approve", "deployment-checkout", "-n", "storefront", kubeconfig=lab.kubeconfig).returncode == 0
    proc = aegis("reject", "deployment-checkout", "-n", "storefront", "--reason", "no", kubeconfig=lab.kubeconfig)
    assert "was already approved" in one_line_error(proc)


def test_reject_needs_a_reason(lab: Lab) -> None:
    proc = aegis("reject", "deployment-search", "-n", "storefront", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 2 and "--reason" in proc.stderr
    assert (
        aegis("reject", "deployment-search", "-n", "storefront", "--reason", " ", kubeconfig=lab.kubeconfig).returncode
        == 2
    )
    assert lab.incident("storefront", "deployment-search")["spec"]["approval"]["decision"] == "Pending"

    proc = aegis("reject", "deployment-search", "-n", "storefront", "--reason", "pin 1.27.7", kubeconfig=lab.kubeconfig)
    assert proc.returncode == 0, proc.stderr
    assert "Rejected storefront/deployment-search: nothing will be changed." in proc.stdout
    assert lab.incident("storefront", "deployment-search")["spec"]["approval"] == {
        "decision": "Rejected",
        "reason": "pin 1.27.7",
    }


def test_approve_refuses_an_incident_that_is_not_waiting(lab: Lab) -> None:
    before = lab.incident("storefront", "deployment-api")
    proc = aegis("approve", "deployment-api", "-n", "storefront", kubeconfig=lab.kubeconfig)
    message = one_line_error(proc)
    assert message.startswith("Incident storefront/deployment-api is Resolved (the fix was applied and the workload")
    assert "only an incident in AwaitingApproval can be approved or rejected" in message
    after = lab.incident("storefront", "deployment-api")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    proc = aegis("reject", "deployment-cart", "-n", "lab", "--reason", "x", kubeconfig=lab.kubeconfig)
    assert "is Diagnosed (diagnosed only: the namespace is in observe mode" in one_line_error(proc)


def test_a_concurrent_change_is_retried_from_a_fresh_read(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The patch carries the resourceVersion it was decided on: a change in between is a 409, then one retry."""
    from aegis import cli
    from aegis.kube import session

    real = session.Session.patch_incident
    calls: list[dict[str, Any]] = []

    def racing(self: session.Session, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        calls.append(patch)
        if len(calls) == 1:  # the operator writes a timeline line just before our patch lands
            lab.kube.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": {"reason": "still waiting"}}
            )
        return real(self, namespace, name, patch)

    monkeypatch.setattr(session.Session, "patch_incident", racing)
    args = ["approve", "deployment-payments", "-n", "storefront", "--kubeconfig", str(lab.kubeconfig)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
    assert calls[0]["metadata"]["resourceVersion"] != calls[1]["metadata"]["resourceVersion"]
    assert lab.incident("storefront", "deployment-payments")["spec"]["approval"]["decision"] == "Approved"


# --- when the cluster says no --------------------------------------------------------------------


class _Forbidding(http.server.BaseHTTPRequestHandler):
    """An API server that lets user jane read one Incident and nothing else."""

    incident: dict[str, Any] = {}

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forbidden(self, verb: str) -> None:
        message = (
            f'incidents.aegis.dev is forbidden: User "jane" cannot {verb} resource "incidents" '
            'in API group "aegis.dev" in the namespace "storefront"'
        )
        self._send(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": 403})

    def do_GET(self) -> None:
        if self.path.split("?")[0].endswith("/incidents/deployment-web"):
            self._send(200, self.incident)
        else:
            self._forbidden("list")

    def do_PATCH(self) -> None:
        self._forbidden("patch")

    def log_message(self, *args: Any) -> None:
        pass


def _kubeconfig(tmp_path: pathlib.Path, url: str) -> pathlib.Path:
    path = tmp_path / "kubeconfig"
    server.write_kubeconfig(path, url)
    return path


def test_forbidden_by_rbac(tmp_path: pathlib.Path) -> None:
    _Forbidding.incident = factories.incident("storefront", "web")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidding)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}")
        message = one_line_error(aegis("incidents", "-n", "storefront", kubeconfig=kubeconfig))
        assert message == (
            'list incidents in storefront: forbidden (403): incidents.aegis.dev is forbidden: User "jane" cannot '
            'list resource "incidents" in API group "aegis.dev" in the namespace "storefront"'
        )
        message = one_line_error(aegis("approve", "deployment-web", "-n", "storefront", kubeconfig=kubeconfig))
        assert message.startswith("patch incident storefront/deployment-web: forbidden (403): ")
        assert 'cannot patch resource "incidents"' in message
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unreachable_cluster_and_missing_kubeconfig(tmp_path: pathlib.Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    message = one_line_error(aegis("incidents", "-A", kubeconfig=kubeconfig))
    assert message == f"cannot reach the Kubernetes API at http://127.0.0.1:{port}: connection refused"

    missing = tmp_path / "nope" / "kubeconfig"
    assert one_line_error(aegis("show", "x", kubeconfig=missing)) == f"kubeconfig {missing} does not exist"
    # Neither --kubeconfig, $KUBECONFIG, ~/.kube/config nor a service account.
    message = one_line_error(aegis("incidents"))
    assert message.startswith("no kubeconfig at ~/.kube/config and not running in a cluster")
