"""Rules propose ranked, validated plans per category — and none where only a human can supply the fix."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from aegis import actions, models
from aegis.kube import evidence as ev
from aegis.rules import remedies
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def history(good_image: str = "nginx:1.27", bad_image: str = "nginx:1.277", **bad: Any) -> tuple[dict, actions.Context]:
    deploy = factories.deployment("shop", "web", good_image, memory_limit="100Mi")
    good_template = copy.deepcopy(deploy["spec"]["template"])
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = bad_image
    deploy["spec"]["template"]["spec"].update(bad)
    old = factories.replicaset({**deploy, "spec": {**deploy["spec"], "template": good_template}}, "6d4cf56db6")
    old["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    new = factories.replicaset(deploy, "7b9c6d5f4f")
    return deploy, actions.Context(replica_sets=(new, old), default_storage_class="standard", now=NOW)


def evidence(target_kind: str = "Deployment", name: str = "web", **fields: Any) -> models.Evidence:
    return models.Evidence(
        target=models.ObjectRef(kind=target_kind, namespace="shop", name=name), collectedAt=NOW, **fields
    )


def diagnosis(category: str, *lines: str) -> models.Diagnosis:
    return models.Diagnosis(category=category, summary="s", evidence=list(lines), confidence=0.9, source="rules")


def kinds(plans: list[models.Plan]) -> list[tuple[str, dict[str, Any]]]:
    return [(p.actions[0].kind, p.actions[0].params) for p in plans]


def test_image_pull_rolls_back_first_then_sets_the_previous_image() -> None:
    deploy, ctx = history()
    plans, dropped = remedies.propose(diagnosis("image-pull"), evidence(), {"Deployment/web": deploy}, ctx)
    assert kinds(plans) == [("rollback", {}), ("set-image", {"container": "web", "image": "nginx:1.27"})]
    assert [p.rank for p in plans] == [1, 2] and dropped == []
    assert all(p.actions[0].risk == "low" and p.rationale for p in plans)


def test_without_history_nothing_is_guessed() -> None:
    deploy = factories.deployment("shop", "web", "nginx:1.277")
    plans, _ = remedies.propose(diagnosis("image-pull"), evidence(), {"Deployment/web": deploy}, actions.Context())
    assert plans == []


def test_oom_doubles_the_limit_within_bounds() -> None:
    deploy, _ = history(bad_image="nginx:1.27")
    rs = factories.replicaset(deploy, "7b9c6d5f4f")
    pod = factories.pod(
        rs,
        "abcde",
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restarts=3,
    )
    plans, _ = remedies.propose(
        diagnosis("oom-killed"), evidence(pods=[ev.summarize_pod(pod)]), {"Deployment/web": deploy}, actions.Context()
    )
    assert kinds(plans) == [("set-resources", {"container": "web", "limits": {"memory": "200Mi"}})]


def test_probe_on_an_undeclared_port_is_pointed_at_the_declared_one() -> None:
    deploy, ctx = history(bad_image="nginx:1.27")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": 9898}]
    container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}}
    plans, _ = remedies.propose(diagnosis("probe-failure"), evidence(), {"Deployment/web": deploy}, ctx)
    assert kinds(plans)[0] == ("set-probe", {"container": "web", "probe": "livenessProbe", "port": "http"})


def test_service_selector_is_aligned_with_the_likely_backend() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"selector": {"app": "check-out"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    backend = factories.pod(
        factories.replicaset(factories.deployment("shop", "checkout", "whoami"), "6d4cf56db6"),
        "abcde",
        state={"running": {}},
        phase="Running",
        ready=True,
    )
    summary = models.ServiceSummary(name="checkout", selector={"app": "check-out"})
    plans, _ = remedies.propose(
        diagnosis("service-selector-mismatch"),
        evidence("Service", "checkout", service=summary, namespacePods=[ev.summarize_pod(backend)]),
        {"Service/checkout": service},
        actions.Context(),
    )
    assert kinds(plans) == [("patch-service", {"selector": {"app": "checkout"}})]


def test_escalation_categories_get_no_plan() -> None:
    deploy, ctx = history()
    for category in ("missing-env", "unknown"):
        plans, dropped = remedies.propose(diagnosis(category), evidence(), {"Deployment/web": deploy}, ctx)
        assert plans == [] and "a human must decide" in dropped[0]
    # A missing Secret that the previous revision also referenced: a rollback would not help.
    secret_ref = {"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "ledger-db", "key": "p"}}}]}
    deploy["spec"]["template"]["spec"]["containers"][0].update(secret_ref)
    for rs in ctx.replica_sets:
        rs["spec"]["template"]["spec"]["containers"][0].update(secret_ref)
    plans, _ = remedies.propose(
        diagnosis("missing-config", 'pod p: secret "ledger-db" not found'), evidence(), {"Deployment/web": deploy}, ctx
    )
    assert plans == []


def test_unbound_claim_is_recreated_with_the_default_class() -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop"},
        "spec": {"storageClassName": "fast-ssd", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }
    deploy, ctx = history(bad_image="nginx:1.27")
    claims = [models.ClaimSummary(name="data", phase="Pending", storageClass="fast-ssd", storageClassExists=False)]
    plans, _ = remedies.propose(
        diagnosis("pvc-pending"),
        evidence(claims=claims),
        {"Deployment/web": deploy, "PersistentVolumeClaim/data": claim},
        ctx,
    )
    assert kinds(plans) == [("recreate-pvc", {"storageClassName": "standard"})]
    assert plans[0].actions[0].target.kind == "PersistentVolumeClaim"
