"""Who approved, from the real API server: kube-apiserver v1.28 itself calls AEGIS's admission webhook.

The real operator (``python -m kopf run -m handlers``, as in ``tests/integration/test_admission.py``) runs
against the session's real control plane with ``AEGIS_ADMISSION_WEBHOOK`` on, in URL mode: it serves the webhook
on 127.0.0.1 (a free port, ``AEGIS_ADMISSION_HOST=127.0.0.1``) with a self-signed certificate, and Kopf writes
the MutatingWebhookConfiguration ``aegis.dev`` (``clientConfig.url``, the certificate as ``caBundle``). Each
start waits until the API server really calls it (a server-side dry-run approval comes back stamped: the API
server learns of configurations through an informer), then users of the control plane's token file decide
with the very ``kubectl patch`` that ``aegis show`` prints:

- ``alice`` (group ``oncall``), allowed by the RoleBinding of ``deploy/aegis/examples/approver-rolebinding.yaml``
  (applied with the test's namespaces) to the ``aegis-approver`` ClusterRole of ``deploy/aegis/rbac.yaml``:
  her approval is stored with ``approvedBy: alice``, her groups and the signed stamp, which the operator's own
  key verifies (``approvals.approver``, what the engine asks when it resumes the workflow);
- alice writing ``approvedBy``, groups and a signature herself: replaced by who she is, or put back; her own
  name typed beside her decision is admitted and stamped (the webhook used to deny that write);
- ``bob`` (group ``guests``), and alice in a namespace without the binding: refused by the API server (RBAC),
  through kubectl and with a bare PATCH;
- the whole way once: the bad-image-tag scenario breaks a Deployment (the emulated node side plays the
  kubelets), the workflow verifies a fix in the shadow and asks, alice answers, and the gate records her as
  the verified approver (``status.decision.by``/``identityVerified``, the timeline);
- the operator killed with its configuration left behind: writes still go through (``failurePolicy: Ignore``),
  unstamped, so unverified.

Two namespaces of the module's own: in the first the test writes Incidents itself, in phase AwaitingApproval
as the workflow leaves them (``tests/factories.incident``, with ``status.decision.question``; the stamp depends
only on the request), and the operator is not watching it (``AEGIS_WATCH_NAMESPACES`` names only the second,
``<first>-flow``, where the scenario runs). At the end the operator is stopped and the webhook configurations,
both namespaces, the workflow's shadows and the analyzer's Results about them are deleted, even on failure
(other real-tier tests share the control plane: a configuration pointing at a dead port must not outlive this
module). The ``aegis-approver`` ClusterRole stays: it is what ``deploy/aegis`` installs anyway.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import pathlib
import secrets
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from aegis import approvals, config, k8sgpt, shadow
from aegis.kube import webhook
from aegis.sim import analyzer, controlplane, scenarios
from tests import factories, kube_cli
from tests.integration.conftest import Operator, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.real]

ROOT = pathlib.Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy/aegis/rbac.yaml"
BINDING = ROOT / "deploy/aegis/examples/approver-rolebinding.yaml"
CONFIGURATION = "aegis.dev"  # AEGIS_ADMISSION_CONFIGURATION's default, as deploy/aegis runs it
WEBHOOK = f"{webhook.HANDLER_ID}.{CONFIGURATION}"
GROUP, VERSION, PLURAL = "aegis.dev", "v1alpha1", "incidents"
SCENARIO = scenarios.load(ROOT / "examples/incidents/bad-image-tag")
# The windows of tests/e2e/test_approvals.py (the node side runs 10x faster than the wall clock).
FLOW = {
    "AEGIS_MODE": "propose",
    "AEGIS_LLM_MODE": "off",
    "AEGIS_SETTLE_SECONDS": "10",
    "AEGIS_SHADOW_STABILITY_SECONDS": "3",
    "AEGIS_SHADOW_TIMEOUT_SECONDS": "30",
    "AEGIS_CONFIRM_STABILITY_SECONDS": "6",
    "AEGIS_CONFIRM_TIMEOUT_SECONDS": "60",
}


class Lab:
    """The test namespace on the real control plane, the operator serving the webhook, and kubectl as each user."""

    def __init__(self, plane: controlplane.ControlPlane, workdir: pathlib.Path, namespace: str) -> None:
        self.plane, self.workdir, self.namespace = plane, workdir, namespace
        self.flow = f"{namespace}-flow"  # the one namespace the workflow acts on: a scenario, asked and answered
        self.api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.admission = kubernetes.client.AdmissionregistrationV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.kubeconfigs = {
            user: plane.kubeconfig_for(user, workdir / f"{user}.kubeconfig") for user in ("alice", "bob")
        }
        self.operator: Operator | None = None
        self.port = 0
        self._runs = 0

    # --- the operator ------------------------------------------------------------------------------

    def running(self) -> Operator:
        """The operator, started (again) if it is not running, once the API server calls its webhook."""
        if self.operator is not None and not self.operator.exited():
            return self.operator
        self._runs += 1
        run = self.workdir / f"run-{self._runs}"
        run.mkdir()
        self.port = controlplane.free_port()
        env = {
            "AEGIS_ADMISSION_WEBHOOK": "true",
            "AEGIS_ADMISSION_ADDR": "127.0.0.1",
            "AEGIS_ADMISSION_HOST": "127.0.0.1",
            "AEGIS_ADMISSION_PORT": str(self.port),
            "AEGIS_ADMISSION_CONFIGURATION": CONFIGURATION,
            "AEGIS_STATE_DB": str(self.workdir / "state.sqlite"),  # one stamp key across restarts, as on a volume
            "AEGIS_WATCH_NAMESPACES": self.flow,  # not self.namespace: there the test writes the Incidents itself
            **FLOW,
        }
        self.operator = Operator(self.plane.kubeconfig, run, env=env).start()
        hook = self.wait(self.webhook, 30, f"the operator's webhook in MutatingWebhookConfiguration {CONFIGURATION}")
        assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{self.port}/{webhook.HANDLER_ID}", hook
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None", hook
        # kube-apiserver reads webhook configurations through an informer: wait until it really calls this one
        # (and trusts its new certificate) — a server-side dry run of an approval comes back stamped.
        probe = self.create(f"deployment-probe-{self._runs}", f"probe-{self._runs}")
        self.wait(lambda: self.dry_run_stamped(probe["metadata"]["name"]), 30, "kube-apiserver to call the webhook")
        return self.operator

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """``wait_for``, saying on timeout what the operator logged."""
        try:
            return wait_for(condition, timeout, interval=0.25, what=what)
        except AssertionError as exc:
            log = self.operator.log()[-4000:] if self.operator is not None else ""
            raise AssertionError(f"{exc}\noperator log (end):\n{log}") from None

    def kill(self) -> None:
        """SIGKILL (OOM, node lost): Kopf gets no chance to take its webhook out of the configuration."""
        assert self.operator is not None and self.operator.process is not None
        self.operator.process.send_signal(signal.SIGKILL)
        self.operator.process.wait(timeout=10)
        self.operator._log.close()

    def stop(self) -> None:
        if self.operator is not None and not self.operator.exited():
            self.operator.stop()

    def secret(self) -> bytes | None:
        """The operator's stamp key, found as the engine finds it (beside its state database)."""
        settings = config.Settings(admission_webhook=True, state_db=self.workdir / "state.sqlite")
        return approvals.secret_for(settings)

    def webhook(self) -> dict[str, Any] | None:
        found = self.configuration()
        return next((w for w in (found or {}).get("webhooks") or [] if w.get("name") == WEBHOOK), None)

    def configuration(self) -> dict[str, Any] | None:
        try:
            found = self.admission.read_mutating_webhook_configuration(CONFIGURATION)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(found)

    # --- Incidents -----------------------------------------------------------------------------------

    def create(self, name: str, workload: str) -> dict[str, Any]:
        """An Incident waiting for approval, as the workflow leaves it: spec by create, status via /status."""
        body = factories.incident(self.namespace, workload)
        body["metadata"] = {k: body["metadata"][k] for k in ("namespace", "labels")} | {"name": name}
        status = body.pop("status")
        now = datetime.datetime.now(datetime.UTC)
        status["decision"] |= {
            "question": secrets.token_hex(5),
            "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expiresAt": (now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )
        return self.get(name)

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace or self.namespace, PLURAL, name)

    def verdict(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the operator's engine concludes from the stored approval (``graph.engine``'s resume)."""
        meta = obj["metadata"]
        return approvals.approver(
            obj["spec"].get("approval"),
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            secret=self.secret(),
        )

    # --- kubectl, as each user ---------------------------------------------------------------------

    def kubectl(self, user: str | None, command: list[str]) -> subprocess.CompletedProcess[str]:
        """``command`` (starting with ``kubectl``) as ``user`` (None: the admin)."""
        kubeconfig = self.plane.kubeconfig if user is None else self.kubeconfigs[user]
        assert command[0] == "kubectl", command
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), *command[1:]], capture_output=True, text=True, timeout=60
        )

    def approve_command(self, obj: dict[str, Any]) -> list[str]:
        """The ``kubectl patch`` that ``aegis show`` prints for this ask, as a user types it."""
        meta, question = obj["metadata"], obj["status"]["decision"]["question"]
        return shlex.split(approvals.commands(meta["name"], meta["namespace"], question)["kubectl"])

    def patch(self, user: str | None, name: str, approval: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"spec": {"approval": approval}})
        return self.kubectl(
            user, ["kubectl", "patch", "incident", name, "-n", self.namespace, "--type", "merge", "-p", body]
        )

    def patch_directly(self, user: str, namespace: str, name: str, approval: dict[str, Any]) -> tuple[int, str]:
        """A merge PATCH of ``spec.approval`` as ``user``, without kubectl's read first: (HTTP status, message)."""
        api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfigs[user]))
        try:
            custom = kubernetes.client.CustomObjectsApi(api)
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"spec": {"approval": approval}}
            )
        except kubernetes.client.ApiException as exc:
            return int(exc.status), str(json.loads(exc.body or "{}").get("message") or exc.body)
        finally:
            api.close()
        return 200, ""

    def dry_run_stamped(self, name: str) -> bool:
        return kube_cli.approval_stamped(self.plane.kubeconfig, self.namespace, name)

    # --- clean-up ------------------------------------------------------------------------------------

    def remove(self) -> None:
        """Stop the operator, delete the webhook configurations it wrote (Kopf manages a validating one of the
        same name too, left empty), this module's namespaces, the shadows its workflow made and the analyzer's
        Results about them; every step even when an earlier one failed, and checked: nothing may call a dead
        webhook after this module, and the next one finds the control plane as this one found it."""
        with contextlib.suppress(Exception):
            self.stop()
        if self.operator is not None and self.operator.process is not None and self.operator.process.poll() is None:
            self.operator.process.kill()
            self.operator.process.wait(timeout=10)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.kubectl(None, ["kubectl", "delete", kind, CONFIGURATION, "--ignore-not-found", "--wait=false"])
        shadows = [
            ns.metadata.name
            for ns in self.core.list_namespace(label_selector=f"{shadow.LABEL_SHADOW}=true").items
            if (ns.metadata.labels or {}).get(shadow.LABEL_INCIDENT, "").startswith(f"{self.flow}.")
        ]
        ours = [self.namespace, self.flow, *shadows]
        self.kubectl(None, ["kubectl", "delete", "namespace", *ours, "--ignore-not-found", "--wait=false"])
        for ns in ours[1:]:  # no new pods in a Terminating namespace: theirs need no grace period
            self.kubectl(None, ["kubectl", "delete", "pods", "--all", "-n", ns, "--force", "--grace-period=0"])
        try:
            assert self.configuration() is None, f"MutatingWebhookConfiguration {CONFIGURATION} left behind"
            wait_for(
                lambda: not {ns.metadata.name for ns in self.core.list_namespace().items} & set(ours),
                90,
                what=f"namespaces {ours} to be removed",
            )
            results = self.custom.list_namespaced_custom_object(
                k8sgpt.RESULT_GROUP, k8sgpt.RESULT_VERSION, analyzer.RESULT_NAMESPACE, k8sgpt.RESULT_PLURAL
            )["items"]
            for result in results:
                if str((result.get("spec") or {}).get("name") or "").split("/", 1)[0] in ours:
                    with contextlib.suppress(kubernetes.client.ApiException):
                        self.custom.delete_namespaced_custom_object(
                            k8sgpt.RESULT_GROUP,
                            k8sgpt.RESULT_VERSION,
                            analyzer.RESULT_NAMESPACE,
                            k8sgpt.RESULT_PLURAL,
                            result["metadata"]["name"],
                        )
        finally:
            self.api.close()


def documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def lab(
    real_control_plane: controlplane.ControlPlane, real_node_side: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """The operator and the two namespaces, for the module; the node side stays attached until they are gone."""
    namespace = f"aegis-approvers-{secrets.token_hex(3)}"
    the_lab = Lab(real_control_plane, tmp_path_factory.mktemp("admission-real"), namespace)
    try:
        # As an admin installs it: the aegis-approver ClusterRole from deploy/aegis (the rest of rbac.yaml is the
        # operator's own, which the admin kubeconfig does not need), and the example binding, in both namespaces.
        approver = [
            d for d in documents(RBAC) if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "aegis-approver"
        ]
        (binding,) = documents(BINDING)
        assert binding["metadata"]["namespace"] == "shop" and binding["roleRef"]["name"] == "aegis-approver"
        docs: list[dict[str, Any]] = [*approver]
        for ns in (the_lab.namespace, the_lab.flow):
            docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            docs.append({**binding, "metadata": {**binding["metadata"], "namespace": ns}})
        manifests = the_lab.workdir / "rbac.yaml"
        manifests.write_text(yaml.safe_dump_all(docs))
        applied = the_lab.kubectl(None, ["kubectl", "apply", "-f", str(manifests)])
        assert applied.returncode == 0, applied.stderr
        the_lab.running()
        yield the_lab
    finally:
        the_lab.remove()


def test_alice_approves_with_kubectl_patch_and_is_recorded_as_the_api_server_authenticated_her(lab: Lab) -> None:
    lab.running()
    asked = lab.create("deployment-web", "web")
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    done = lab.kubectl("alice", lab.approve_command(asked))
    assert done.returncode == 0, done.stderr

    stored = lab.get("deployment-web")
    approval = stored["spec"]["approval"]
    assert approval["decision"] == "Approved"
    assert approval["question"] == asked["status"]["decision"]["question"]
    assert approval["approvedBy"] == "alice"
    assert "oncall" in approval["approverGroups"] and "system:authenticated" in approval["approverGroups"]
    assert approval["identity"] == approvals.STAMP
    assert datetime.datetime.fromisoformat(approval["approvedAt"]) >= before
    # The operator's engine believes it: signed with its key, bound to this Incident's uid.
    assert lab.verdict(stored) == {"by": "alice", "verified": True}
    # ... and only this Incident: a stamp copied onto a re-created one of the same name (another uid) does not verify.
    copied = copy.deepcopy(stored)
    copied["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    assert lab.verdict(copied)["verified"] is False


def test_a_forged_approver_is_replaced_by_who_wrote_it_and_a_rewritten_stamp_is_put_back(lab: Lab) -> None:
    lab.running()
    asked = lab.create("deployment-checkout", "checkout")
    forged = {
        "approvedBy": "someone-else",
        "approverGroups": ["system:masters"],
        "approvedAt": "2000-01-01T00:00:00Z",
        "identity": approvals.STAMP,
        "signature": "0" * 64,
    }

    # A new decision with a typed identity: the webhook writes the requesting user instead.
    question = asked["status"]["decision"]["question"]
    done = lab.patch("alice", "deployment-checkout", {"decision": "Approved", "question": question, **forged})
    assert done.returncode == 0, done.stderr
    stamped = lab.get("deployment-checkout")
    approval = stamped["spec"]["approval"]
    assert approval["approvedBy"] == "alice" and "oncall" in approval["approverGroups"]
    assert "system:masters" not in approval["approverGroups"]
    assert approval["approvedAt"] != forged["approvedAt"] and approval["signature"] != forged["signature"]
    assert lab.verdict(stamped) == {"by": "alice", "verified": True}

    # The operator's log, its record of who decided, says so too (not "reset": the decision was stamped).
    assert lab.operator is not None
    said = [line for line in lab.operator.log().splitlines() if f"{lab.namespace}/deployment-checkout]" in line]
    assert any("Approved by alice (as the API server authenticated them)" in line for line in said), said

    # The decision left alone, the stamp rewritten (or removed): put back as the webhook wrote it.
    for rewrite in (forged, dict.fromkeys(approvals.FIELDS)):
        done = lab.patch("alice", "deployment-checkout", rewrite)
        assert done.returncode == 0, done.stderr
        assert lab.get("deployment-checkout")["spec"]["approval"] == approval, rewrite

    # Typing one's own name with the decision (as if it were needed) is no forgery: admitted, and stamped.
    asked = lab.create("deployment-cart", "cart")
    question = asked["status"]["decision"]["question"]
    done = lab.patch("alice", "deployment-cart", {"decision": "Rejected", "question": question, "approvedBy": "alice"})
    assert done.returncode == 0, done.stderr
    stamped = lab.get("deployment-cart")
    assert stamped["spec"]["approval"]["identity"] == approvals.STAMP, stamped["spec"]["approval"]
    assert lab.verdict(stamped) == {"by": "alice", "verified": True}


def test_a_user_without_the_binding_is_refused_by_the_api_server(lab: Lab) -> None:
    lab.running()
    asked = lab.create("deployment-search", "search")
    command = lab.approve_command(asked)

    # kubectl patch reads the object first: bob may not even do that.
    refused = lab.kubectl("bob", command)
    assert refused.returncode != 0
    assert "Error from server (Forbidden)" in refused.stderr, refused.stderr
    assert 'User "bob" cannot get resource "incidents" in API group "aegis.dev"' in refused.stderr, refused.stderr
    assert f'in the namespace "{lab.namespace}"' in refused.stderr, refused.stderr
    # The PATCH itself, sent without the read (any client may): refused by RBAC too, before admission.
    status, message = lab.patch_directly("bob", lab.namespace, "deployment-search", {"decision": "Approved"})
    assert status == 403, message
    assert 'User "bob" cannot patch resource "incidents" in API group "aegis.dev"' in message, message
    after = lab.get("deployment-search")
    assert after["metadata"]["resourceVersion"] == asked["metadata"]["resourceVersion"]
    assert after["spec"] == asked["spec"]

    # The binding is per namespace: alice may approve here, not in a namespace without one.
    elsewhere = f"{lab.namespace}-elsewhere"
    command[command.index("-n") + 1] = elsewhere
    refused = lab.kubectl("alice", command)
    assert refused.returncode != 0
    assert f'User "alice" cannot get resource "incidents" in API group "aegis.dev" in the namespace "{elsewhere}"' in (
        refused.stderr
    ), refused.stderr
    status, message = lab.patch_directly("alice", elsewhere, "deployment-search", {"decision": "Approved"})
    assert status == 403 and 'User "alice" cannot patch resource "incidents"' in message, message


def relocated(docs: tuple[dict[str, Any], ...], namespace: str) -> str:
    """The scenario's documents moved into ``namespace``, as YAML for ``kubectl apply -f -``."""
    moved = copy.deepcopy(list(docs))
    for doc in moved:
        doc["metadata"]["name" if doc["kind"] == "Namespace" else "namespace"] = namespace
    return yaml.safe_dump_all(moved)


def test_a_fix_the_workflow_asks_about_is_approved_by_alice_and_resumed_as_verified(lab: Lab) -> None:
    """The whole way: the scenario breaks, the workflow verifies a fix and asks, alice answers with the printed
    command, and the gate records her as the verified approver (status.decision, timeline)."""
    lab.running()
    for docs in (SCENARIO.manifests, SCENARIO.change):
        applied = subprocess.run(
            ["kubectl", "--kubeconfig", str(lab.plane.kubeconfig), "apply", "-f", "-"],
            input=relocated(docs, lab.flow),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        if docs is SCENARIO.manifests:
            rolled = lab.kubectl(
                None, ["kubectl", "rollout", "status", "deployment/web", "-n", lab.flow, "--timeout=90s"]
            )
            assert rolled.returncode == 0, rolled.stderr

    def asked() -> dict[str, Any] | None:
        with contextlib.suppress(kubernetes.client.ApiException):
            obj = lab.get("deployment-web", lab.flow)
            status = obj.get("status") or {}
            if status.get("phase") == "AwaitingApproval" and (status.get("decision") or {}).get("question"):
                return obj
        return None

    waiting = lab.wait(asked, 120, "the workflow to ask for approval")
    printed = lab.approve_command(waiting)
    done = lab.kubectl("alice", printed)
    assert done.returncode == 0, done.stderr

    def decided() -> dict[str, Any] | None:
        decision = (lab.get("deployment-web", lab.flow).get("status") or {}).get("decision") or {}
        return decision if decision.get("outcome") == "approved" else None

    decision = lab.wait(decided, 60, "the workflow to take alice's approval")
    assert decision["by"] == "alice" and decision["identityVerified"] is True, decision
    approval = lab.get("deployment-web", lab.flow)["spec"]["approval"]
    assert approval["approvedBy"] == "alice" and approval["identity"] == approvals.STAMP, approval
    timeline = [line["message"] for line in lab.get("deployment-web", lab.flow)["status"]["timeline"]]
    assert "approved by alice" in timeline, timeline


def test_with_the_operator_gone_and_its_configuration_left_writes_go_through_unstamped(lab: Lab) -> None:
    lab.running()
    asked = lab.create("deployment-payments", "payments")
    lab.kill()
    left = lab.webhook()
    assert left is not None and left["clientConfig"]["url"].startswith(f"https://127.0.0.1:{lab.port}/")

    done = lab.kubectl("alice", lab.approve_command(asked))
    assert done.returncode == 0, done.stderr  # failurePolicy Ignore: the call fails, the write is admitted

    approval = lab.get("deployment-payments")["spec"]["approval"]
    assert approval["decision"] == "Approved"
    assert not set(approvals.FIELDS) & set(approval), approval
    assert lab.verdict(lab.get("deployment-payments")) == {"by": approvals.UNVERIFIED, "verified": False}
