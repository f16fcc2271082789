"""What a shadow copy takes along, and what it must never take: pure helpers of aegis.shadow."""

from __future__ import annotations

import base64
import json
from typing import Any

from aegis import config, shadow
from aegis.sim import validation
from tests import factories
from tests.unit import real_shapes


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


def _secret(name: str, kind: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "type": kind,
        "data": encoded,
    }


async def test_a_shadow_gets_the_identity_and_secrets_of_the_workload_and_of_its_fix() -> None:
    """Everything a pod of the workload — or of the revision a rollback returns to — needs to be created, pull and
    start exists in the shadow before the workload: its ServiceAccounts, its pull credentials (real values) and
    the Secrets it reads, mirrored with placeholders the API server accepts for their type."""
    deploy = factories.deployment("shop", "api", "registry.example.com/api:2")
    spec = deploy["spec"]["template"]["spec"]
    spec["serviceAccountName"] = "api"
    spec["imagePullSecrets"] = [{"name": "regcred"}]
    spec["containers"][0]["env"] = [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "mode"}}},  # missing: stays so
    ]
    spec["volumes"] = [{"name": "docker", "secret": {"secretName": "builder-auth"}}]  # a build tool's registry login
    old_template = {
        "metadata": {"labels": {"app": "api"}},
        "spec": {
            "serviceAccountName": "api-v1",
            "imagePullSecrets": [{"name": "old-regcred"}],
            "containers": [{"name": "api", "image": "registry.example.com/api:1"}],
        },
    }
    rollback = [{"op": "replace", "path": "/spec/template", "value": old_template}]
    auths = '{"auths":{"registry.example.com":{"auth":"dXNlcjpodW50ZXIy"}}}'
    cluster = real_shapes.RealShapedCluster(
        _secret("regcred", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": auths}),
        _secret("old-regcred", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": auths}),
        _secret("db", "Opaque", {"password": "hunter2hunter2"}),
        _secret("builder-auth", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": auths}),
    )
    verifier = shadow.ShadowVerifier(cluster, config.Settings())  # type: ignore[arg-type]
    details: list[str] = []
    ns = "aegis-shadow-a1b2c3d4-1-ab12-c"
    await verifier._copy("shop", ns, {"Deployment/api": deploy}, details, [rollback])

    created = [(kind, body["metadata"]["name"]) for kind, _, body in cluster.created]
    assert created.index(("ServiceAccount", "api")) < created.index(("Deployment", "api"))
    assert created.index(("ServiceAccount", "api-v1")) < created.index(("Deployment", "api"))
    bodies = {(kind, body["metadata"]["name"]): body for kind, _, body in cluster.created}
    for name in ("regcred", "old-regcred"):  # pulls need the real credentials
        assert base64.b64decode(bodies[("Secret", name)]["data"][".dockerconfigjson"]).decode() == auths
        assert bodies[("Secret", name)]["type"] == "kubernetes.io/dockerconfigjson"
        assert created.index(("Secret", name)) < created.index(("Deployment", "api"))
    mirrored = bodies[("Secret", "db")]
    assert base64.b64decode(mirrored["data"]["password"]).decode() == shadow.PLACEHOLDER
    builder = bodies[("Secret", "builder-auth")]
    assert "dXNlcjpodW50ZXIy" not in str(builder)
    assert json.loads(base64.b64decode(builder["data"][".dockerconfigjson"])) == {"auths": {}}
    for body in (mirrored, builder, bodies[("Secret", "regcred")]):
        assert validation.validate("Secret", body, None) == []  # what the API server requires of the type
    assert ("ConfigMap", "gone") not in bodies
    assert details == [
        f"{ns}: copied 1 object(s), 0 ConfigMap(s), 2 Secret(s) with placeholder values, "
        "2 image pull Secret(s), 2 ServiceAccount(s)"
    ]


def test_placeholders_parse_for_the_secret_types_that_the_api_server_parses() -> None:
    docker = _secret("a", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": '{"auths":{"x":{}}}'})
    legacy = _secret("b", "kubernetes.io/dockercfg", {".dockercfg": '{"x":{}}'})
    opaque = _secret("c", "Opaque", {".dockerconfigjson": "{}", "token": "t0ps3cret"})
    for secret in (docker, legacy, opaque):
        mirror = {**secret, "data": shadow.placeholder_data(secret)}
        assert set(mirror["data"]) == set(secret["data"])
        assert validation.validate("Secret", mirror, None) == []
    decoded = {key: base64.b64decode(value).decode() for key, value in shadow.placeholder_data(opaque).items()}
    assert decoded == {".dockerconfigjson": shadow.PLACEHOLDER, "token": shadow.PLACEHOLDER}  # Opaque: any bytes
    old_style = {**docker, "data": {".dockerconfigjson": base64.b64encode(shadow.PLACEHOLDER.encode()).decode()}}
    assert validation.validate("Secret", old_style, None)  # refused, as kube-apiserver refuses it
