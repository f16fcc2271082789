"""Gather evidence about an incident's target from the live cluster.

AEGIS trusts what it reads itself: the target object, its owner chain, its pods'
statuses, recent Events about any of them, the last log lines of containers that
crashed, and for a Service its selector, endpoints and the pods around it.
K8sGPT's texts are kept only as hints. Env var *values* are never collected
(only names and where they come from), so no Secret value enters the evidence.

Every read that fails becomes a line in ``Evidence.gaps`` instead of an error:
a partial picture still gets diagnosed. Called by ``graph.nodes.gather``.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from aegis import config, models, redact
from aegis.kube import client

_POD_OWNER_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def _container_states(pod: dict[str, Any]) -> list[models.ContainerState]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    limits: dict[str, dict[str, Any]] = {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        resources = container.get("resources") or {}
        limits[container.get("name", "")] = {
            "memoryLimit": (resources.get("limits") or {}).get("memory"),
            "memoryRequest": (resources.get("requests") or {}).get("memory"),
            "image": container.get("image", ""),
            "ports": [{k: p[k] for k in ("name", "containerPort") if k in p} for p in container.get("ports") or []],
            "envNames": [e.get("name", "") for e in container.get("env") or []],
            "envFrom": [
                f"{key.removesuffix('Ref').lower()} {ref[key].get('name')}"
                for ref in container.get("envFrom") or []
                for key in ("configMapRef", "secretRef")
                if key in ref
            ],
        }
    out: list[models.ContainerState] = []
    statuses = [(True, s) for s in status.get("initContainerStatuses") or []] + [
        (False, s) for s in status.get("containerStatuses") or []
    ]
    seen = set()
    for init, cs in statuses:
        name = cs.get("name", "")
        seen.add(name)
        state_name, state = next(iter((cs.get("state") or {}).items()), ("", {}))
        last = (cs.get("lastState") or {}).get("terminated") or {}
        out.append(
            models.ContainerState(
                name=name,
                image=cs.get("image") or limits.get(name, {}).get("image", ""),
                ready=bool(cs.get("ready")),
                restartCount=int(cs.get("restartCount") or 0),
                state=state_name,
                reason=str((state or {}).get("reason") or ""),
                message=redact.text(str((state or {}).get("message") or "")[:1000]),
                exitCode=(state or {}).get("exitCode"),
                lastReason=str(last.get("reason") or ""),
                lastExitCode=last.get("exitCode"),
                startedAt=(state or {}).get("startedAt") if state_name == "running" else None,
                memoryLimit=limits.get(name, {}).get("memoryLimit"),
                memoryRequest=limits.get(name, {}).get("memoryRequest"),
                ports=limits.get(name, {}).get("ports", []),
                envNames=limits.get(name, {}).get("envNames", []),
                envFrom=limits.get(name, {}).get("envFrom", []),
                init=init,
            )
        )
    for container in spec.get("containers") or []:  # not started yet: no status at all
        if container.get("name") not in seen:
            name = container.get("name", "")
            out.append(
                models.ContainerState(
                    name=name,
                    image=container.get("image", ""),
                    memoryLimit=limits.get(name, {}).get("memoryLimit"),
                    memoryRequest=limits.get(name, {}).get("memoryRequest"),
                    ports=limits.get(name, {}).get("ports", []),
                    envNames=limits.get(name, {}).get("envNames", []),
                    envFrom=limits.get(name, {}).get("envFrom", []),
                )
            )
    return out


def summarize_pod(pod: dict[str, Any]) -> models.PodSummary:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    return models.PodSummary(
        name=meta.get("name", ""),
        phase=status.get("phase", ""),
        node=(pod.get("spec") or {}).get("nodeName"),
        labels=dict(meta.get("labels") or {}),
        scheduledReason=str(scheduled.get("reason") or "") if scheduled.get("status") != "True" else "",
        scheduledMessage=str(scheduled.get("message") or "")[:1000] if scheduled.get("status") != "True" else "",
        containers=_container_states(pod),
        terminating=client.terminating(pod),
    )


def _env_sources(container: dict[str, Any]) -> list[str]:
    """Env var names and where they come from; never a value."""
    out = []
    for env in container.get("env") or []:
        source = env.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            out.append(f"{env.get('name')} <- secret {ref.get('name')}/{ref.get('key')}")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            out.append(f"{env.get('name')} <- configmap {ref.get('name')}/{ref.get('key')}")
        elif source:
            out.append(f"{env.get('name')} <- {next(iter(source))}")
        else:
            out.append(f"{env.get('name')} (literal)")
    for env_from in container.get("envFrom") or []:
        for key in ("secretRef", "configMapRef"):
            if key in env_from:
                out.append(f"envFrom {key.removesuffix('Ref')} {env_from[key].get('name')}")
    return out


def _probe_summary(probe: dict[str, Any]) -> dict[str, Any]:
    """A probe without what may carry secrets: header values and exec commands."""
    out = {k: v for k, v in probe.items() if k not in ("exec", "httpGet")}
    if "httpGet" in probe:
        http = dict(probe["httpGet"])
        if http.get("httpHeaders"):
            http["httpHeaders"] = [{"name": h.get("name"), "value": redact.MASK} for h in http["httpHeaders"]]
        out["httpGet"] = http
    if "exec" in probe:
        out["exec"] = {"command": [redact.MASK]}
    return out


def summarize_target(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of a workload, Service or PVC that matter for a diagnosis."""
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    summary: dict[str, Any] = {"kind": kind, "name": meta.get("name"), "generation": meta.get("generation")}
    template = (spec.get("jobTemplate") or {}).get("spec", spec).get("template") or (
        {"spec": spec} if kind == "Pod" else {}
    )
    pod_spec = template.get("spec") or {}
    if pod_spec:
        summary["containers"] = [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "ports": [p.get("containerPort") for p in c.get("ports") or []],
                "resources": c.get("resources") or {},
                "env": _env_sources(c),
                "probes": {
                    p: _probe_summary(c[p]) for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in c
                },
            }
            for c in pod_spec.get("containers") or []
        ]
        if pod_spec.get("nodeSelector"):
            summary["nodeSelector"] = pod_spec["nodeSelector"]
        volumes = []
        for volume in pod_spec.get("volumes") or []:
            for key in ("configMap", "secret", "persistentVolumeClaim"):
                if key in volume:
                    ref = volume[key]
                    volumes.append(f"{key} {ref.get('name') or ref.get('secretName') or ref.get('claimName')}")
        if volumes:
            summary["volumes"] = volumes
    for key in ("replicas", "selector", "type", "ports", "storageClassName", "resources", "accessModes"):
        if key in spec and not (kind == "Pod" and key == "ports"):
            summary[key] = spec[key]
    for key in (
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "unavailableReplicas",
        "desiredNumberScheduled",  # a DaemonSet's: nodes that should run its pod, and how many do
        "currentNumberScheduled",
        "numberReady",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberUnavailable",
        "observedGeneration",
        "phase",
    ):
        if key in status:
            summary[f"status.{key}"] = status[key]
    if meta.get("generation") and kind in ("Deployment", "StatefulSet", "DaemonSet"):
        summary["generation"] = meta["generation"]
    if status.get("conditions"):
        summary["conditions"] = [
            {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k)} for c in status["conditions"]
        ]
    revision = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
    if revision:
        summary["revision"] = revision
    return summary


