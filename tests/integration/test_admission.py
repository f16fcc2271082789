"""The approver-stamping admission webhook: the real operator (subprocess) serves it, manages its
MutatingWebhookConfiguration in the emulated API, and answers real AdmissionReviews.

The emulated API server does not call webhooks itself, so the tests play the API server's part: they POST
an ``admission.k8s.io/v1`` AdmissionReview (with the user the API server would have authenticated) to the
URL the operator wrote into its configuration, and apply the JSON patch it answers.
"""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

import jsonpatch
import kubernetes
import pytest

from aegis import approvals
from aegis.sim import server
from tests.integration.conftest import Operator, wait_for

ALICE = {"username": "alice@example.com", "uid": "0b7c", "groups": ["oncall-storefront", "system:authenticated"]}
CONFIGURATION = "aegis.dev"
WEBHOOK = "incident-approver.aegis.dev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def incident(decision: str = "Pending", **approval: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "deployment-web", "namespace": "storefront", "uid": "3f1e", "resourceVersion": "7"},
        "spec": {
            "target": {"kind": "Deployment", "namespace": "storefront", "name": "web"},
            "approval": {"decision": decision, "reason": "", **approval},
        },
    }


def review(old: dict[str, Any] | None, new: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it for a write of an Incident."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "aegis.dev", "version": "v1alpha1", "kind": "Incident"},
            "resource": {"group": "aegis.dev", "version": "v1alpha1", "resource": "incidents"},
            "requestKind": {"group": "aegis.dev", "version": "v1alpha1", "kind": "Incident"},
            "requestResource": {"group": "aegis.dev", "version": "v1alpha1", "resource": "incidents"},
            "name": new["metadata"]["name"],
            "namespace": new["metadata"]["namespace"],
            "operation": "CREATE" if old is None else "UPDATE",
            "userInfo": user,
            "object": new,
            "oldObject": old,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions", "fieldManager": "kubectl-patch"},
        },
    }


