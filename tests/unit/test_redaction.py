"""Secrets never reach evidence, Incident status or logs: planted canary values are redacted where text enters."""

from __future__ import annotations

import json

from aegis import k8sgpt, redact
from aegis.kube import evidence
from tests import factories

CANARY = "canary-Zx81qPw"


def test_redaction_keeps_keys_and_drops_values() -> None:
    cases = {
        f"invalid DATABASE_URL=postgres://admin:{CANARY}@db:5432/app": "postgres://admin:****@db:5432/app",
        f"password={CANARY} user=bob": "password=**** user=bob",
        f'{{"api_key": "{CANARY}"}}': '"api_key": "****"',
        f"Authorization: Bearer {CANARY}abcdef": "****",
        f"redis://:{CANARY}@cache:6379": "redis://:****@cache:6379",
        f"export SECRET_TOKEN={CANARY}": "SECRET_TOKEN=****",
    }
    for raw, kept in cases.items():
        out = redact.text(raw)
        assert CANARY not in out, raw
        assert kept in out, (raw, out)
    # Ordinary diagnostics survive untouched.
    for text in (
        'Back-off pulling image "nginx:1.277"',
        "You must specify POSTGRES_PASSWORD to a non-empty value",
        "0/3 nodes are available: 3 Insufficient memory.",
    ):
        assert redact.text(text) == text


def test_log_analyzer_texts_are_redacted_at_intake() -> None:
    body = factories.result("shop", "api-7b9c6d5f4-x8k2p", [f"connect failed: password={CANARY}"])
    body["spec"]["name"] = "shop/api-7b9c6d5f4-x8k2p/api"
    finding = k8sgpt.parse_result(body)
    assert CANARY not in json.dumps(finding.dump())


def test_probe_secrets_and_env_values_stay_out_of_the_target_summary() -> None:
    deploy = factories.deployment("shop", "api", "shop/api:1.4")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "DB_PASSWORD", "value": CANARY}]
    container["livenessProbe"] = {
        "httpGet": {
            "path": "/healthz",
            "port": 80,
            "httpHeaders": [{"name": "Authorization", "value": f"Bearer {CANARY}"}],
        }
    }
    container["readinessProbe"] = {"exec": {"command": ["redis-cli", "-a", CANARY, "ping"]}}
    summary = json.dumps(evidence.summarize_target(deploy))
    assert CANARY not in summary
    assert "Authorization" in summary and "/healthz" in summary


def test_event_and_container_messages_are_redacted() -> None:
    event = factories.event("shop", "e", kind="Pod", obj="p", reason="Failed", message=f"token={CANARY}")
    assert CANARY not in evidence.summarize_event(event).message
    rs = factories.replicaset(factories.deployment("shop", "api", "shop/api:1"), "7b9c6d5f4")
    pod = factories.pod(
        rs, "x8k2p", state={"waiting": {"reason": "CreateContainerError", "message": f"invalid api_key: {CANARY}"}}
    )
    assert CANARY not in json.dumps(evidence.summarize_pod(pod).dump())
