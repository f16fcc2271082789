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


def incident(
    ns: str,
    workload: str,
    *,
    phase: str = "AwaitingApproval",
    image: str = "nginx:1.277",
    fixed_image: str = "nginx:1.27",
    container: str = "nginx",
    created: str = "2026-11-21T10:00:00Z",
) -> dict[str, Any]:
    """An AEGIS Incident about Deployment ``ns/workload`` whose image cannot be pulled, as the API returns it,
    with the status the workflow writes on the way to ``phase`` (AwaitingApproval, Resolved, Rejected or Diagnosed):
    a set-image plan verified in the shadow, the gate's pending / final decision, the applied action results."""
    name = f"deployment-{workload}"
    target = {
        "kind": "Deployment",
        "namespace": ns,
        "name": workload,
        "apiVersion": "apps/v1",
        "uid": f"uid-{workload}",
    }
    pod = f"{workload}-7b9c6d5f4-x8k2p"
    pull = f'Back-off pulling image "{image}"'
    action = {
        "kind": "set-image",
        "target": target,
        "params": {"container": container, "image": fixed_image},
        "risk": "low",
        "rationale": f"set container {container} back to {fixed_image}, the image of the previous revision",
    }
    diagnosis = {
        "category": "image-pull",
        "summary": f"Container {container} of Deployment {ns}/{workload} cannot start: image '{image}' cannot be "
        "pulled — the image or tag does not exist in the registry.",
        "evidence": [
            f"pod {pod} container {container}: ImagePullBackOff: {pull}",
            f"event Pod/{pod} Failed: Error: ErrImagePull",
            "k8sgpt: Service has not ready endpoints, pods: [Pod/" + pod + "], expected 1",
        ],
        "confidence": 0.95,
        "source": "rules",
        "rule": "image-pull",
    }
    timeline = [
        {"at": "2026-11-21T10:00:00.10Z", "stage": "intake", "message": f"opened from K8sGPT Result {pod}"},
        {"at": "2026-11-21T10:00:00.20Z", "stage": "gather", "message": "gathered 2 pod(s), 6 event(s), 0 log line(s)"},
        {
            "at": "2026-11-21T10:00:00.30Z",
            "stage": "diagnose",
            "message": "image-pull (confidence 0.95, rule image-pull)",
        },
    ]
    status: dict[str, Any] = {"phase": phase, "reason": "", "diagnosis": diagnosis, "timeline": timeline}
    spec_approval = {"decision": "Pending", "reason": ""}
    if phase == "Diagnosed":
        status["reason"] = "diagnosed as image-pull; the namespace is in observe mode"
        timeline.append({"at": "2026-11-21T10:00:00.40Z", "stage": "report", "message": "Diagnosed: observe mode"})
    else:
        plan = {"actions": [action], "rationale": action["rationale"], "rank": 1, "source": "rules"}
        status["plan"] = {"chosen": plan, "candidates": [], "dropped": []}
        status["verification"] = {
            "passed": True,
            "baselineReproduced": True,
            "candidateHealthy": True,
            "shadowNamespace": "aegis-shadow-a10974df-1-5e3d-c",
            "details": [
                "candidate: 1 action(s) applied with the production patch",
                f"baseline reproduced the failure: Deployment {workload}: 0/1 ready; container {container} not "
                "ready (ErrImagePull)",
                "candidate healthy over the stability window",
            ],
        }
        status["attempts"] = [{"rank": 1, "actions": ["set-image"], "passed": True}]
        why = f"namespace {ns} is in propose mode: a human decides"
        timeline += [
            {"at": "2026-11-21T10:00:00.40Z", "stage": "propose", "message": "1 candidate plan(s): #1 set-image"},
            {"at": "2026-11-21T10:00:04Z", "stage": "verify", "message": "plan #1 (set-image) passed in the shadow"},
            {
                "at": "2026-11-21T10:00:04.50Z",
                "stage": "gate",
                "message": f"waiting for approval ({why}): aegis approve {name} -n {ns}",
            },
        ]
        status["decision"] = {
            "verdict": "ask",
            "outcome": "pending",
            "identityVerified": False,
            "reason": why,
            "at": "2026-11-21T10:00:04.40Z",
        }
    if phase in ("Resolved", "Rejected"):
        verdict = "Approved" if phase == "Resolved" else "Rejected"
        spec_approval = {"decision": verdict, "reason": "checked the tag", "approvedBy": "jane@example.com"}
        status["decision"] = {
            "verdict": "ask",
            "outcome": verdict.lower(),
            "by": "jane@example.com",
            "identityVerified": True,
            "reason": "checked the tag",
            "at": "2026-11-21T10:07:00Z",
        }
        timeline.append(
            {"at": "2026-11-21T10:07:00Z", "stage": "gate", "message": f"{verdict.lower()} by jane@example.com"}
        )
    if phase == "Rejected":
        status["reason"] = "the fix was rejected by jane@example.com"
    if phase == "Resolved":
        containers = ["spec", "template", "spec", "containers"]
        patch: dict[str, Any] = {}
        undo: dict[str, Any] = {}
        for out, value in ((patch, fixed_image), (undo, image)):
            node = out
            for part in containers[:-1]:
                node = node.setdefault(part, {})
            node["containers"] = [{"name": container, "image": value}]
        status["actions"] = {
            "marker": f"uid-incident-{workload}/1",
            "results": [
                {
                    "action": action,
                    "patch": patch,
                    "patchType": "strategic",
                    "dryRun": "passed",
                    "dryRunMessage": "",
                    "preImage": {"fields": {f"containers[{container}].image": image}, "undo": undo},
                    "applied": True,
                    "at": "2026-11-21T10:07:01Z",
                }
            ],
        }
        status["outcome"] = {
            "phase": "Resolved",
            "reason": "the fix healed the workload",
            "applied": True,
            "healed": True,
            "rolledBack": False,
            "appliedAt": "2026-11-21T10:07:01+00:00",
        }
        status["reason"] = "the fix healed the workload"
        timeline += [
            {
                "at": "2026-11-21T10:07:01Z",
                "stage": "apply",
                "message": f"applied set-image on Deployment {ns}/{workload}",
            },
            {"at": "2026-11-21T10:08:02Z", "stage": "confirm", "message": "healed: rolled out and Ready"},
            {"at": "2026-11-21T10:08:02.10Z", "stage": "report", "message": "Resolved: the fix healed the workload"},
        ]
    return {
        "apiVersion": "aegis.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-incident-{workload}",
            "resourceVersion": "4711",
            "creationTimestamp": created,
            "labels": {"app.kubernetes.io/managed-by": "aegis", "aegis.dev/target-kind": "deployment"},
        },
        "spec": {
            "target": target,
            "ownerChain": [
                {"kind": "Pod", "namespace": ns, "name": pod, "apiVersion": "v1"},
                {"kind": "ReplicaSet", "namespace": ns, "name": f"{workload}-7b9c6d5f4", "apiVersion": "apps/v1"},
            ],
            "fingerprint": "fea2562e1cd2821f",
            "signature": [pull],
            "sources": [
                {
                    "result": f"k8sgpt-operator-system/{ns}{workload}7b9c6d5f4x8k2p",
                    "kind": "Pod",
                    "object": f"{ns}/{pod}",
                    "texts": [pull],
                    "firstSeen": "2026-11-21T10:00:00.10Z",
                    "lastSeen": "2026-11-21T10:00:00.10Z",
                    "active": True,
                }
            ],
            "approval": spec_approval,
        },
        "status": status,
    }
