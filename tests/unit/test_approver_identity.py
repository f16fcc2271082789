"""Approver identity: the admission stamp (given old spec, new spec, userinfo) and how the engine believes it."""

from __future__ import annotations

import datetime
import pathlib
import stat
from typing import Any

import pytest

from aegis import approvals, config

NOW = datetime.datetime(2026, 11, 21, 10, 7, tzinfo=datetime.UTC)
KEY = b"k" * 64
ALICE = {"username": "alice@example.com", "uid": "u-1", "groups": ["oncall", "system:authenticated"]}
UID = "5d0c3a52-9f1e-4c1b-8a57-0e2b1f6d7a10"  # the stored Incident's metadata.uid
WHERE = {"namespace": "shop", "name": "deployment-web", "uid": UID}


def spec(decision: str | None = "Pending", **approval: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"target": {"kind": "Deployment", "namespace": "shop", "name": "web"}}
    if decision is not None:
        body["approval"] = {"decision": decision, "reason": "", **approval}
    return body


def stamp(old: dict[str, Any] | None, new: dict[str, Any], user: dict[str, Any] | None = ALICE) -> dict[str, Any]:
    where = WHERE if old is not None else {**WHERE, "uid": ""}  # a CREATE has no stored object, so no uid
    return approvals.stamp(old, new, user, secret=KEY, now=NOW, **where)


