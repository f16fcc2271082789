"""What a shadow copy takes along, and what it must never take: pure helpers of aegis.shadow."""

from __future__ import annotations

from aegis import shadow
from tests import factories


def test_references_found_in_workloads_and_in_patches() -> None:
    deploy = factories.deployment("shop", "api", "shop/api:1")
    spec = deploy["spec"]["template"]["spec"]
    spec["volumes"] = [
        {"name": "c", "configMap": {"name": "api-config"}},
        {"name": "d", "persistentVolumeClaim": {"claimName": "api-data"}},
        {"name": "t", "secret": {"secretName": "api-tls"}},
    ]
    spec["containers"][0]["envFrom"] = [{"secretRef": {"name": "api-env"}}]
    rollback_patch = [
        {
            "op": "replace",
            "path": "/spec/template",
            "value": {
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "legacy", "key": "x"}}}],
                        }
                    ]
                }
            },
        }
    ]
    config_maps, secrets, claims = shadow._references([deploy, rollback_patch])
    assert config_maps == {"api-config", "legacy"}
    assert secrets == {"api-tls", "api-env"}
    assert claims == {"api-data"}


def test_pull_secrets_and_service_accounts_come_along() -> None:
    deploy = factories.deployment("shop", "api", "registry.example.com/api:1")
    deploy["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    deploy["spec"]["template"]["spec"]["serviceAccountName"] = "api"
    assert shadow._pod_identity([deploy]) == ({"regcred"}, {"api"})
    plain = factories.deployment("shop", "web", "nginx:1.27")
    assert shadow._pod_identity([plain]) == (set(), set())


def test_copies_never_open_the_cluster_to_the_outside() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.9",
            "loadBalancerIP": "203.0.113.7",
            "externalIPs": ["203.0.113.8"],
            "ports": [{"port": 80, "nodePort": 30080}],
            "selector": {"app": "web"},
        },
    }
    copy = shadow._clean(service, "aegis-shadow-x-1-ab12-c")
    assert copy["spec"]["type"] == "ClusterIP"
    assert "loadBalancerIP" not in copy["spec"] and "externalIPs" not in copy["spec"]
    assert "clusterIP" not in copy["spec"] and "nodePort" not in copy["spec"]["ports"][0]
    assert copy["metadata"] == {"name": "web", "namespace": "aegis-shadow-x-1-ab12-c", "labels": {}, "annotations": {}}
    deploy = factories.deployment("shop", "api", "shop/api:1")
    assert shadow._clean(deploy, "s")["spec"]["replicas"] == 1  # one replica proves the fix, cheaply
