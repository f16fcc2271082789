"""``deploy/k8sgpt`` against what K8sGPT defines.

* The ``K8sGPT`` resource (``deploy/k8sgpt/k8sgpt.yaml``) is applied to the REAL API server with server-side apply
  and strict field validation (``kubectl apply --server-side --validate=strict``: the API server's
  ``fieldValidation=Strict``) after ``tests/data/k8sgpt-crd.yaml`` (K8sGPT's CRD schema, written from the
  K8sGPT operator's sources; see its header) is installed: every field must be one K8sGPT declares, every value
  must pass its enums and patterns. Negative controls prove the check can fail: a misspelt field and the
  ``ollama`` backend name (which the operator's enum does not have) are refused, naming the culprit.
* The same manifest is walked offline against the same schema, so a wrong field is caught without the real tier.
* ``deploy/k8sgpt/values.yaml`` may only use keys of the K8sGPT operator chart's values (key tree below).
* The analyzer filters (if set) must be K8sGPT analyzers whose Results AEGIS acts on.
* The README's install commands name K8sGPT's Helm repository, chart and the manifest's namespace.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from aegis import k8sgpt
from aegis.sim import controlplane

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy/k8sgpt/k8sgpt.yaml"
VALUES = ROOT / "deploy/k8sgpt/values.yaml"
README = ROOT / "deploy/k8sgpt/README.md"
CRD = ROOT / "tests/data/k8sgpt-crd.yaml"
CRD_NAME = "k8sgpts.core.k8sgpt.ai"

# Keys of k8sgpt-ai/k8sgpt-operator's chart/operator/values.yaml at commit 006cab5760a1d19046f7ae4c5546d2a6e2d7a06a
# (controllerManager.manager.image.tag v0.2.25; release-please bumps the chart version with it, so chart 0.2.25).
# `serviceMonitor.namespace` and `grafanaDashboard.namespace` are commented out there and read by the templates.
# ANY marks a free-form map (labels, annotations, resources, security contexts); None marks a leaf.
ANY = object()
CHART_VALUES: dict[str, Any] = {
    "interplex": {"enabled": None},  # the condition of the interplex subchart
    "serviceMonitor": {"enabled": None, "additionalLabels": ANY, "namespace": None},
    "grafanaDashboard": {
        "enabled": None,
        "namespace": None,
        "folder": {"annotation": None, "name": None},
        "label": {"key": None, "value": None},
        "grafanaOperator": {"enabled": None, "matchLabels": ANY},
    },
    "controllerManager": {
        "annotations": ANY,
        "kubeRbacProxy": {
            "containerSecurityContext": ANY,
            "image": {"repository": None, "tag": None},
            "resources": ANY,
        },
        "manager": {
            "sinkWebhookTimeout": None,
            "enableResultLogging": None,
            "containerSecurityContext": ANY,
            "image": {"repository": None, "tag": None},
            "resources": ANY,
        },
        "replicas": None,
        "nodeSelector": ANY,
        "podSecurityContext": ANY,
    },
    "kubernetesClusterDomain": None,
    "metricsService": {"ports": None, "type": None},
}

# K8sGPT's analyzer names (what spec.filters selects), from k8sgpt-ai/k8sgpt pkg/analyzer/analyzer.go
# (coreAnalyzerMap and additionalAnalyzerMap, stored version 002fdff8c1b391630fe5c8cf8bb39ecbccb34e89).
K8SGPT_ANALYZERS = frozenset(
    {
        # core
        "Pod",
        "DaemonSet",
        "Deployment",
        "ReplicaSet",
        "PersistentVolumeClaim",
        "Service",
        "Ingress",
        "StatefulSet",
        "Job",
        "CronJob",
        "Node",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ConfigMap",
        # additional
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Log",
        "GatewayClass",
        "Gateway",
        "HTTPRoute",
        "Storage",
        "Security",
        "ClusterCatalog",
        "ClusterExtension",
        "ClusterServiceVersion",
        "Subscription",
        "InstallPlan",
        "CatalogSource",
        "OperatorGroup",
        "ValidatingAdmissionPolicy",
    }
)
# The kind an analyzer writes into its Results when it is not its own name (the Log analyzer reports Pods).
RESULT_KIND = {"Log": "Pod"}


def _manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def _spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def unknown_keys(values: Any, tree: Any, path: str = "") -> list[str]:
    """Paths in ``values`` that ``tree`` does not define (``ANY`` accepts anything below it)."""
    if tree is ANY or not isinstance(values, Mapping):
        return []
    if not isinstance(tree, Mapping):
        return [f"{path}.{key}".lstrip(".") for key in values]  # keys below a leaf
    found: list[str] = []
    for key, value in values.items():
        where = f"{path}.{key}".lstrip(".")
        if key not in tree:
            found.append(where)
        else:
            found.extend(unknown_keys(value, tree[key], where))
    return found


def schema_problems(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """What the parts of a structural schema this manifest needs (types, properties, enums) say against ``value``."""
    kind = schema.get("type")
    types = {"object": Mapping, "array": list, "string": str, "boolean": bool}
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = kind is None or isinstance(value, types[kind])
    if not ok:
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    problems: list[str] = []
    if kind == "object" and isinstance(value, Mapping):
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None and key not in properties:
                problems.append(f"{path}.{key}: field not declared in schema")
            elif properties is not None:
                problems.extend(schema_problems(item, properties[key], f"{path}.{key}"))
            elif isinstance(schema.get("additionalProperties"), Mapping):
                problems.extend(schema_problems(item, schema["additionalProperties"], f"{path}.{key}"))
        problems.extend(f"{path}.{key}: required" for key in schema.get("required", []) if key not in value)
    if kind == "array" and isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems.extend(schema_problems(item, schema["items"], f"{path}[{index}]"))
    return problems


# --- the K8sGPT resource against K8sGPT's CRD, offline ---------------------------------------------------


def test_manifest_uses_only_fields_the_k8sgpt_crd_defines() -> None:
    manifest = _manifest()
    assert manifest["apiVersion"] == "core.k8sgpt.ai/v1alpha1"
    assert manifest["kind"] == "K8sGPT"
    assert schema_problems(manifest["spec"], _spec_schema(), "spec") == []
    # The walker can fail: a misspelt field and K8sGPT's CLI backend name that the operator does not accept.
    broken = copy.deepcopy(manifest["spec"])
    broken["ai"]["temprature"] = 0.2
    broken["ai"]["backend"] = "ollama"
    problems = schema_problems(broken, _spec_schema(), "spec")
    assert any(p.startswith("spec.ai.temprature: field not declared") for p in problems), problems
    assert any(p.startswith("spec.ai.backend: 'ollama' is not one of") for p in problems), problems


def test_manifest_points_at_a_local_ollama() -> None:
    ai = _manifest()["spec"]["ai"]
    assert ai["backend"] == "localai"  # K8sGPT's OpenAI-compatible client: Ollama's /v1 endpoint
    assert ai["baseUrl"] == "http://ollama.ollama.svc.cluster.local:11434/v1"
    assert "secret" not in ai  # Ollama needs no API key


# --- the K8sGPT resource against K8sGPT's CRD, on the real API server ------------------------------------


def _kubectl(
    kubeconfig: pathlib.Path, cache: pathlib.Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _apply(kubeconfig: pathlib.Path, cache: pathlib.Path, manifest: str) -> subprocess.CompletedProcess[str]:
    """Server-side apply with strict field validation; retried while the new kind is not yet discoverable."""
    args = ("apply", "--server-side", "--field-manager=aegis-test", "--validate=strict", "-f", "-")
    deadline = time.monotonic() + 30
    while True:
        out = _kubectl(kubeconfig, cache, *args, stdin=manifest)
        if "no matches for kind" not in out.stderr or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


class Installed:
    """The K8sGPT CRD on the real API server, and the manifest's namespace."""

    def __init__(self, kubeconfig: pathlib.Path, cache: pathlib.Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.cache = cache
        self.namespace = namespace

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _kubectl(self.kubeconfig, self.cache, *args, stdin=stdin)

    def apply(self, manifest: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        return _apply(self.kubeconfig, self.cache, yaml.safe_dump(dict(manifest), sort_keys=False))


@pytest.fixture(scope="module")
def installed(
    real_control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """Installs tests/data/k8sgpt-crd.yaml (Established) and the manifest's namespace; removes both afterwards,
    also on failure. A namespace that already existed (the emulated K8sGPT analyzer writes its Results there) is
    left in place: only the K8sGPT objects this module made are deleted from it."""
    namespace = _manifest()["metadata"]["namespace"]
    env = Installed(real_control_plane.kubeconfig, tmp_path_factory.mktemp("kubectl-cache"), namespace)
    created_namespace = False
    try:
        out = env.kubectl("apply", "-f", str(CRD))
        assert out.returncode == 0, out.stderr
        out = env.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
        assert out.returncode == 0, out.stderr
        if env.kubectl("get", "namespace", namespace).returncode != 0:
            out = env.kubectl("create", "namespace", namespace)
            assert out.returncode == 0 or "AlreadyExists" in out.stderr, out.stderr
            created_namespace = out.returncode == 0
        yield env
    finally:
        cleanup = [env.kubectl("delete", CRD_NAME, "--all", "-n", namespace, "--ignore-not-found", "--wait=true")]
        if created_namespace:
            cleanup.append(env.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=60s"))
        cleanup.append(env.kubectl("delete", "-f", str(CRD), "--ignore-not-found", "--timeout=60s"))
        failed = [out.stderr for out in cleanup if out.returncode != 0]
        assert not failed, f"cleanup failed: {failed}"


@pytest.mark.real
def test_real_server_accepts_the_manifest_with_strict_field_validation(installed: Installed) -> None:
    manifest = _manifest()
    out = _apply(installed.kubeconfig, installed.cache, MANIFEST.read_text())
    assert out.returncode == 0, out.stderr
    assert "serverside-applied" in out.stdout
    assert "unknown field" not in out.stderr.lower() and "warning" not in out.stderr.lower(), out.stderr
    name = manifest["metadata"]["name"]
    got = installed.kubectl("get", "k8sgpts.core.k8sgpt.ai", name, "-n", installed.namespace, "-o", "yaml")
    assert got.returncode == 0, got.stderr
    stored = yaml.safe_load(got.stdout)["spec"]
    # Nothing was pruned: every field of the manifest is stored as written (defaults are added around it).
    for key, value in manifest["spec"].items():
        if isinstance(value, Mapping):
            assert {k: stored[key].get(k) for k in value} == value, key
        else:
            assert stored[key] == value, key
    assert stored["ai"]["language"] == "english"  # the CRD's defaulting ran, so its schema is the one in force


@pytest.mark.real
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"temprature": 0.2}, ".spec.ai.temprature", id="unknown-field"),
        pytest.param({"backend": "ollama"}, "spec.ai.backend", id="ollama-is-no-operator-backend"),
    ],
)
def test_real_server_refuses_what_k8sgpt_does_not_define(
    installed: Installed, change: dict[str, Any], expected: str
) -> None:
    manifest = _manifest()
    manifest["metadata"]["name"] = "k8sgpt-refused"
    manifest["spec"]["ai"].update(change)
    out = installed.apply(manifest)
    assert out.returncode != 0, out.stdout
    assert expected in out.stderr, out.stderr
    if "backend" in change:
        assert "Unsupported value" in out.stderr and "localai" in out.stderr, out.stderr
    else:
        assert "field not declared in schema" in out.stderr or "unknown field" in out.stderr, out.stderr
    gone = installed.kubectl("get", "k8sgpts.core.k8sgpt.ai", "k8sgpt-refused", "-n", installed.namespace)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout + gone.stderr


