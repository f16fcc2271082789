"""Incident scenarios (``examples/incidents/<name>/``): loading, applying like ``kubectl apply``, checking.

A scenario is ``manifests.yaml`` (+ optional ``change.yaml`` applied once the
manifests are healthy, optional ``images.yaml`` for the emulator) and
``expected.yaml`` (target, category, acceptable actions, heal or escalate).
Used by ``aegis.demo`` and the e2e tests.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import yaml

from aegis.sim import client

_BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "networking.k8s.io",
    "policy",
    "storage.k8s.io",
    "autoscaling",
    "rbac.authorization.k8s.io",
    "discovery.k8s.io",
}


class ScenarioError(ValueError):
    """A scenario folder that cannot be used; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class Expected:
    target_kind: str
    target_name: str
    category: str
    actions: tuple[str, ...]
    outcome: Literal["heal", "escalate"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    path: pathlib.Path
    namespace: str
    manifests: tuple[dict[str, Any], ...]
    change: tuple[dict[str, Any], ...]
    expected: Expected
    images: pathlib.Path | None


def _documents(path: pathlib.Path) -> tuple[dict[str, Any], ...]:
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            raise ScenarioError(f"{path}: every document needs kind and metadata.name")
        if doc["kind"] not in client.KINDS:
            raise ScenarioError(f"{path}: kind {doc['kind']} is not supported by the emulated cluster")
    return tuple(docs)


def load(path: pathlib.Path) -> Scenario:
    path = path.resolve()
    if not (path / "manifests.yaml").is_file():
        raise ScenarioError(f"{path}: no manifests.yaml")
    if not (path / "expected.yaml").is_file():
        raise ScenarioError(f"{path}: no expected.yaml")
    manifests = _documents(path / "manifests.yaml")
    change = _documents(path / "change.yaml") if (path / "change.yaml").is_file() else ()
    namespaces = {doc["metadata"]["name"] for doc in manifests if doc["kind"] == "Namespace"}
    namespaces |= {
        doc["metadata"].get("namespace")
        for doc in manifests + change
        if doc["kind"] != "Namespace" and client.KINDS[doc["kind"]][3]
    }
    namespaces.discard(None)
    if len(namespaces) != 1:
        raise ScenarioError(f"{path}: a scenario lives in exactly one namespace, found {sorted(namespaces)}")
    raw = yaml.safe_load((path / "expected.yaml").read_text()) or {}
    try:
        target = raw["target"]
        expected = Expected(
            target_kind=str(target["kind"]),
            target_name=str(target["name"]),
            category=str(raw["category"]),
            actions=tuple(raw.get("actions") or ()),
            outcome=raw["outcome"],
        )
    except (KeyError, TypeError) as exc:
        raise ScenarioError(f"{path}/expected.yaml: missing {exc}") from None
    if expected.outcome not in ("heal", "escalate"):
        raise ScenarioError(f"{path}/expected.yaml: outcome must be heal or escalate")
    images = path / "images.yaml"
    return Scenario(
        name=path.name,
        path=path,
        namespace=namespaces.pop(),
        manifests=manifests,
        change=change,
        expected=expected,
        images=images if images.is_file() else None,
    )


def discover(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.iterdir() if (p / "manifests.yaml").is_file())


async def apply(api: client.SimClient, docs: tuple[dict[str, Any], ...], namespace: str) -> None:
    """``kubectl apply`` for these documents: create what is missing, patch what exists."""
    for doc in docs:
        kind = doc["kind"]
        group, _, _, namespaced = client.KINDS[kind]
        ns = (doc["metadata"].get("namespace") or namespace) if namespaced else None
        body = {**doc, "metadata": {**doc["metadata"], **({"namespace": ns} if ns else {})}}
        current = await api.get(kind, ns, doc["metadata"]["name"])
        if current is None:
            await api.create(body, ns)
        else:
            patch_type = "strategic" if group in _BUILTIN_GROUPS else "merge"
            await api.patch(kind, ns, doc["metadata"]["name"], body, patch_type=patch_type)


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")  # what must be healthy before a change is applied


def healthy(obj: dict[str, Any] | None) -> bool:
    """A Deployment, StatefulSet or DaemonSet that rolled out completely and is Ready (``kubectl rollout status``;
    a DaemonSet: a pod on every node that should run one, updated and available)."""
    if obj is None:
        return False
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(obj["metadata"].get("generation") or 1):
        return False
    if "desiredNumberScheduled" in status or obj.get("kind") == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        counts = (status.get(key) for key in ("updatedNumberScheduled", "numberAvailable", "numberReady"))
        return desired > 0 and all(int(count or 0) == desired for count in counts)
    return int(status.get("readyReplicas") or 0) == replicas and int(status.get("updatedReplicas") or 0) == replicas
