"""K8sGPT Result intake: real Result shapes (operator CRs and CLI JSON), malformed ones, signatures, owners."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aegis import k8sgpt, models
from tests import factories

# Real shapes, as in shared/reference/k8sgpt-results.md §4.
OPERATOR_RESULT = {
    "apiVersion": "core.k8sgpt.ai/v1alpha1",
    "kind": "Result",
    "metadata": {
        "name": "shopfrontend7b9c6d5f4x8k2p",
        "namespace": "k8sgpt-operator-system",
        "labels": {"k8sgpts.k8sgpt.ai/backend": "openai", "k8sgpts.k8sgpt.ai/name": "k8sgpt-sample"},
        "ownerReferences": [
            {
                "apiVersion": "core.k8sgpt.ai/v1alpha1",
                "kind": "K8sGPT",
                "name": "k8sgpt-sample",
                "uid": "0b6f3c1e-8d2a-4f57-9a61-3c2e7d9f4b10",
                "controller": True,
            }
        ],
    },
    "spec": {
        "autoRemediationStatus": {},
        "backend": "openai",
        "details": "Error: The image tag cannot be pulled.\nSolution: 1. Check that the tag exists.",
        "error": [{"text": 'Back-off pulling image "registry.example.com/shop/frontend:v2.3.9"'}],
        "kind": "Pod",
        "name": "shop/frontend-7b9c6d5f4-x8k2p",
        "parentObject": "",
    },
    "status": {
        "contentHash": "e25f226e86a6eaaeba37e1c36589a216e6e04d94086a83d421fce800730dea6a",
        "lifecycle": "historical",
    },
}
SERVICE_RESULT = {
    "metadata": {"name": "shopcheckout", "namespace": "k8sgpt-operator-system"},
    "spec": {
        "autoRemediationStatus": {},
        "backend": "openai",
        "details": "",
        "kind": "Service",
        "name": "shop/checkout",
        "parentObject": "",
        "error": [
            {
                "text": "Service has no endpoints, expected label app=checkout",
                "sensitive": [
                    {"masked": "JDh8", "unmasked": "app"},
                    {"masked": "e3htNU1zbCY=", "unmasked": "checkout"},
                ],
            }
        ],
    },
    "status": {},
}
CLI_ITEM = {  # one item of `k8sgpt analyze -o json`: capitalised error keys, parentObject filled
    "kind": "Pod",
    "name": "payments/worker-6f7b9c8d4-x2lqp",
    "details": "",
    "parentObject": "Deployment/worker",
    "error": [
        {
            "Text": "the last termination reason is OOMKilled container=worker pod=worker-6f7b9c8d4-x2lqp",
            "KubernetesDoc": "",
            "Sensitive": [],
        }
    ],
}


def test_operator_result_parses() -> None:
    finding = k8sgpt.parse_result(OPERATOR_RESULT)
    assert (finding.kind, finding.namespace, finding.name) == ("Pod", "shop", "frontend-7b9c6d5f4-x8k2p")
    assert finding.result_key == "k8sgpt-operator-system/shopfrontend7b9c6d5f4x8k2p"
    assert finding.texts == ['Back-off pulling image "registry.example.com/shop/frontend:v2.3.9"']
    assert finding.lifecycle == "historical"
    assert finding.parent_object == ""
    assert finding.details.startswith("Error:")


def test_masks_are_kept() -> None:
    finding = k8sgpt.parse_result(SERVICE_RESULT)
    assert finding.kind == "Service"
    assert [(m.unmasked, m.masked) for m in finding.failures[0].sensitive] == [
        ("app", "JDh8"),
        ("checkout", "e3htNU1zbCY="),
    ]


def test_cli_json_item_parses_with_capitalised_keys() -> None:
    finding = k8sgpt.parse_result({"spec": CLI_ITEM})
    assert finding.parent_object == "Deployment/worker"
    assert "OOMKilled" in finding.texts[0]


def test_log_analyzer_name_with_container() -> None:
    body = copy.deepcopy(OPERATOR_RESULT)
    body["spec"]["name"] = "shop/frontend-7b9c6d5f4-x8k2p/frontend"
    finding = k8sgpt.parse_result(body)
    assert (finding.name, finding.container) == ("frontend-7b9c6d5f4-x8k2p", "frontend")


def _broken(path: list[str], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(OPERATOR_RESULT)
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_broken(["spec"], _DELETE), "spec is missing"),
        (_broken(["spec", "kind"], _DELETE), "spec.kind is missing"),
        (_broken(["spec", "kind"], "Node"), "not something AEGIS remediates"),
        (_broken(["spec", "kind"], "ValidatingWebhookConfiguration"), "not something AEGIS remediates"),
        (_broken(["spec", "name"], ""), "spec.name is missing"),
        (_broken(["spec", "name"], "no-namespace"), "is not '<namespace>/<name>'"),
        (_broken(["spec", "name"], "/webhook-entry"), "no valid namespace"),
        (_broken(["spec", "name"], "Shop/UPPER"), "no valid namespace"),
        (_broken(["spec", "name"], "shop/bad_name"), "no valid object name"),
        (_broken(["spec", "error"], None), "spec.error is missing"),
        (_broken(["spec", "error"], []), "spec.error is empty"),
        (_broken(["spec", "error"], "text"), "must be a list"),
        (_broken(["spec", "error"], [{"text": ""}]), "text is missing or empty"),
        (_broken(["spec", "error"], ["just a string"]), "must be an object"),
        ("not an object", "must be an object"),
    ],
)
def test_malformed_results_are_rejected_with_a_reason(body: Any, reason: str) -> None:
    with pytest.raises(k8sgpt.InvalidResult, match=reason):
        k8sgpt.parse_result(body)


def test_signature_is_the_same_for_sibling_pods_and_cycles() -> None:
    a = factories.result(
        "pay",
        "worker-6f7b9c8d4-x2lqp",
        ["the last termination reason is OOMKilled container=worker pod=worker-6f7b9c8d4-x2lqp"],
    )
    b = factories.result(
        "pay",
        "worker-6f7b9c8d4-zz9bq",
        ["the last termination reason is OOMKilled container=worker pod=worker-6f7b9c8d4-zz9bq"],
    )
    assert k8sgpt.signature(k8sgpt.parse_result(a)) == k8sgpt.signature(k8sgpt.parse_result(b))
    d1 = factories.result(
        "shop",
        "cart",
        ["Deployment shop/cart has 3 replicas but 1 are available with status running"],
        kind="Deployment",
    )
    d2 = factories.result(
        "shop",
        "cart",
        ["Deployment shop/cart has 3 replicas but 0 are available with status running"],
        kind="Deployment",
    )
    assert k8sgpt.signature(k8sgpt.parse_result(d1)) == k8sgpt.signature(k8sgpt.parse_result(d2))


def test_signature_keeps_what_identifies_the_problem() -> None:
    tag_a = factories.result("shop", "web-7b9c6d5f4-x8k2p", ['Back-off pulling image "nginx:1.25.3"'])
    tag_b = factories.result("shop", "web-7b9c6d5f4-x8k2p", ['Back-off pulling image "nginx:1.25.4"'])
    assert k8sgpt.signature(k8sgpt.parse_result(tag_a)) != k8sgpt.signature(k8sgpt.parse_result(tag_b))
    exit_1 = k8sgpt.normalize_text("the termination reason is Error exitCode=1 container=app pod=app-7b9c6d5f4-x8k2p")
    assert "exitCode=1" in exit_1 and "pod=<pod>" in exit_1


def test_fingerprint_is_stable_and_target_specific() -> None:
    web = models.ObjectRef(kind="Deployment", namespace="shop", name="web")
    api = models.ObjectRef(kind="Deployment", namespace="shop", name="api")
    texts = ["b", "a", "a"]
    assert k8sgpt.fingerprint(web, texts) == k8sgpt.fingerprint(web, ["a", "b"])
    assert k8sgpt.fingerprint(web, texts) != k8sgpt.fingerprint(api, texts)
    assert len(k8sgpt.fingerprint(web, texts)) == 16


class FakeReader:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.reads: list[tuple[str, str, str]] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, namespace, name))
        return self.objects.get((kind, namespace, name))

    async def list(self, kind: str, namespace: str, *, selector: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        wanted = (selector or {}).get("matchLabels") or {}
        return [
            obj
            for (k, ns, _), obj in self.objects.items()
            if k == kind
            and ns == namespace
            and all((obj["metadata"].get("labels") or {}).get(key) == value for key, value in wanted.items())
        ]


def _deployment_chain() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deploy = factories.deployment("shop", "frontend", "nginx:bad")
    rs = factories.replicaset(deploy, "7b9c6d5f4")
    pod = factories.pod(rs, "x8k2p", state=factories.image_pull_backoff("nginx:bad"))
    return deploy, rs, pod


async def test_pod_resolves_to_its_deployment_through_owner_references() -> None:
    deploy, rs, pod = _deployment_chain()
    finding = k8sgpt.parse_result(factories.result("shop", pod["metadata"]["name"], ["x"]))
    target, chain, how = await k8sgpt.resolve_target(finding, FakeReader(deploy, rs, pod))
    assert (target.kind, target.name, target.uid) == ("Deployment", "frontend", "uid-deploy-frontend")
    assert [(ref.kind, ref.name) for ref in chain] == [
        ("Pod", "frontend-7b9c6d5f4-x8k2p"),
        ("ReplicaSet", "frontend-7b9c6d5f4"),
    ]
    assert how == "live object"


async def test_gone_pod_resolves_through_parent_object_when_present() -> None:
    deploy, rs, _ = _deployment_chain()
    finding = k8sgpt.parse_result(
        factories.result("shop", "frontend-7b9c6d5f4-gone1", ["x"], parent="Deployment/frontend")
    )
    target, _, how = await k8sgpt.resolve_target(finding, FakeReader(deploy, rs))
    assert (target.kind, target.name, how) == ("Deployment", "frontend", "parentObject")


async def test_gone_pod_resolves_through_its_replicaset_name() -> None:
    deploy, rs, _ = _deployment_chain()
    finding = k8sgpt.parse_result(factories.result("shop", "frontend-7b9c6d5f4-gone1", ["x"]))
    target, chain, how = await k8sgpt.resolve_target(finding, FakeReader(deploy, rs))
    assert (target.kind, target.name) == ("Deployment", "frontend")
    assert chain[0].name == "frontend-7b9c6d5f4-gone1"
    assert how == "pod name (pod gone)"


async def test_unresolvable_object_is_reported() -> None:
    finding = k8sgpt.parse_result(factories.result("shop", "ghost-7b9c6d5f4-gone1", ["x"]))
    with pytest.raises(k8sgpt.InvalidResult, match="no longer exists"):
        await k8sgpt.resolve_target(finding, FakeReader())


async def test_service_and_bare_pod_are_their_own_target() -> None:
    service = {"kind": "Service", "metadata": {"name": "checkout", "namespace": "shop"}, "spec": {}}
    bare = {"kind": "Pod", "metadata": {"name": "debug", "namespace": "shop"}, "spec": {}}
    reader = FakeReader(service, bare)
    target, chain, _ = await k8sgpt.resolve_target(k8sgpt.parse_result(SERVICE_RESULT), reader)
    assert (target.kind, target.name, chain) == ("Service", "checkout", [])
    target, _, how = await k8sgpt.resolve_target(k8sgpt.parse_result(factories.result("shop", "debug", ["x"])), reader)
    assert (target.kind, how) == ("Pod", "bare pod")


def test_incident_names_are_readable_and_bounded() -> None:
    ref = models.ObjectRef(kind="Deployment", namespace="shop", name="frontend")
    assert k8sgpt.incident_base_name(ref) == "deployment-frontend"
    long_ref = models.ObjectRef(kind="StatefulSet", namespace="shop", name="x" * 250)
    assert len(k8sgpt.incident_base_name(long_ref)) <= 240


async def test_service_with_unready_backends_is_a_symptom_of_the_workload() -> None:
    deploy, rs, pod = _deployment_chain()
    service = {
        "kind": "Service",
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {"selector": {"app": "frontend"}},
    }
    finding = k8sgpt.parse_result(
        factories.result(
            "shop",
            "frontend",
            ["Service has not ready endpoints, pods: [Pod/frontend-7b9c6d5f4-x8k2p], expected 1"],
            kind="Service",
        )
    )
    target, chain, how = await k8sgpt.resolve_target(finding, FakeReader(deploy, rs, pod, service))
    assert (target.kind, target.name, how) == ("Deployment", "frontend", "backends not ready")
    assert [ref.kind for ref in chain] == ["Service", "Pod", "ReplicaSet"]


async def test_service_whose_backends_are_ready_or_absent_is_its_own_target() -> None:
    deploy, rs, pod = _deployment_chain()
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    service = {
        "kind": "Service",
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {"selector": {"app": "frontend"}},
    }
    typo = {
        "kind": "Service",
        "metadata": {"name": "typo", "namespace": "shop"},
        "spec": {"selector": {"app": "front-end"}},
    }
    reader = FakeReader(deploy, rs, pod, service, typo)
    for name in ("frontend", "typo"):
        finding = k8sgpt.parse_result(factories.result("shop", name, ["Service has no endpoints"], kind="Service"))
        target, chain, _ = await k8sgpt.resolve_target(finding, reader)
        assert (target.kind, target.name, chain) == ("Service", name, [])


async def test_claim_that_pods_wait_for_belongs_to_their_workload() -> None:
    deploy, rs, pod = _deployment_chain()
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "frontend-data"}}]
    claim = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "frontend-data", "namespace": "shop"},
        "spec": {"storageClassName": "fast-ssd"},
    }
    lonely = {"kind": "PersistentVolumeClaim", "metadata": {"name": "unused", "namespace": "shop"}, "spec": {}}
    reader = FakeReader(deploy, rs, pod, claim, lonely)
    finding = k8sgpt.parse_result(
        factories.result(
            "shop", "frontend-data", ['storageclass.storage.k8s.io "fast-ssd" not found'], kind="PersistentVolumeClaim"
        )
    )
    target, _, how = await k8sgpt.resolve_target(finding, reader)
    assert (target.kind, target.name, how) == ("Deployment", "frontend", "pods wait for the claim")
    finding = k8sgpt.parse_result(factories.result("shop", "unused", ["x"], kind="PersistentVolumeClaim"))
    target, _, _ = await k8sgpt.resolve_target(finding, reader)
    assert (target.kind, target.name) == ("PersistentVolumeClaim", "unused")


async def test_claim_reported_before_any_pod_exists_belongs_to_the_workload_that_mounts_it() -> None:
    """Seen on the real control plane: a new namespace's pods wait for its ServiceAccount, so K8sGPT may report
    the claim before the Deployment has a single pod. The pod template says whose claim it is."""
    deploy, _, _ = _deployment_chain()
    deploy["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "frontend-data"}}
    ]
    claim = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "frontend-data", "namespace": "shop"},
        "spec": {"storageClassName": "fast-ssd"},
    }
    # Listed objects from a real API server carry no kind: the kind comes from what was listed.
    reader = FakeReader(claim)
    reader.objects[("Deployment", "shop", "frontend")] = {k: v for k, v in deploy.items() if k != "kind"}
    finding = k8sgpt.parse_result(
        factories.result(
            "shop", "frontend-data", ['storageclass.storage.k8s.io "fast-ssd" not found'], kind="PersistentVolumeClaim"
        )
    )
    target, chain, how = await k8sgpt.resolve_target(finding, reader)
    assert (target.kind, target.name, how) == ("Deployment", "frontend", "its pod template mounts the claim")
    assert [ref.kind for ref in chain] == ["PersistentVolumeClaim"]
