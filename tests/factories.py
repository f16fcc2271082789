"""Realistic Kubernetes and K8sGPT objects for tests (shapes as the real API and K8sGPT write them)."""

from __future__ import annotations

from typing import Any


def deployment(
    ns: str,
    name: str,
    image: str,
    *,
    labels: dict[str, str] | None = None,
    replicas: int = 2,
    ready: int = 0,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    container: dict[str, Any] = {"name": name, "image": image, "ports": [{"containerPort": 80}]}
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}, "requests": {"memory": memory_limit}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-deploy-{name}",
            "generation": 2,
            "labels": dict(labels),
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
        },
        "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas},
    }


def replicaset(deploy: dict[str, Any], pod_hash: str) -> dict[str, Any]:
    meta = deploy["metadata"]
    labels = {**deploy["spec"]["selector"]["matchLabels"], "pod-template-hash": pod_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "namespace": meta["namespace"],
            "uid": f"uid-rs-{meta['name']}-{pod_hash}",
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": deploy["spec"]["replicas"],
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": deploy["spec"]["template"]["spec"]},
        },
        "status": {"replicas": deploy["spec"]["replicas"], "readyReplicas": 0},
    }


def pod(
    rs: dict[str, Any],
    suffix: str,
    *,
    state: dict[str, Any],
    last_state: dict[str, Any] | None = None,
    restarts: int = 0,
    ready: bool = False,
    phase: str = "Pending",
) -> dict[str, Any]:
    meta = rs["metadata"]
    spec = rs["spec"]["template"]["spec"]
    container = spec["containers"][0]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{suffix}",
            "namespace": meta["namespace"],
            "uid": f"uid-pod-{meta['name']}-{suffix}",
            "labels": dict(rs["spec"]["selector"]["matchLabels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**spec, "nodeName": "sim-node-1"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": str(ready)}],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                    "started": ready,
                    "state": state,
                    "lastState": last_state or {},
                }
            ],
        },
    }


def image_pull_backoff(image: str) -> dict[str, Any]:
    return {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}


def event(
    ns: str,
    name: str,
    *,
    kind: str,
    obj: str,
    reason: str,
    message: str,
    type_: str = "Warning",
    count: int = 1,
    at: str = "2026-11-21T10:00:00Z",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": kind, "name": obj, "namespace": ns},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "source": {"component": "kubelet"},
    }


def result(
    ns: str,
    name: str,
    texts: list[str],
    *,
    kind: str = "Pod",
    lifecycle: str | None = None,
    result_ns: str = "k8sgpt-operator-system",
    masks: list[list[tuple[str, str]]] | None = None,
    parent: str = "",
) -> dict[str, Any]:
    """A Result as K8sGPT's operator writes it (name = spec.name without '-' and '/')."""
    spec_name = f"{ns}/{name}"
    errors: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        entry: dict[str, Any] = {"text": text}
        if masks and masks[index]:
            entry["sensitive"] = [{"unmasked": u, "masked": m} for u, m in masks[index]]
        errors.append(entry)
    return {
        "apiVersion": "core.k8sgpt.ai/v1alpha1",
        "kind": "Result",
        "metadata": {
            "name": spec_name.replace("-", "").replace("/", ""),
            "namespace": result_ns,
            "labels": {
                "k8sgpts.k8sgpt.ai/name": "k8sgpt-sample",
                "k8sgpts.k8sgpt.ai/namespace": result_ns,
                "k8sgpts.k8sgpt.ai/backend": "localai",
            },
        },
        "spec": {
            "autoRemediationStatus": {},
            "backend": "localai",
            "details": "",
            "error": errors,
            "kind": kind,
            "name": spec_name,
            "parentObject": parent,
        },
        "status": {"lifecycle": lifecycle} if lifecycle else {},
    }