# --- Helm values, analyzer filters, install commands -------------------------------------------------------


def test_values_use_only_keys_of_the_k8sgpt_operator_chart() -> None:
    values = yaml.safe_load(VALUES.read_text()) or {}
    assert isinstance(values, dict)
    assert unknown_keys(values, CHART_VALUES) == []
    # The check can fail: a misplaced key, a key below a leaf; free-form maps accept anything.
    bogus = {"serviceMonitor": {"enabled": {"really": True}, "interval": "30s"}, "manager": {}}
    assert sorted(unknown_keys(bogus, CHART_VALUES)) == [
        "manager",
        "serviceMonitor.enabled.really",
        "serviceMonitor.interval",
    ]
    assert unknown_keys({"controllerManager": {"annotations": {"a": "b"}}}, CHART_VALUES) == []


def test_analyzer_filters_are_ones_aegis_understands() -> None:
    filters = _manifest()["spec"].get("filters")
    if filters is None:
        pytest.skip("no filters: K8sGPT runs its default analyzers, and AEGIS skips the Results it does not handle")
    assert isinstance(filters, list) and filters, "an empty filter list"
    assert len(set(filters)) == len(filters), filters
    not_k8sgpt = [name for name in filters if name not in K8SGPT_ANALYZERS]
    assert not_k8sgpt == [], f"not K8sGPT analyzers: {not_k8sgpt}"
    unhandled = [name for name in filters if RESULT_KIND.get(name, name) not in k8sgpt.SUPPORTED_KINDS]
    assert unhandled == [], f"AEGIS does not act on the Results of: {unhandled}"


def test_readme_installs_k8sgpt_from_its_helm_repository_into_the_manifest_namespace() -> None:
    text = README.read_text()
    namespace = _manifest()["metadata"]["namespace"]
    assert "helm repo add k8sgpt https://charts.k8sgpt.ai/" in text
    install = " ".join(text[text.index("helm install") :].split("kubectl")[0].replace("\\\n", " ").split())
    assert "k8sgpt/k8sgpt-operator" in install
    assert f"-n {namespace}" in install and "--create-namespace" in install
    assert "-f deploy/k8sgpt/values.yaml" in install
    assert "kubectl apply -f deploy/k8sgpt/k8sgpt.yaml" in text