def post(url: str, body: dict[str, Any], context: ssl.SSLContext | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        return json.loads(answer.read())


def admitted(sent: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it: the request's object with the webhook's JSON patch applied."""
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview" and answer["apiVersion"] == "admission.k8s.io/v1"
    assert response["uid"] == sent["request"]["uid"]
    assert response["allowed"] is True, response
    obj = sent["request"]["object"]
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(obj, ops)


def configuration(api: kubernetes.client.ApiClient) -> dict[str, Any] | None:
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    try:
        found = admission.read_mutating_webhook_configuration(CONFIGURATION)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return api.sanitize_for_serialization(found)


def managed_webhook(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    """Wait until the operator has written its webhook into the MutatingWebhookConfiguration."""

    def written() -> dict[str, Any] | None:
        config = configuration(api) or {}
        return next((w for w in config.get("webhooks") or [] if w.get("name") == WEBHOOK), None)

    return wait_for(written, 30, what="the managed MutatingWebhookConfiguration")


def start(sim: server.EmulatedCluster, tmp_path: pathlib.Path, **env: str) -> Operator:
    return Operator(
        sim.kubeconfig,
        tmp_path,
        env={"AEGIS_ADMISSION_WEBHOOK": "true", "AEGIS_ADMISSION_ADDR": "127.0.0.1", **env},
    ).start()


@pytest.fixture()
def stopped() -> Any:
    running: list[Operator] = []
    yield running
    for op in running:
        if op.process is not None and not op.exited():
            op.stop()


def test_the_operator_stamps_the_approver_the_api_server_authenticated(
    sim: server.EmulatedCluster, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path, stopped: list[Operator]
) -> None:
    port = free_port()
    op = start(sim, tmp_path, AEGIS_ADMISSION_INSECURE="true", AEGIS_ADMISSION_PORT=str(port))
    stopped.append(op)

    # Managed mode: Kopf created the configuration and keeps our webhook in it (URL, rules, fail-open).
    hook = managed_webhook(api)
    url = hook["clientConfig"]["url"]
    assert url == f"http://127.0.0.1:{port}/incident-approver"
    assert hook["rules"] == [
        {
            "apiGroups": ["aegis.dev"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["incidents"],
            "scope": "*",
        }
    ]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"

    # kubectl patch ... approval.decision=Approved, by alice: stamped with alice, as the API server saw her.
    pending = incident("Pending")
    sent = review(pending, incident("Approved", reason="tag typo"), ALICE)
    stored = admitted(sent, post(url, sent))
    approval = stored["spec"]["approval"]
    assert approval["approvedBy"] == "alice@example.com"
    assert approval["approverGroups"] == ["oncall-storefront", "system:authenticated"]
    assert approval["identity"] == approvals.STAMP and approval["reason"] == "tag typo"
    # ... and the engine of this operator believes it (the stamp key lives beside its state database).
    secret = pathlib.Path(str(tmp_path / "state.sqlite") + ".approval-key").read_text().strip().encode()
    where = {"namespace": "storefront", "name": "deployment-web", "uid": "3f1e"}
    assert approvals.approver(approval, secret=secret, **where) == {"by": "alice@example.com", "verified": True}
    # ... but not on a re-created Incident of the same name (another uid): the stamp is bound to this one.
    assert approvals.approver(approval, secret=secret, **{**where, "uid": "9b20"})["verified"] is False

    # Mallory rewrites who approved, leaving the decision alone: put back as the webhook wrote it.
    forged = json.loads(json.dumps(stored))
    forged["spec"]["approval"] |= {"approvedBy": "mallory", "approverGroups": ["system:masters"]}
    sent = review(stored, forged, {"username": "mallory", "groups": ["system:authenticated"]})
    assert admitted(sent, post(url, sent))["spec"]["approval"] == approval

    # A name typed with a new decision is replaced by the requesting user.
    typed = incident("Rejected", reason="no", approvedBy="the-ceo", identity="admission")
    sent = review(pending, typed, {"username": "bob@example.com", "groups": []})
    rejected = admitted(sent, post(url, sent))["spec"]["approval"]
    assert rejected["approvedBy"] == "bob@example.com" and rejected["decision"] == "Rejected"

    # An Incident created with an answer (CREATE): the API server has not assigned its uid yet (a uid in the body
    # is the writer's), so there is nothing to bind a stamp to: none is made, typed fields are removed.
    sent = review(None, incident("Approved", approvedBy="the-ceo", identity="admission"), ALICE)
    assert admitted(sent, post(url, sent))["spec"]["approval"] == {"decision": "Approved", "reason": ""}
    # A write that touches no approval is left alone.
    sent = review(stored, stored, ALICE)
    assert "patch" not in post(url, sent)["response"]

    # Stopped, the operator takes its webhook out of the configuration (nothing calls a server that is gone).
    assert op.stop() == 0
    assert not (configuration(api) or {}).get("webhooks"), op.log()


def test_self_signed_https_with_the_ca_in_the_managed_configuration(
    sim: server.EmulatedCluster, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path, stopped: list[Operator]
) -> None:
    pytest.importorskip("cryptography")
    port = free_port()
    stopped.append(start(sim, tmp_path, AEGIS_ADMISSION_PORT=str(port)))

    hook = managed_webhook(api)
    url = hook["clientConfig"]["url"]
    assert url == f"https://127.0.0.1:{port}/incident-approver"
    # Trust exactly what the API server would trust: the CA bundle the operator wrote into the configuration.
    context = ssl.create_default_context(cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode())
    sent = review(incident("Pending"), incident("Approved"), ALICE)
    assert admitted(sent, post(url, sent, context))["spec"]["approval"]["approvedBy"] == "alice@example.com"
    with pytest.raises(urllib.error.URLError):
        post(url, sent, ssl.create_default_context())  # not a publicly trusted certificate


def test_without_the_webhook_nothing_listens_and_no_configuration_is_written(
    sim: server.EmulatedCluster, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path, stopped: list[Operator]
) -> None:
    port = free_port()
    op = Operator(sim.kubeconfig, tmp_path, env={"AEGIS_ADMISSION_PORT": str(port)}).start()
    stopped.append(op)
    wait_for(lambda: b"AEGIS ready" in op.log_path.read_bytes(), 30, what="the operator to be ready")
    assert configuration(api) is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert not op.exited()


def test_a_configuration_left_by_a_killed_operator_is_deleted_when_the_webhook_is_off(
    sim: server.EmulatedCluster, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path, stopped: list[Operator]
) -> None:
    first = tmp_path / "first"
    first.mkdir()
    op = start(sim, first, AEGIS_ADMISSION_INSECURE="true", AEGIS_ADMISSION_PORT=str(free_port()))
    assert managed_webhook(api)["failurePolicy"] == "Ignore"
    assert op.process is not None
    op.process.kill()  # OOM-killed: Kopf gets no chance to take its webhook out
    op.process.wait(timeout=10)
    op._log.close()
    assert (configuration(api) or {}).get("webhooks")

    second = tmp_path / "second"
    second.mkdir()
    again = Operator(sim.kubeconfig, second).start()  # AEGIS_ADMISSION_WEBHOOK off
    stopped.append(again)
    wait_for(lambda: configuration(api) is None, 30, what="the stale configuration to be deleted")
    assert "deleted MutatingWebhookConfiguration aegis.dev left by an earlier run" in again.log()
    assert not again.exited()
