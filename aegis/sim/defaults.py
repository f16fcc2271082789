"""kube-apiserver's defaulting of the built-in kinds the emulated controllers run, on create and update.

``apply(kind, obj)`` fills what the real API server fills (pod spec defaults, requests
from limits, workload and Job/CronJob spec defaults, Service type and ports, Namespace
phase and name label, Secret ``stringData``); ``job_selector`` gives a new Job its
uid-based selector and labels; ``template_generation`` keeps a DaemonSet's template
generation. Called by ``aegis.sim.apiserver``; Service cluster IPs are allocated there
(they need the store).
"""

from __future__ import annotations

import base64
from typing import Any


def pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        image = container.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest and "@" not in image else "IfNotPresent")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def apply(kind: str, obj: dict[str, Any]) -> None:
    """The API server's defaulting for the kinds the emulator's controllers run."""
    spec = obj.get("spec")
    if kind == "Pod" and isinstance(spec, dict):
        pod_spec(spec)
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            resources = container.get("resources")
            if isinstance(resources, dict) and resources.get("limits"):  # requests default to limits
                requests = resources.setdefault("requests", {})
                for name, value in resources["limits"].items():
                    requests.setdefault(name, value)
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind == "Job" and isinstance(spec, dict):
        job_spec(spec)
    elif kind == "CronJob" and isinstance(spec, dict):
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        template_spec = (spec.get("jobTemplate") or {}).get("spec")  # only the pod template is defaulted here
        if isinstance(template_spec, dict) and isinstance((template_spec.get("template") or {}).get("spec"), dict):
            pod_spec(template_spec["template"]["spec"])
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and isinstance(spec, dict):
        if kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if kind in ("ReplicaSet", "StatefulSet"):
            obj.setdefault("status", {}).setdefault("replicas", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        if kind == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
            )
        if kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        if kind == "DaemonSet":
            strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy["type"] = "RollingUpdate"
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxUnavailable", 1)
                rolling.setdefault("maxSurge", 0)
            status = obj.setdefault("status", {})  # the counts the API always shows, 0 until the controller writes
            for key in ("currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"):
                status.setdefault(key, 0)
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            pod_spec(template["spec"])
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind == "Namespace":
        obj.setdefault("status", {}).setdefault("phase", "Active")
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "Secret" and obj.get("stringData"):
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()


TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def template_generation(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """A DaemonSet's template generation, kept as the annotation the apps/v1 API shows: 1 at create, one more
    each time the pod template changes (the controller labels its pods with it: ``pod-template-generation``)."""
    if kind != "DaemonSet":
        return
    annotations = obj["metadata"].setdefault("annotations", {})
    if old is None:
        annotations[TEMPLATE_GENERATION] = "1"
        return
    before = int(((old["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)) or 1)
    changed = (obj.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template")
    annotations[TEMPLATE_GENERATION] = str(before + 1 if changed else before)


def job_spec(spec: dict[str, Any]) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        pod_spec(template["spec"])


def job_selector(job: dict[str, Any]) -> None:
    """A Job's generated selector: its uid as ``batch.kubernetes.io/controller-uid``, on the template too."""
    spec = job.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector"):
        return
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )
    if not job["metadata"].get("labels"):  # a Job without labels takes its template's
        job["metadata"]["labels"] = dict(labels)
