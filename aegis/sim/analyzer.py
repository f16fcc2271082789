"""A K8sGPT-compatible analyzer: writes ``Result`` objects exactly as K8sGPT's operator does.

Every ``interval`` cluster seconds it runs K8sGPT's Pod, Deployment, ReplicaSet,
Service, PersistentVolumeClaim, StatefulSet, CronJob, Job and DaemonSet analyzers (texts and masks from
``shared/reference/k8sgpt-results.md``), then, like the operator: deletes Results
whose name is not in the new analysis, creates new ones (status is dropped on
create), and on later cycles writes ``updated`` with a contentHash when the
content changed or ``historical`` when it did not. Result names are
``spec.name`` without ``-`` and ``/``; ``parentObject`` is ``""`` (as the operator
loses it). An ordinary API client; run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import string
from typing import Any

from aegis.sim import client, clock, controllers

logger = logging.getLogger("aegis.sim.analyzer")

RESULT_NAMESPACE = "k8sgpt-operator-system"
K8SGPT_NAME = "k8sgpt-sample"
BACKEND = "localai"
_ERROR_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "PreCreateHookError",
    "PreStartHookError",
    "RunContainerError",
    "ImageInspectError",
    "ErrImageNeverPull",
    "InvalidImageName",
}
_MASK_ALPHABET = string.ascii_letters + string.digits + "!@#$%^&*()-_=+[]{}|;':\",./<>?"


def mask(value: str) -> str:
    """K8sGPT's anonymization: base64 of a random string of the same length."""
    random_text = "".join(secrets.choice(_MASK_ALPHABET) for _ in value)
    return base64.b64encode(random_text.encode()).decode()


def failure(text: str, *sensitive: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"text": text}
    if sensitive:
        entry["sensitive"] = [{"unmasked": value, "masked": mask(value)} for value in sensitive]
    return entry