def applied(new: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """spec.approval after the webhook's merge patch."""
    approval = dict(new.get("approval") or {})
    for key, value in patch.items():
        if value is None:
            approval.pop(key, None)
        else:
            approval[key] = value
    return approval


def test_a_new_decision_is_stamped_with_the_requesting_user() -> None:
    new = spec("Approved", reason="tag typo")
    patch = stamp(spec("Pending"), new)
    assert patch["approvedBy"] == "alice@example.com"
    assert patch["approverGroups"] == ["oncall", "system:authenticated"]
    assert patch["approvedAt"] == "2026-11-21T10:07:00Z"
    assert patch["identity"] == approvals.STAMP
    approval = applied(new, patch)
    assert approvals.approver(approval, secret=KEY, **WHERE) == {"by": "alice@example.com", "verified": True}
    rejected = spec("Rejected")
    assert stamp(spec("Pending"), rejected)["approvedBy"] == "alice@example.com"


def test_a_typed_name_with_the_decision_is_replaced_by_the_real_user() -> None:
    new = spec("Approved", approvedBy="the-ceo", identity="admission", signature="00")
    approval = applied(new, stamp(spec("Pending"), new))
    assert approval["approvedBy"] == "alice@example.com"
    assert approvals.approver(approval, secret=KEY, **WHERE)["verified"] is True


def test_rewriting_who_decided_without_changing_the_decision_is_undone() -> None:
    decided = spec("Approved")
    stamped = {**decided, "approval": applied(decided, stamp(spec("Pending"), decided))}
    forged = spec("Approved", approvedBy="mallory", approverGroups=["admins"], identity="admission", signature="00")
    forged["approval"]["approvedAt"] = stamped["approval"]["approvedAt"]
    patch = stamp(stamped, forged, {"username": "mallory"})
    assert applied(forged, patch) == stamped["approval"]  # put back as the webhook wrote it

    # A typed name on an undecided incident is removed; an update that leaves the stamp alone needs no patch.
    pending = spec("Pending")
    assert stamp(pending, spec("Pending", approvedBy="mallory", identity="admission")) == {
        "approvedBy": None,
        "identity": None,
    }
    assert stamp(stamped, {**stamped, "sources": []}) == {}
    assert stamp(stamped, {**stamped, "approval": {**stamped["approval"], "reason": "edited"}}) == {}


def test_a_decision_written_at_create_is_not_stamped_and_back_to_pending_clears_the_stamp() -> None:
    # At CREATE the API server has not assigned the uid yet: nothing to bind a stamp to, so none is made
    # and typed identity fields are removed; the answer counts as unverified.
    new = spec("Approved", approvedBy="someone", identity="admission", signature="00")
    approval = applied(new, stamp(None, new))
    assert approval == {"decision": "Approved", "reason": ""}
    assert approvals.approver(approval, secret=KEY, **WHERE) == {"by": "unverified", "verified": False}
    # Even with a uid given (one the writer put into the body would be discarded by the API server).
    assert approvals.stamp(None, new, ALICE, secret=KEY, now=NOW, **WHERE)["approvedBy"] is None
    assert stamp(None, spec("Pending")) == {}
    assert stamp(None, spec(None)) == {}

    approval = applied(new, stamp(spec("Pending"), new))  # the same decision as an update: stamped
    assert approval["approvedBy"] == "alice@example.com" and approval["identity"] == approvals.STAMP
    decided = {**new, "approval": approval}
    reset = {**decided, "approval": {**approval, "decision": "Pending", "reason": ""}}  # the gate asks again
    cleared = applied(reset, stamp(decided, reset, {"username": "system:serviceaccount:aegis-system:aegis"}))
    assert cleared == {"decision": "Pending", "reason": ""}


def test_without_a_user_name_nothing_is_stamped_and_the_answer_is_unverified() -> None:
    new = spec("Approved", approvedBy="alice@example.com", identity="admission")
    for user in (None, {}, {"username": ""}):
        approval = applied(new, stamp(spec("Pending"), new, user))
        assert "identity" not in approval and "approvedBy" not in approval
        assert approvals.approver(approval, secret=KEY, **WHERE) == {"by": "unverified", "verified": False}


def test_the_engine_believes_only_its_own_signed_stamp() -> None:
    decided = spec("Approved")
    approval = applied(decided, stamp(spec("Pending"), decided))
    assert approvals.approver(approval, secret=KEY, **WHERE)["verified"] is True
    # No webhook run by this operator (the emulated cluster): the claim is kept, not believed.
    assert approvals.approver(approval, secret=None, **WHERE) == {
        "by": "unverified (claimed: alice@example.com)",
        "verified": False,
    }
    # Another key, another incident, another decision, or an edited name: not this operator's stamp.
    assert approvals.approver(approval, secret=b"x" * 64, **WHERE)["verified"] is False
    assert (
        approvals.approver(approval, secret=KEY, namespace="shop", name="deployment-api", uid=UID)["verified"] is False
    )
    assert approvals.approver({**approval, "decision": "Rejected"}, secret=KEY, **WHERE)["verified"] is False
    assert approvals.approver({**approval, "approvedBy": "bob"}, secret=KEY, **WHERE) == {
        "by": "unverified (claimed: bob)",
        "verified": False,
    }
    assert approvals.approver({**approval, "identity": None}, secret=KEY, **WHERE)["verified"] is False
    # Typed by hand, or nothing at all.
    assert approvals.approver({"decision": "Approved", "approvedBy": "x" * 500}, secret=KEY, **WHERE)["by"].endswith(
        "…)"
    )
    assert approvals.approver(None, secret=KEY, **WHERE) == {"by": "unverified", "verified": False}
    assert approvals.approver({"decision": "Approved"}, secret=None, **WHERE) == {"by": "unverified", "verified": False}


def test_a_stamp_from_an_earlier_incident_of_the_same_name_is_unverified() -> None:
    """A recurrence re-creates a deleted Incident under the same name: its stamp is not the new one's."""
    decided = spec("Approved")
    approval = applied(decided, stamp(spec("Pending"), decided))
    assert approvals.approver(approval, secret=KEY, **WHERE)["verified"] is True
    recreated = {**WHERE, "uid": "9e41d7c0-0000-4000-8000-000000000001"}
    assert approvals.approver(approval, secret=KEY, **recreated) == {
        "by": "unverified (claimed: alice@example.com)",
        "verified": False,
    }
    # No uid to check against (a caller that does not pass one): nothing is verified, nothing breaks.
    assert approvals.approver(approval, secret=KEY, namespace="shop", name="deployment-web")["verified"] is False
    assert approvals.approver(approval, secret=KEY, **{**WHERE, "uid": ""})["verified"] is False
    # Without a uid the webhook does not stamp an update either (it always has one from the API server).
    assert "identity" not in applied(
        decided, approvals.stamp(spec("Pending"), decided, ALICE, secret=KEY, now=NOW, **{**WHERE, "uid": ""})
    )


def test_odd_bodies_do_not_break_the_stamp() -> None:
    assert stamp({"approval": "yes"}, {"approval": ["no"]}) == {}
    assert stamp(None, {}) == {}


def test_the_secret_exists_only_where_the_operator_runs_the_webhook(tmp_path: pathlib.Path) -> None:
    off = config.Settings(state_db=tmp_path / "state.sqlite")
    assert approvals.secret_for(off) is None
    on = config.Settings(state_db=tmp_path / "state.sqlite", admission_webhook=True)
    first = approvals.secret_for(on)
    assert first is not None and len(first) == 64
    path = approvals.secret_path(on)
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o600
    approvals._load_secret.cache_clear()  # a restarted operator reads the same key back
    assert approvals.secret_for(on) == first


def test_a_truncated_secret_is_refused(tmp_path: pathlib.Path) -> None:
    on = config.Settings(state_db=tmp_path / "state.sqlite", admission_webhook=True)
    approvals.secret_path(on).write_text("short")
    with pytest.raises(ValueError, match="too short"):
        approvals.secret_for(on)


def test_admission_settings_are_checked_at_start_up() -> None:
    settings = config.load_settings()
    assert settings.admission_webhook is False and settings.admission_port == 9443
    assert settings.admission_configuration == "aegis.dev"
    with pytest.raises(config.SettingsError, match="AEGIS_ADMISSION_KEY_FILE"):
        config.load_settings(admission_cert_file="/tls/tls.crt")
    with pytest.raises(config.SettingsError, match="AEGIS_ADMISSION_INSECURE"):
        config.load_settings(
            admission_cert_file="/tls/tls.crt", admission_key_file="/tls/tls.key", admission_insecure=True
        )
    with pytest.raises(config.SettingsError, match="AEGIS_ADMISSION_SERVICE"):
        config.load_settings(admission_service="aegis-webhook")
    assert config.load_settings(admission_service="aegis-system/aegis-webhook").admission_service


# --- the webhook server: Service client config and the self-signed certificate ------------------------------------


async def test_behind_a_service_the_configuration_names_the_service(tmp_path: pathlib.Path) -> None:
    import socket

    from aegis.kube import webhook

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = config.Settings(
        state_db=tmp_path / "state.sqlite",
        admission_webhook=True,
        admission_insecure=True,
        admission_addr="127.0.0.1",
        admission_port=port,
        admission_service="aegis-system/aegis-webhook",
    )
    server = webhook.server(settings)
    assert server.host == "aegis-webhook.aegis-system.svc"
    assert "aegis-webhook.aegis-system.svc.cluster.local" in server.extra_sans
    served = server(lambda *a, **kw: None)
    try:
        client_config = await anext(served)
    finally:
        await served.aclose()
    assert client_config == {"service": {"namespace": "aegis-system", "name": "aegis-webhook", "port": 443}}
    assert webhook.parse_service("ns/svc:8443") == ("ns", "svc", 8443) and webhook.parse_service("") is None


def test_the_self_signed_certificate_names_the_service_and_serves_tls(tmp_path: pathlib.Path) -> None:
    import ipaddress
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from aegis.kube import webhook

    cert_pem, key_pem = webhook.self_signed(["aegis-webhook.aegis-system.svc", "0.0.0.0", "127.0.0.1", "x.svc"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["aegis-webhook.aegis-system.svc", "x.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]  # not 0.0.0.0
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca  # its own CA: the caBundle
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    ssl.create_default_context(cadata=cert_pem.decode())  # usable as the trust anchor

    # Start-up refuses what could not serve: a certificate file that is not there.
    missing = config.Settings(
        admission_webhook=True, admission_cert_file=tmp_path / "nope.crt", admission_key_file=tmp_path / "tls.key"
    )
    with pytest.raises(FileNotFoundError, match=r"nope\.crt"):
        webhook.check(missing)


# --- the Kopf handler: fail open, and the uid of the stored object -----------------------------------------------


def test_the_generated_webhook_fails_open() -> None:
    """Kopf writes failurePolicy Ignore for our handler: a configuration left by a killed operator blocks nothing."""
    import kopf
    from kopf._cogs.structs import references
    from kopf._core.engines import admission as kopf_admission

    from aegis.kube import webhook
    from handlers import admission

    assert admission.stamp_approver is not None  # imported: registered
    ours = [h for h in kopf.get_default_registry()._webhooks.get_all_handlers() if h.id == webhook.HANDLER_ID]
    assert len(ours) == 1 and ours[0].ignore_failures is True
    incidents = references.Resource("aegis.dev", "v1alpha1", "incidents", kind="Incident", namespaced=True)
    [hook] = kopf_admission.build_webhooks(
        ours, resources=[incidents], name_suffix="aegis.dev", client_config={"url": "https://127.0.0.1:9443"}
    )
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["name"] == "incident-approver.aegis.dev"
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/incident-approver"}
    assert webhook.ours(hook, "aegis.dev")


def _body(decision: str, uid: str | None, **approval: Any) -> Any:
    import kopf

    meta: dict[str, Any] = {"namespace": "shop", "name": "deployment-web"}
    if uid is not None:
        meta["uid"] = uid
    return kopf.Body({"metadata": meta, "spec": spec(decision, **approval)})


async def test_the_handler_binds_the_stamp_to_the_stored_objects_uid() -> None:
    import logging

    import kopf

    from handlers import admission

    async def run(old: Any, new: Any, user: dict[str, Any] = ALICE) -> dict[str, Any]:
        patch = kopf.Patch()
        await admission.stamp_approver(
            old=old, new=new, userinfo=user, patch=patch, memo=kopf.Memo(admission_secret=KEY),
            logger=logging.getLogger("test"),
        )  # fmt: skip
        return dict(patch)

    # UPDATE: the uid comes from oldObject (the stored object), not from what the writer sent.
    patch = await run(_body("Pending", UID), _body("Approved", "uid-typed-by-the-writer"))
    approval = applied(spec("Approved"), patch["spec"]["approval"])
    assert approvals.approver(approval, secret=KEY, **WHERE) == {"by": "alice@example.com", "verified": True}
    assert approvals.approver(approval, secret=KEY, **{**WHERE, "uid": "uid-typed-by-the-writer"})["verified"] is False
    # CREATE: the API server assigns the uid after admission; a uid in the body is the writer's, so: no stamp.
    patch = await run(None, _body("Approved", UID, approvedBy="the-ceo", identity="admission"))
    assert patch["spec"]["approval"] == {"approvedBy": None, "identity": None}


async def _handle(old: Any, new: Any, memo: Any = None) -> tuple[dict[str, Any], list[str]]:
    """The handler's patch and what it logged, for one request by alice."""
    import logging

    import kopf

    from handlers import admission

    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.admission")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        patch = kopf.Patch()
        await admission.stamp_approver(
            old=old, new=new, userinfo=ALICE, patch=patch,
            memo=kopf.Memo(admission_secret=KEY) if memo is None else memo, logger=logger,
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    return dict(patch), [r.getMessage() for r in records]


async def test_typing_some_of_the_stamp_with_the_decision_is_still_stamped_admitted_and_logged_as_such() -> None:
    """Seen on the real API server: alice's `approvedBy: alice` beside her decision made the handler raise (the
    patch left it out), and Kopf answered "denied the request: 'approvedBy'"; a typed `identity: admission` made
    the log say "reset" instead of who approved."""
    for typed in ({"approvedBy": "alice@example.com"}, {"identity": "admission", "approvedBy": "the-ceo"}):
        patch, said = await _handle(_body("Pending", UID), _body("Approved", UID, **typed))
        approval = applied(spec("Approved", **typed), patch["spec"]["approval"])
        assert approvals.approver(approval, secret=KEY, **WHERE) == {"by": "alice@example.com", "verified": True}
        assert said == ["Approved by alice@example.com (as the API server authenticated them)"], typed
    # A rewritten stamp with the decision left alone is put back, and logged as a reset.
    stamped = applied(
        spec("Approved"), (await _handle(_body("Pending", UID), _body("Approved", UID)))[0]["spec"]["approval"]
    )
    forged = {**stamped, "approvedBy": "the-ceo"}
    patch, said = await _handle(_body(**stamped, uid=UID), _body(**forged, uid=UID))
    assert patch["spec"]["approval"] == {"approvedBy": "alice@example.com"}
    assert said == ["approval identity fields not written by AEGIS were reset: approvedBy"]


async def test_an_error_while_stamping_admits_the_write_unstamped() -> None:
    """The webhook fails open on its own errors too (a raising Kopf handler would deny the user's write)."""
    import kopf

    patch, said = await _handle(_body("Pending", UID), _body("Approved", UID), memo=kopf.Memo())  # no secret
    assert patch == {}
    assert said == ["could not stamp the approver; the write goes through unstamped (so unverified)"]


# --- a configuration left behind, with the webhook now off -------------------------------------------------------


class _Cluster:
    def __init__(self, found: dict[str, Any] | None, error: Exception | None = None) -> None:
        self.found, self.error, self.deleted = found, error, []

    async def get_mutating_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return self.found

    async def delete_mutating_webhook_configuration(self, name: str, *, uid: str | None = None) -> bool:
        self.deleted.append((name, uid))
        return True


def _configuration(*hooks: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "aegis.dev", "uid": "c-1"}, "webhooks": list(hooks)}


OUR_HOOK = {
    "name": "incident-approver.aegis.dev",
    "clientConfig": {"service": {"namespace": "aegis-system", "name": "aegis-webhook", "path": "/incident-approver"}},
    "failurePolicy": "Fail",
}


async def test_a_stale_configuration_is_deleted_only_when_it_is_ours(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from aegis.kube import client, webhook

    logger = logging.getLogger("aegis.test")
    stale = _Cluster(_configuration(OUR_HOOK))
    assert await webhook.remove_stale(stale, "aegis.dev", logger) is True  # type: ignore[arg-type]
    assert stale.deleted == [("aegis.dev", "c-1")]  # only the incarnation that was read

    url_mode = _Cluster(
        _configuration({**OUR_HOOK, "clientConfig": {"url": "https://10.0.0.5:9443/incident-approver"}})
    )
    assert await webhook.remove_stale(url_mode, "aegis.dev", logger) is True  # type: ignore[arg-type]

    foreign = {"name": "policy.example.com", "clientConfig": {"url": "https://policy.example.com/validate"}}
    for cluster in (
        _Cluster(None),  # absent
        _Cluster(_configuration()),  # emptied by a graceful exit
        _Cluster(_configuration(OUR_HOOK, foreign)),  # someone else's webhooks share the name
        _Cluster(_configuration({**OUR_HOOK, "clientConfig": {"url": "https://x/other"}})),
    ):
        assert await webhook.remove_stale(cluster, "aegis.dev", logger) is False  # type: ignore[arg-type]
        assert cluster.deleted == []
    assert await webhook.remove_stale(stale, "", logger) is False  # type: ignore[arg-type]  (managed by hand)

    # Best effort: no permission (an old ClusterRole without delete) or no API is logged, never raised.
    denied = _Cluster(None, client.ClusterError("get MutatingWebhookConfiguration aegis.dev: HTTP 403", 403))
    with caplog.at_level(logging.WARNING, logger="aegis.test"):
        assert await webhook.remove_stale(denied, "aegis.dev", logger) is False  # type: ignore[arg-type]
    assert "HTTP 403" in caplog.text and "delete it by hand" in caplog.text