def _event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("series") or {}).get("lastObservedTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def summarize_event(event: dict[str, Any]) -> models.EventSummary:
    involved = event.get("involvedObject") or event.get("regarding") or {}
    return models.EventSummary(
        type=str(event.get("type") or ""),
        reason=str(event.get("reason") or ""),
        message=redact.text(str(event.get("message") or event.get("note") or "")[:1000]),
        object=f"{involved.get('kind', '')}/{involved.get('name', '')}",
        count=int(event.get("count") or (event.get("series") or {}).get("count") or 1),
        lastSeen=_event_time(event),
    )


MAX_SECRETS = 25  # Secrets read per workload to learn the values to mask


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod" or "containers" in spec:
        return spec
    template = (spec.get("jobTemplate") or {}).get("spec", spec).get("template") or {}
    return template.get("spec") or {}


def secret_names(obj: dict[str, Any]) -> set[str]:
    """Names of the Secrets a pod or a workload's pod template reads: env and envFrom of every container
    (init and ephemeral ones too), ``secret`` volumes and the ``secret`` sources of ``projected`` volumes."""
    spec = _pod_spec(obj)
    names: set[str] = set()
    containers = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                names.add(ref["name"])
        for env_from in container.get("envFrom") or []:
            if (env_from.get("secretRef") or {}).get("name"):
                names.add(env_from["secretRef"]["name"])
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName"):
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                names.add(source["secret"]["name"])
    return names


def mask_known(evidence: models.Evidence, secrets: set[str]) -> models.Evidence:
    """A copy of the evidence with known secret values masked in its free text, by ``redact.known``.

    Free text is what a program or a person wrote: log lines, container state messages,
    pod scheduling messages, event messages, the target's (and its ReplicaSets') condition messages, K8sGPT's
    hints and the gaps. Names, label keys and values, images and the target are never
    rewritten: a diagnosis needs them intact. A value equal to one of those names is not
    masked anywhere (the names show it anyway, and masking it would garble the text about them).
    """
    public = {evidence.target.namespace, evidence.target.name, *(ref.name for ref in evidence.owner_chain)}
    for pod in [*evidence.pods, *evidence.namespace_pods]:
        public |= {
            pod.name,
            *pod.labels.values(),
            *(c.name for c in pod.containers),
            *(c.image for c in pod.containers),
        }
    secrets = secrets - public
    if not secrets:
        return evidence

    def mask(value: str) -> str:
        return redact.known(value, secrets)

    out = evidence.model_copy(deep=True)
    for pod in [*out.pods, *out.namespace_pods]:
        pod.scheduled_message = mask(pod.scheduled_message)
        for container in pod.containers:
            container.message = mask(container.message)
    for event in out.events:
        event.message = mask(event.message)
    conditions = list(out.target_summary.get("conditions") or [])
    for replica_set in out.target_summary.get("replicaSets") or []:
        conditions += replica_set.get("conditions") or []
    for condition in conditions:
        if isinstance(condition.get("message"), str):
            condition["message"] = mask(condition["message"])
    out.logs = {key: [mask(line) for line in lines] for key, lines in out.logs.items()}
    out.hints = [mask(hint) for hint in out.hints]
    out.gaps = [mask(gap) for gap in out.gaps]
    return out


def _health_order(pod: dict[str, Any]) -> tuple[int, str]:
    """Broken pods first, healthy ones next, terminating ones (going away, never judged) last."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarts = sum(
        int(cs.get("restartCount") or 0)
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    )
    rank = 2 if client.terminating(pod) else 0 if not ready or restarts else 1
    return (rank, (pod.get("metadata") or {}).get("name", ""))


def _replica_set_summary(rs: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet of the target Deployment: revision, counts, images, requests and its conditions (a
    ``ReplicaFailure`` condition says why it cannot create pods, e.g. an exceeded ResourceQuota)."""
    meta = rs.get("metadata") or {}
    status = rs.get("status") or {}
    containers = (((rs.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    out: dict[str, Any] = {
        "name": meta.get("name"),
        "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"),
        "desired": (rs.get("spec") or {}).get("replicas", 0),
        "replicas": status.get("replicas", 0),
        "readyReplicas": status.get("readyReplicas", 0),
        "images": [c.get("image") for c in containers],
        "requests": {c.get("name"): (c.get("resources") or {}).get("requests") or {} for c in containers},
    }
    if status.get("conditions"):
        out["conditions"] = [
            {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k)} for c in status["conditions"]
        ]
    return out


class EvidenceGatherer:
    """Reads what the cluster says about one target."""

    def __init__(self, cluster: client.Cluster, settings: config.Settings) -> None:
        self.cluster = cluster
        self.settings = settings

    async def gather(self, incident: models.Incident, hints: list[str], now: datetime.datetime) -> models.Evidence:
        target = incident.target
        ns = target.namespace
        gaps: list[str] = []

        async def attempt(what: str, coro: Any, default: Any) -> Any:
            try:
                return await coro
            except client.ClusterError as exc:
                gaps.append(f"{what}: {exc}")
                return default

        obj = await attempt(f"read {target}", self.cluster.get(target.kind, ns, target.name), None)
        evidence = models.Evidence(
            target=target, ownerChain=incident.owner_chain, hints=list(hints), collectedAt=now, gaps=gaps
        )
        if obj is None:
            if gaps:  # a failed read is no proof that the target is gone: fail the step, it is retried
                raise client.ClusterError(gaps[0])
            evidence.target_found = False
            return evidence
        evidence.target_summary = summarize_target(obj)
        spec = obj.get("spec") or {}

        pods: list[dict[str, Any]] = []
        involved: set[str] = {target.name} | {ref.name for ref in incident.owner_chain}
        if target.kind == "Pod":
            pods = [obj]
        elif target.kind == "CronJob":
            jobs = await attempt(f"list Jobs of {target}", self.cluster.list("Job", ns), [])
            mine = [
                job
                for job in jobs
                if any(
                    ref.get("uid") == (obj.get("metadata") or {}).get("uid")
                    for ref in job["metadata"].get("ownerReferences") or []
                )
            ]
            for job in sorted(mine, key=lambda j: j["metadata"].get("creationTimestamp", ""))[-3:]:
                involved.add(job["metadata"]["name"])
                selector = {"matchLabels": {"job-name": job["metadata"]["name"]}}
                pods += await attempt(
                    f"list pods of Job {job['metadata']['name']}", self.cluster.list("Pod", ns, selector=selector), []
                )
        elif target.kind in _POD_OWNER_KINDS:
            selector = spec.get("selector")
            if selector:
                pods = await attempt(f"list pods of {target}", self.cluster.list("Pod", ns, selector=selector), [])
            if target.kind == "Deployment" and selector:
                replica_sets = await attempt(
                    f"list ReplicaSets of {target}", self.cluster.list("ReplicaSet", ns, selector=selector), []
                )
                involved |= {rs["metadata"]["name"] for rs in replica_sets}
                evidence.target_summary["replicaSets"] = [_replica_set_summary(rs) for rs in replica_sets]
        elif target.kind == "Service":
            selector = spec.get("selector") or {}
            endpoints = await attempt(
                f"read endpoints of {target}", self.cluster.get("Endpoints", ns, target.name), None
            )
            ready = not_ready = 0
            for subset in (endpoints or {}).get("subsets") or []:
                ready += len(subset.get("addresses") or [])
                not_ready += len(subset.get("notReadyAddresses") or [])
            if selector:
                pods = await attempt(
                    f"list pods selected by {target}",
                    self.cluster.list("Pod", ns, selector={"matchLabels": selector}),
                    [],
                )
            all_pods = await attempt(f"list pods in {ns}", self.cluster.list("Pod", ns), [])
            evidence.namespace_pods = [summarize_pod(p) for p in all_pods[: self.settings.evidence_max_pods]]
            evidence.service = models.ServiceSummary(
                name=target.name,
                selector=dict(selector),
                ports=list(spec.get("ports") or []),
                readyEndpoints=ready,
                notReadyEndpoints=not_ready,
                matchingPods=[p["metadata"]["name"] for p in pods],
            )
        elif target.kind == "PersistentVolumeClaim":
            all_pods = await attempt(f"list pods in {ns}", self.cluster.list("Pod", ns), [])
            pods = [
                p
                for p in all_pods
                if any(
                    (v.get("persistentVolumeClaim") or {}).get("claimName") == target.name
                    for v in (p.get("spec") or {}).get("volumes") or []
                )
            ]

        pods.sort(key=_health_order)  # broken pods first, so truncation never hides them
        pods = pods[: self.settings.evidence_max_pods]
        evidence.pods = [summarize_pod(p) for p in pods]
        involved |= {p["metadata"]["name"] for p in pods}
        claim_names = sorted(
            {
                (v.get("persistentVolumeClaim") or {}).get("claimName")
                for p in pods
                for v in (p.get("spec") or {}).get("volumes") or []
                if v.get("persistentVolumeClaim")
            }
            | ({target.name} if target.kind == "PersistentVolumeClaim" else set())
        )
        for claim in claim_names[:5]:
            pvc = (
                obj
                if target.kind == "PersistentVolumeClaim"
                else await attempt(
                    f"read PersistentVolumeClaim {ns}/{claim}",
                    self.cluster.get("PersistentVolumeClaim", ns, claim),
                    None,
                )
            )
            evidence.claims.append(await self._claim(claim, pvc, attempt))
            involved.add(claim)

        events = await attempt(f"list events in {ns}", self.cluster.list("Event", ns), [])
        relevant = [
            e for e in events if ((e.get("involvedObject") or e.get("regarding") or {}).get("name")) in involved
        ]
        relevant.sort(key=_event_time)
        evidence.events = [summarize_event(e) for e in relevant[-self.settings.evidence_max_events :]]

        if self.settings.evidence_log_lines:
            evidence.logs = await self._crash_logs(evidence.pods, ns, gaps)
        known = await self._secret_values([obj, *pods], ns, attempt)
        evidence.gaps = list(gaps)  # the model copied the list it was given: every gap found since
        return mask_known(evidence, known) if known else evidence

    async def _secret_values(self, objs: list[dict[str, Any]], ns: str, attempt: Any) -> set[str]:
        """The values of the Secrets the workload reads (env, envFrom, volumes): to mask, never to keep.

        Each value as stored (base64) and decoded (any UTF-8 text); values shorter than
        ``redact.MIN_KNOWN`` are left out (too likely to be ordinary words).
        """
        names = sorted({name for obj in objs for name in secret_names(obj)})[:MAX_SECRETS]
        values: set[str] = set()
        for name in names:
            secret = await attempt(
                f"read Secret {ns}/{name} (to mask its values)", self.cluster.get("Secret", ns, name), None
            )
            for encoded in ((secret or {}).get("data") or {}).values():
                values.add(str(encoded))
                try:
                    values.add(base64.b64decode(str(encoded)).decode("utf-8").strip())
                except (ValueError, UnicodeDecodeError):
                    continue
            values |= {str(v).strip() for v in ((secret or {}).get("stringData") or {}).values()}
        return {v for v in values if len(v) >= redact.MIN_KNOWN}

    async def _claim(self, name: str, pvc: dict[str, Any] | None, attempt: Any) -> models.ClaimSummary:
        if pvc is None:
            return models.ClaimSummary(name=name, phase="Missing")
        spec = pvc.get("spec") or {}
        class_name = spec.get("storageClassName")
        exists = None
        if class_name:
            exists = (
                await attempt(f"read StorageClass {class_name}", self.cluster.get("StorageClass", "", class_name), None)
                is not None
            )
        return models.ClaimSummary(
            name=name,
            phase=(pvc.get("status") or {}).get("phase", ""),
            storageClass=class_name,
            storageClassExists=exists,
            size=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
        )

    async def _crash_logs(
        self, pods: list[models.PodSummary], ns: str, gaps: list[str] | None = None
    ) -> dict[str, list[str]]:
        """Last lines of containers that crashed or exited (at most three containers; init containers too).

        A crashed container's last words are in its ``previous`` log while a new instance runs, and in the
        current log while it sits terminated or in back-off: both are read. A read that fails (the kubelet
        has no log yet — "container ... is waiting to start" —, its proxy answers 500, a timeout) is a gap,
        never a lost evidence: the other reads go on.
        """
        logs: dict[str, list[str]] = {}
        for pod in pods:
            if pod.terminating:
                continue  # going away: its containers are not what is judged
            for container in pod.containers:
                if len(logs) >= 3:
                    return logs
                crashed = container.restart_count > 0 or bool(container.last_reason)
                exited = container.state == "terminated"
                if not (crashed or exited):
                    continue
                lines: list[str] = []
                for previous in (True, False) if crashed else (False,):
                    which = "previous log" if previous else "log"
                    try:
                        found = await self.cluster.pod_log(
                            ns,
                            pod.name,
                            container.name,
                            tail_lines=self.settings.evidence_log_lines,
                            previous=previous,
                        )
                    except (client.ClusterError, TimeoutError, OSError) as exc:
                        if gaps is not None:
                            gaps.append(f"{which} of {pod.name}/{container.name}: {exc}"[:500])
                        continue
                    lines += [line for line in found or [] if line not in lines]
                lines = lines[-self.settings.evidence_log_lines :]
                if lines:
                    logs[f"{pod.name}/{container.name}"] = redact.lines(lines)
        return logs