def content_hash(kind: str, name: str, errors: list[dict[str, Any]]) -> str:
    """SHA-256 of Go's compact JSON of {Kind, Name, ParentObject, ErrorCount, ErrorTexts} (HTML-escaped)."""
    document = json.dumps(
        {
            "Kind": kind,
            "Name": name,
            "ParentObject": "",
            "ErrorCount": len(errors),
            "ErrorTexts": [e["text"] for e in errors],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    document = document.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return hashlib.sha256(document.encode()).hexdigest()


def result_name(spec_name: str) -> str:
    return spec_name.replace("-", "").replace("/", "")


class Analyzer:
    """K8sGPT's analysis loop, against whatever API server the client points at."""

    def __init__(
        self,
        api: client.SimClient,
        informers: controllers.Informers,
        sim_clock: clock.SimClock,
        *,
        interval: float = 30.0,
        namespace: str = RESULT_NAMESPACE,
    ) -> None:
        self.api = api
        self.inf = informers
        self.clock = sim_clock
        self.interval = interval
        self.namespace = namespace
        self.last_run = -1e9
        self.cycles = 0

    async def reconcile(self) -> None:
        if self.clock.now() - self.last_run < self.interval:
            return
        self.last_run = self.clock.now()
        try:
            await self.cycle()
        except client.ApiError as exc:
            logger.warning("K8sGPT analysis cycle failed: %s", exc)

    def analyze(self) -> list[tuple[str, str, list[dict[str, Any]]]]:
        """(kind, spec.name, failures) for every object with at least one failure, in K8sGPT's analyzer order."""
        found: list[tuple[str, str, list[dict[str, Any]]]] = []
        skip: set[str] = set()  # like K8sGPT without namespace filters: every namespace
        for pod in self.inf["Pod"].items():
            if pod["metadata"]["namespace"] not in skip:
                errors = self.pod(pod)
                if errors:
                    found.append(("Pod", f"{pod['metadata']['namespace']}/{pod['metadata']['name']}", errors))
        for deploy in self.inf["Deployment"].items():
            if deploy["metadata"]["namespace"] not in skip:
                errors = self.deployment(deploy)
                if errors:
                    found.append(
                        ("Deployment", f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}", errors)
                    )
        for rs in self.inf["ReplicaSet"].items():
            if rs["metadata"]["namespace"] not in skip:
                errors = self.replicaset(rs)
                if errors:
                    found.append(("ReplicaSet", f"{rs['metadata']['namespace']}/{rs['metadata']['name']}", errors))
        for pvc in self.inf["PersistentVolumeClaim"].items():
            if pvc["metadata"]["namespace"] not in skip:
                errors = self.pvc(pvc)
                if errors:
                    found.append(
                        ("PersistentVolumeClaim", f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}", errors)
                    )
        for endpoints in self.inf["Endpoints"].items():
            if endpoints["metadata"]["namespace"] not in skip:
                errors = self.service(endpoints)
                if errors:
                    found.append(
                        ("Service", f"{endpoints['metadata']['namespace']}/{endpoints['metadata']['name']}", errors)
                    )
        for sts in self.inf["StatefulSet"].items():
            if sts["metadata"]["namespace"] not in skip:
                errors = self.statefulset(sts)
                if errors:
                    found.append(("StatefulSet", f"{sts['metadata']['namespace']}/{sts['metadata']['name']}", errors))
        for kind, analyze in (("CronJob", self.cronjob), ("Job", self.job), ("DaemonSet", self.daemonset)):
            for obj in self.inf[kind].items():
                errors = analyze(obj)
                if errors:
                    found.append((kind, f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", errors))
        return found

    # --- analyzers (texts as in K8sGPT) ---------------------------------------------------------------

    def _latest_event(self, namespace: str, name: str) -> dict[str, Any] | None:
        candidates = [
            e for e in self.inf["Event"].items(namespace) if (e.get("involvedObject") or {}).get("name") == name
        ]
        return max(candidates, key=lambda e: e.get("lastTimestamp") or "", default=None)

    def pod(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        meta, status = pod["metadata"], pod.get("status") or {}
        phase = status.get("phase")
        scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if phase == "Pending" and scheduled and scheduled.get("reason") == "Unschedulable" and scheduled.get("message"):
            errors.append(failure(scheduled["message"]))
        if status.get("reason") == "Evicted":
            errors.append(failure(status.get("message") or f"Pod {meta['name']} has been evicted"))
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for cs in statuses:
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting:
                reason = waiting.get("reason", "")
                last = (cs.get("lastState") or {}).get("terminated")
                if reason == "ContainerCreating" and phase == "Pending":
                    event = self._latest_event(meta["namespace"], meta["name"])
                    if event and event.get("reason") in ("FailedMount", "FailedCreatePodSandBox"):
                        errors.append(failure(event.get("message", "")))
                elif reason == "CrashLoopBackOff" and last:
                    errors.append(
                        failure(
                            f"the last termination reason is {last.get('reason')} "
                            f"container={cs['name']} pod={meta['name']}"
                        )
                    )
                elif reason in _ERROR_REASONS and waiting.get("message"):
                    errors.append(failure(waiting["message"]))
            elif terminated and terminated.get("exitCode", 0) != 0:
                errors.append(
                    failure(
                        f"the termination reason is {terminated.get('reason') or 'Unknown'} "
                        f"exitCode={terminated.get('exitCode')} container={cs['name']} "
                        f"pod={meta['name']}"
                    )
                )
            elif not terminated and not cs.get("ready") and phase == "Running":
                event = self._latest_event(meta["namespace"], meta["name"])
                if event and event.get("reason") == "Unhealthy":
                    errors.append(failure(event.get("message", "")))
        return errors

    def deployment(self, deploy: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        spec_replicas = int(deploy["spec"].get("replicas", 1))
        status = deploy.get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        errors = []
        if spec_replicas != ready:
            if int(status.get("replicas") or 0) > spec_replicas:
                errors.append(
                    failure(
                        f"Deployment {ns}/{name} has {spec_replicas} replicas in spec but {status.get('replicas')} "
                        "replicas in status because status field is not updated yet after scaling and "
                        f"{ready} replicas are available with status running",
                        ns,
                        name,
                    )
                )
            else:
                errors.append(
                    failure(
                        f"Deployment {ns}/{name} has {spec_replicas} replicas but {ready} are "
                        "available with status running",
                        ns,
                        name,
                    )
                )
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("status") == "False":
                errors.append(
                    failure(
                        f"Deployment {ns}/{name} has condition {condition['type']}="
                        f"{condition['status']}, reason {condition.get('reason')}: "
                        f"{condition.get('message')}",
                        ns,
                        name,
                    )
                )
        return errors

    def replicaset(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        status = rs.get("status") or {}
        if int(status.get("replicas") or 0) != 0:
            return []
        return [
            failure(c.get("message", ""))
            for c in status.get("conditions") or []
            if c.get("type") == "ReplicaFailure" and c.get("reason") == "FailedCreate"
        ]

    def pvc(self, pvc: dict[str, Any]) -> list[dict[str, Any]]:
        if (pvc.get("status") or {}).get("phase") != "Pending":
            return []
        event = self._latest_event(pvc["metadata"]["namespace"], pvc["metadata"]["name"])
        if event and event.get("reason") == "ProvisioningFailed":
            return [failure(event.get("message", ""))]
        return []

    def service(self, endpoints: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = endpoints["metadata"]["namespace"], endpoints["metadata"]["name"]
        if "control-plane.alpha.kubernetes.io/leader" in (endpoints["metadata"].get("annotations") or {}):
            return []
        service = self.inf["Service"].get(ns, name)
        if service is None:
            return []
        errors = []
        subsets = endpoints.get("subsets") or []
        if not subsets:
            for key, value in (service["spec"].get("selector") or {}).items():
                errors.append(failure(f"Service has no endpoints, expected label {key}={value}", key, value))
        else:
            not_ready = [a for s in subsets for a in s.get("notReadyAddresses") or []]
            if not_ready:
                pods = " ".join(
                    f"{(a.get('targetRef') or {}).get('kind', 'Pod')}/{(a.get('targetRef') or {}).get('name', '')}"
                    for a in not_ready
                )
                errors.append(failure(f"Service has not ready endpoints, pods: [{pods}], expected {len(not_ready)}"))
        for event in self.inf["Event"].items(ns):
            if (event.get("involvedObject") or {}).get("name") == name and event.get("type") != "Normal":
                errors.append(failure(f"Service {ns}/{name} has event {event.get('message')}"))
        return errors

    def statefulset(self, sts: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        spec, status = sts["spec"], sts.get("status") or {}
        errors = []
        service_name = spec.get("serviceName")
        if service_name and self.inf["Service"].get(ns, service_name) is None:
            errors.append(
                failure(f"StatefulSet uses the service {ns}/{service_name} which does not exist.", ns, service_name)
            )
        classes = {sc["metadata"]["name"] for sc in self.inf["StorageClass"].items()}
        for claim in spec.get("volumeClaimTemplates") or []:
            class_name = (claim.get("spec") or {}).get("storageClassName")
            if class_name and class_name not in classes:
                errors.append(
                    failure(f"StatefulSet uses the storage class {class_name} which does not exist.", class_name)
                )
        if int(spec.get("replicas", 1)) != int(status.get("availableReplicas") or 0):
            first = self.inf["Pod"].get(ns, f"{name}-0")
            if first is None:
                events = [
                    e
                    for e in self.inf["Event"].items(ns)
                    if (e.get("involvedObject") or {}).get("name") == name and e.get("type") != "Normal"
                ]
                if events:
                    errors.append(failure(max(events, key=lambda e: e.get("lastTimestamp") or "").get("message", "")))
            else:
                for pod in self.inf["Pod"].items(ns):
                    if controllers.owned_by(pod, sts) and (pod.get("status") or {}).get("phase") != "Running":
                        errors.append(
                            failure(
                                f"Statefulset pod {pod['metadata']['name']} in the namespace {ns} is "
                                "not in running state.",
                                pod["metadata"]["name"],
                                ns,
                            )
                        )
                        break
        return errors

    def job(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        spec, status = job.get("spec") or {}, job.get("status") or {}
        if spec.get("suspend"):
            return [failure(f"Job {name} is suspended", ns, name)]
        finished = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"} & {
            "Complete",
            "SuccessCriteriaMet",
        }
        if int(status.get("failed") or 0) > 0 and not finished:
            event = self._latest_event(ns, name)
            if event and event.get("reason") == "BackoffLimitExceeded":
                return [failure(event.get("message", ""), ns, name)]
            return [failure(f"Job {name} has failed", ns, name)]
        return []

    def cronjob(self, cronjob: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = cronjob["metadata"]["namespace"], cronjob["metadata"]["name"]
        spec = cronjob.get("spec") or {}
        if spec.get("suspend"):
            return [failure(f"CronJob {name} is suspended", ns, name)]
        fields = str(spec.get("schedule") or "").split()
        if len(fields) != 5 and not str(spec.get("schedule") or "").startswith("@"):
            return [
                failure(
                    f"CronJob {name} has an invalid schedule: expected exactly 5 fields, found {len(fields)}: "
                    f"[{' '.join(fields)}]",
                    ns,
                    name,
                )
            ]
        if int(spec.get("startingDeadlineSeconds") or 0) < 0:
            return [failure(f"CronJob {name} has a negative starting deadline", ns, name)]
        return []

    def daemonset(self, ds: dict[str, Any]) -> list[dict[str, Any]]:
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        status = ds.get("status") or {}
        errors = []
        ready, scheduled = int(status.get("numberReady") or 0), int(status.get("desiredNumberScheduled") or 0)
        if ready < scheduled:
            errors.append(
                failure(f"DaemonSet {ns}/{name} has {ready} ready replicas out of {scheduled} scheduled", ns, name)
            )
        template = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        for ref in template.get("imagePullSecrets") or []:
            secret = ref.get("name")
            if secret and self.inf["Secret"].get(ns, secret) is None:
                errors.append(
                    failure(f"DaemonSet {ns}/{name} references non-existent ImagePullSecret {secret}", ns, name, secret)
                )
        return errors

    # --- the operator's Result bookkeeping ----------------------------------------------------

    async def cycle(self) -> None:
        self.cycles += 1
        if self.inf["Namespace"].get(None, self.namespace) is None:
            try:
                await self.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
        analysis: dict[str, tuple[str, str, list[dict[str, Any]]]] = {}
        for kind, spec_name, errors in self.analyze():
            analysis[result_name(spec_name)] = (kind, spec_name, errors)  # name collisions: the last one wins
        labels = {
            "k8sgpts.k8sgpt.ai/name": K8SGPT_NAME,
            "k8sgpts.k8sgpt.ai/namespace": self.namespace,
            "k8sgpts.k8sgpt.ai/backend": BACKEND,
        }
        existing = {
            r["metadata"]["name"]: r
            for r in await self.api.list("Result", self.namespace, labels=f"k8sgpts.k8sgpt.ai/name={K8SGPT_NAME}")
        }
        for name in existing:
            if name not in analysis:
                await self.api.delete("Result", self.namespace, name)
        for name, (kind, spec_name, errors) in analysis.items():
            spec = {
                "kind": kind,
                "name": spec_name,
                "error": errors,
                "details": "",
                "parentObject": "",
                "backend": BACKEND,
                "autoRemediationStatus": {},
            }
            digest = content_hash(kind, spec_name, errors)
            current = existing.get(name)
            if current is None:
                await self.api.create(
                    {
                        "apiVersion": "core.k8sgpt.ai/v1alpha1",
                        "kind": "Result",
                        "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                        "spec": spec,
                        "status": {"lifecycle": "created", "contentHash": digest},
                    }
                )
            elif (current.get("status") or {}).get("contentHash") == digest and current["metadata"].get(
                "labels"
            ) == labels:
                await self.api.status("Result", self.namespace, name, {"lifecycle": "historical"})
            else:
                await self.api.patch("Result", self.namespace, name, {"spec": spec, "metadata": {"labels": labels}})
                await self.api.status("Result", self.namespace, name, {"lifecycle": "updated", "contentHash": digest})
