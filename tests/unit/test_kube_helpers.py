"""Pure helpers of the kube layer: label selectors, incident naming, evidence summaries without secrets."""

from __future__ import annotations

import json

from aegis import models
from aegis.kube import client, evidence, incidents
from tests import factories


def test_label_selector_matching() -> None:
    labels = {"app": "web", "tier": "front"}
    assert client.match_labels({"matchLabels": {"app": "web"}}, labels)
    assert not client.match_labels({"matchLabels": {"app": "api"}}, labels)
    assert client.match_labels({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, labels)
    assert not client.match_labels(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels
    )
    assert client.match_labels({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not client.match_labels({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not client.match_labels({}, labels)  # an empty selector selects nothing here
    assert client.selector_string({"tier": "front", "app": "web"}) == "app=web,tier=front"


def test_recurrences_get_numbered_names() -> None:
    base = "deployment-web"
    assert incidents.next_name(base, []) == base
    existing = [{"metadata": {"name": base}}, {"metadata": {"name": f"{base}-2"}}]
    assert incidents.next_name(base, existing) == f"{base}-3"
    assert incidents.ordinal("deployment-web-v2", base) == 0
    assert incidents.ordinal("deployment-api-2", "deployment-api-2") == 1


def test_incident_body_round_trips() -> None:
    target = models.ObjectRef(kind="Deployment", namespace="shop", name="web", uid="u")
    incident = models.Incident(
        name="deployment-web",
        namespace="shop",
        target=target,
        fingerprint="abc",
        signature=["s"],
        ownerChain=[models.ObjectRef(kind="Pod", namespace="shop", name="p")],
    )
    body = incidents.incident_body(incident)
    assert body["metadata"]["labels"][incidents.LABEL_TARGET_KIND] == "deployment"
    assert body["spec"]["approval"] == {"decision": "Pending"}
    again = incidents.incident_from_object(body)
    assert again.target == target and again.owner_chain == incident.owner_chain and again.signature == ["s"]


def test_target_summary_never_carries_env_values() -> None:
    deploy = factories.deployment("shop", "api", "shop/api:1.4")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "DB_PASSWORD", "value": "canary-hunter2-literal"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-secrets", "key": "token"}}},
        {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "api-config", "key": "level"}}},
    ]
    container["envFrom"] = [{"secretRef": {"name": "db-credentials"}}]
    summary = evidence.summarize_target(deploy)
    text = json.dumps(summary)
    assert "canary-hunter2-literal" not in text
    assert summary["containers"][0]["env"] == [
        "DB_PASSWORD (literal)",
        "API_TOKEN <- secret api-secrets/token",
        "LOG_LEVEL <- configmap api-config/level",
        "envFrom secret db-credentials",
    ]
    assert summary["replicas"] == 2 and summary["revision"] == "2"


def test_pod_summary_reads_container_states() -> None:
    deploy = factories.deployment("pay", "worker", "pay/worker:2", memory_limit="128Mi")
    rs = factories.replicaset(deploy, "6f7b9c8d4")
    pod = factories.pod(
        rs,
        "x2lqp",
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restarts=5,
    )
    summary = evidence.summarize_pod(pod)
    container = summary.containers[0]
    assert (container.state, container.reason, container.last_reason, container.last_exit_code) == (
        "waiting",
        "CrashLoopBackOff",
        "OOMKilled",
        137,
    )
    assert (container.restart_count, container.memory_limit) == (5, "128Mi")
