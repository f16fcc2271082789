"""Intake: from K8sGPT Result events to Incidents.

``Intake.on_result`` parses a Result, puts off a Service report that no longer
holds (all endpoints ready) or whose pods are only starting, resolves the
workload it is about, and either joins the open Incident for that target or
creates a new one (``recurrence`` decides when a report after an ended incident
opens a new one); then it asks the engine to run that Incident's workflow.
``Intake.on_result_deleted`` records that K8sGPT stopped reporting a problem, and
``Intake.recheck_symptoms`` looks again at the symptoms of an incident that
ended. A Result whose intake failed is processed again after a back-off.

Owned and called by ``graph.engine.Engine`` (which the Kopf handlers call); the
pure decisions (``recurrence``, ``all_endpoints_ready``, ``backends_starting``)
are also used by tests. Never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aegis import config, expiry, k8sgpt, models
from aegis.kube import client, incidents
from graph import context

logger = logging.getLogger("aegis.intake")

IntakeStatus = Literal[
    "created", "joined", "unchanged", "ignored", "invalid", "noted", "stale", "deferred", "error", "standby"
]

# After these phases the problem was fixed; a *new* report on the target is a recurrence.
REOPEN_AFTER = frozenset({"Resolved"})
INTAKE_RETRIES = (5.0, 15.0, 45.0, 135.0)  # seconds before re-processing a Result whose intake failed
DEFER_LOOKS = 3  # times a Service or workload report is put off while the pods behind it are still starting
SEEN_LIMIT = 10_000  # Results (and ended incidents) remembered; the oldest are forgotten first
SYMPTOM_KINDS = frozenset({"Service", "PersistentVolumeClaim"})  # reported objects that can join a workload
# Workloads K8sGPT reports by their counts (replicas, or a DaemonSet's ready pods out of those scheduled): the
# report may be a rollout in progress, or one that has finished since.
READY_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


@dataclasses.dataclass(frozen=True)
class IntakeResult:
    """What intake did with one Result event, for the handler's log line."""

    status: IntakeStatus
    reason: str
    incident: str | None = None  # "<namespace>/<name>"


_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def backends_starting(pods: list[Mapping[str, Any]], now: datetime.datetime, window: float) -> bool:
    """True when some pod is not ready, and every pod that is not ready is young and shows no failure:
    scheduled, not terminating, no restarts, no container terminated, nothing waiting but for creation.
    Also true while the only pods not ready are terminating: they are being replaced (a StatefulSet deletes its
    pod before it makes the new one), and their replacement has not been created yet."""
    waiting_on = [p for p in pods if not _pod_ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not waiting_on:
        return any(not _pod_ready(p) and (p.get("metadata") or {}).get("deletionTimestamp") for p in pods)
    for pod in waiting_on:
        created = expiry.parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        if created is None or (now - created).total_seconds() > window:
            return False
        status = pod.get("status") or {}
        scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
        if scheduled.get("status") == "False":
            return False  # unschedulable: a failure of its own
        containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for container in containers:
            state = container.get("state") or {}
            waiting = (state.get("waiting") or {}).get("reason")
            if container.get("restartCount") or (waiting and waiting not in _STARTING):
                return False
            if "terminated" in state and (state["terminated"] or {}).get("exitCode") not in (0, None):
                return False
    return True


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def workload_ready(workload: Mapping[str, Any]) -> bool:
    """A Deployment, StatefulSet or DaemonSet fully rolled out: every replica (every node's daemon pod) updated
    and ready, no old one left."""
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    want = int(spec.get("replicas", 1))
    meta = workload.get("metadata") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if "desiredNumberScheduled" in status:  # a DaemonSet: one pod per node that should run one
        want = int(status.get("desiredNumberScheduled") or 0)
        keys = ("currentNumberScheduled", "numberReady", "updatedNumberScheduled", "numberAvailable")
        return all(int(status.get(key) or 0) == want for key in keys)
    counts = [int(status.get(key) or 0) for key in ("replicas", "readyReplicas", "updatedReplicas")]
    if "currentRevision" in status and status.get("currentRevision") != status.get("updateRevision"):
        return False
    return all(count == want for count in counts)


def _restarted(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return any(int(c.get("restartCount") or 0) > 0 for c in containers)


def all_endpoints_ready(endpoints: Mapping[str, Any] | None) -> bool:
    """True when a Service's Endpoints list ready addresses and no address that is not ready."""
    subsets = (endpoints or {}).get("subsets") or []
    ready = [a for s in subsets for a in s.get("addresses") or []]
    not_ready = [a for s in subsets for a in s.get("notReadyAddresses") or []]
    return bool(ready) and not not_ready


def _content_digest(finding: models.Finding) -> str:
    material = "\n".join([finding.kind, finding.namespace, finding.name, *finding.texts])
    return hashlib.sha256(material.encode()).hexdigest()


class Intake:
    """Turns Result events into Incidents; ``start`` (the engine's) makes sure an Incident's workflow runs."""

    def __init__(
        self,
        *,
        settings: config.Settings,
        cluster: client.Cluster,
        store: incidents.IncidentStore,
        deps: context.Deps,
        start: Callable[[dict[str, Any]], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.store = store
        self.deps = deps
        self._start = start
        self._target_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._seen: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._latest: dict[str, dict[str, Any]] = {}
        self._rechecked: collections.OrderedDict[str, None] = collections.OrderedDict()  # ended incidents' uids
        self._retries: set[asyncio.Task[None]] = set()
        self._closing = False

    async def on_result(self, body: Mapping[str, Any], attempt: int = 0) -> IntakeResult:
        """A Result was created, updated, or listed at start-up."""
        try:
            finding = k8sgpt.parse_result(body)
        except k8sgpt.UnsupportedResult as exc:
            return IntakeResult("ignored", str(exc))
        except k8sgpt.InvalidResult as exc:
            return IntakeResult("invalid", f"malformed K8sGPT Result: {exc}")
        digest = _content_digest(finding)
        self._latest[finding.result_key] = dict(body)
        if self._seen.get(finding.result_key) == digest:
            return IntakeResult("unchanged", "same content as last processed")
        if not self.settings.namespace_allowed(finding.namespace):
            return IntakeResult("ignored", f"namespace {finding.namespace} is not watched by AEGIS")
        try:
            if await self._no_longer_holds(finding):
                # Not remembered: if K8sGPT reports it again, it is looked at again.
                return IntakeResult("stale", f"{finding.kind} {finding.name} is ready now: nothing to do")
            if attempt < DEFER_LOOKS and await self._backends_starting(finding):
                return self._look_again(finding.result_key, attempt, self.settings.settle_seconds)
            target, chain, how = await k8sgpt.resolve_target(finding, self.cluster)
            async with self._target_locks[target.key]:
                result = await self._upsert(finding, target, chain, how)
        except k8sgpt.InvalidResult as exc:
            return IntakeResult("invalid", str(exc))
        except Exception as exc:  # API errors, timeouts, anything unexpected: retry, never lose the Result
            return self._retry_later(finding.result_key, attempt, exc)
        self._remember(finding.result_key, digest)
        return result

    async def _no_longer_holds(self, finding: models.Finding) -> bool:
        """A Service or workload reported during a rollout (pods still starting) that is fine by now.

        K8sGPT's analysis is a snapshot taken up to one interval ago; a finding that no longer holds at intake
        would open an incident about a workload that is fine (or a second one beside the workload's own). A
        Service with no ready address at all (selector or port mismatch, pods failing) still holds; so does a
        workload whose pods have restarted (a crash loop is ready now and then).
        """
        if finding.kind == "Service":
            return all_endpoints_ready(await self.cluster.get("Endpoints", finding.namespace, finding.name))
        if finding.kind in READY_KINDS:
            workload = await self.cluster.get(finding.kind, finding.namespace, finding.name)
            if workload is None or not workload_ready(workload):
                return False
            selector = (workload.get("spec") or {}).get("selector")
            pods = await self.cluster.list("Pod", finding.namespace, selector=selector)
            return not any(_restarted(pod) for pod in pods)
        return False

    async def _backends_starting(self, finding: models.Finding) -> bool:
        """A Service or workload reported while the pods behind it are only starting (young, no failure yet).

        Whether a Service is a symptom of its pods or broken itself, and whether a workload's rollout fails or
        only takes its time, cannot be told yet: look again once the pods have had time to start
        (``_look_again``), rather than open an incident on a rollout in progress.
        """
        if finding.kind == "Service":
            service = await self.cluster.get("Service", finding.namespace, finding.name)
            labels = ((service or {}).get("spec") or {}).get("selector") or {}
            selector: Mapping[str, Any] | None = {"matchLabels": dict(labels)} if labels else None
        elif finding.kind in READY_KINDS:
            workload = await self.cluster.get(finding.kind, finding.namespace, finding.name)
            selector = ((workload or {}).get("spec") or {}).get("selector")
        else:
            return False
        if not selector:
            return False
        pods = await self.cluster.list("Pod", finding.namespace, selector=selector)
        # Young: within the looks it may be put off (a slow start on a busy node is still a start).
        return backends_starting(pods, self.deps.clock(), self.settings.settle_seconds * DEFER_LOOKS)

    def _look_again(self, key: str, attempt: int, delay: float) -> IntakeResult:
        """Process this Result again after ``delay`` (K8sGPT does not rewrite an unchanged Result)."""
        self._again(key, attempt, delay, "looked again at")
        return IntakeResult("deferred", f"the pods behind it are still starting; looking again in {delay:.0f}s")

    def _retry_later(self, key: str, attempt: int, exc: BaseException) -> IntakeResult:
        """Process the newest version of this Result again after a back-off (K8sGPT may not rewrite it soon)."""
        reason = describe(exc)
        if attempt >= len(INTAKE_RETRIES) or self._closing:
            logger.error("giving up on K8sGPT Result %s after %d attempts: %s", key, attempt + 1, reason)
            return IntakeResult("error", f"{reason}; gave up after {attempt + 1} attempts")
        delay = INTAKE_RETRIES[attempt]
        self._again(key, attempt, delay, "retried")
        return IntakeResult("error", f"{reason}; retrying in {delay:.0f}s")

    def _again(self, key: str, attempt: int, delay: float, done: str) -> None:
        """After ``delay``, intake of the newest version of Result ``key`` once more, as attempt ``attempt + 1``."""

        async def again() -> None:
            await asyncio.sleep(delay)
            body = self._latest.get(key)
            if body is not None and not self._closing:
                outcome = await self.on_result(body, attempt + 1)
                logger.info("%s K8sGPT Result %s: %s (%s)", done, key, outcome.status, outcome.reason)

        task = asyncio.create_task(again(), name=f"aegis:again:{key}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _upsert(
        self, finding: models.Finding, target: models.ObjectRef, chain: list[models.ObjectRef], how: str
    ) -> IntakeResult:
        now = self.deps.clock()
        texts = finding.texts
        source = models.Source(
            result=finding.result_key,
            kind=finding.kind,
            object=f"{finding.namespace}/{finding.name}",
            texts=texts,
            firstSeen=now,
            lastSeen=now,
        )
        signature = k8sgpt.signature(finding)
        existing = await self.store.for_target(target)
        current = existing[-1] if existing else None

        if current is not None:
            known = incidents.incident_from_object(current)
            ref = f"{known.namespace}/{known.name}"
            previous = next((s for s in known.sources if s.result == source.result), None)
            if previous is not None and previous.active and previous.texts == texts:
                await self._start(current)
                return IntakeResult("unchanged", "source already recorded", ref)
            # An incident that ended "unknown" from a symptom alone (a Service, a Deployment count) is reopened by
            # the first report about a pod: the real failure has shown itself.
            ended_unknown = ((current.get("status") or {}).get("diagnosis") or {}).get("category") == "unknown"
            first_pod_report = finding.kind == "Pod" and not any(s.kind == "Pod" for s in known.sources)
            reopen = recurrence(incidents.phase_of(current), known, finding, signature) or (
                ended_unknown and first_pod_report and incidents.phase_of(current) in models.TERMINAL_PHASES
            )
            if not reopen:

                def join(incident: models.Incident) -> dict[str, Any]:
                    earlier = next((s for s in incident.sources if s.result == source.result), None)
                    joined = source.model_copy(update={"first_seen": earlier.first_seen}) if earlier else source
                    return {
                        "sources": [s for s in incident.sources if s.result != source.result] + [joined],
                        "signature": sorted(set(incident.signature) | set(signature)),
                    }

                await self.store.update_spec(known.namespace, known.name, join)
                new_symptoms = [text for text in signature if text not in known.signature]
                if new_symptoms and incidents.phase_of(current) not in models.TERMINAL_PHASES:
                    note = f"also reported by {finding.kind} {source.object}: {'; '.join(texts)}"
                    await self.store.note(
                        known.namespace, known.name, models.TimelineEntry(at=now, stage="k8sgpt", message=note)
                    )
                await self._start(current)
                return IntakeResult("joined", f"{finding.kind} {source.object} joins incident {known.name}", ref)

        incident = models.Incident(
            name=incidents.next_name(k8sgpt.incident_base_name(target), existing),
            namespace=target.namespace,
            target=target,
            ownerChain=chain,
            fingerprint=k8sgpt.fingerprint(target, signature),
            signature=signature,
            sources=[source],
        )
        obj, created = await self.store.create(incident)
        ref = f"{incident.namespace}/{incident.name}"
        if created:
            previous_note = f"; the problem came back after {current['metadata']['name']}" if current else ""
            opened = models.TimelineEntry(
                at=now,
                stage="intake",
                message=f"opened from K8sGPT Result {finding.result_key} (target by {how}){previous_note}",
            )
            # No phase here: the workflow may already be running (the Incident's ADDED event) and owns the phase.
            await self.store.set_status(incident.namespace, incident.name, {}, [opened])
        await self._start(obj)
        return IntakeResult("created" if created else "joined", f"incident for {target}", ref)

    async def on_result_deleted(self, body: Mapping[str, Any]) -> IntakeResult:
        """K8sGPT deleted a Result: the problem is no longer reported. Mark that source inactive."""
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        self._seen.pop(key, None)
        self._latest.pop(key, None)
        touched = []
        try:
            for obj in await self.store.list():
                try:
                    known = incidents.incident_from_object(obj)
                except (KeyError, ValueError):
                    continue
                if not any(s.result == key and s.active for s in known.sources):
                    continue
                async with self._target_locks[known.target.key]:
                    updated = await self.store.update_spec(
                        known.namespace, known.name, functools.partial(_deactivate, key=key)
                    )
                if updated is None:
                    continue
                remaining = sum(1 for s in (updated.get("spec") or {}).get("sources") or [] if s.get("active", True))
                message = f"K8sGPT no longer reports Result {key}" + (
                    "; no active K8sGPT report remains" if not remaining else f"; {remaining} report(s) remain"
                )
                entry = models.TimelineEntry(at=self.deps.clock(), stage="k8sgpt", message=message)
                await self.store.note(known.namespace, known.name, entry)
                touched.append(f"{known.namespace}/{known.name}")
        except Exception as exc:
            logger.warning("could not record that K8sGPT deleted Result %s: %s", key, describe(exc))
            return IntakeResult("error", describe(exc))
        if not touched:
            return IntakeResult("ignored", f"no incident lists Result {key}")
        return IntakeResult("noted", f"Result {key} deleted", ", ".join(touched))

    def forget_sources(self, obj: Mapping[str, Any]) -> None:
        """An Incident was deleted: forget its Results' content, so a re-report may open a new one."""
        for source in (obj.get("spec") or {}).get("sources") or []:
            self._seen.pop(str(source.get("result")), None)

    async def recheck_symptoms(self, obj: dict[str, Any]) -> None:
        """Once an incident has ended, look again at the symptoms that joined it (a Service, a claim).

        Whether a Service's report is a symptom of its workload is decided at intake, from a moment's view:
        a Service reported while its pods were still starting joins the workload's incident, which then
        ends (the pods became ready) — while the Service itself stays broken (a port that matches nothing).
        K8sGPT does not rewrite an unchanged Result, so nothing would ever look at it again.
        """
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        if uid in self._rechecked:
            return
        self._rechecked[uid] = None
        while len(self._rechecked) > SEEN_LIMIT:
            self._rechecked.popitem(last=False)
        spec = obj.get("spec") or {}
        target_kind = (spec.get("target") or {}).get("kind")
        for source in spec.get("sources") or []:
            if source.get("kind") not in SYMPTOM_KINDS or source.get("kind") == target_kind:
                continue
            key = str(source.get("result"))
            body = self._latest.get(key)
            if body is None or source.get("active") is False:
                continue
            self._seen.pop(key, None)
            outcome = await self.on_result(body)
            logger.info(
                "symptom %s of ended Incident %s looked at again: %s (%s)", key, uid, outcome.status, outcome.reason
            )

    def close(self) -> None:
        """Stop looking again at Results: cancel every pending retry (the operator is shutting down)."""
        self._closing = True
        for task in list(self._retries):
            task.cancel()

    def _remember(self, key: str, digest: str) -> None:
        self._seen[key] = digest
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)


def _deactivate(incident: models.Incident, key: str) -> dict[str, Any] | None:
    """The spec change that marks the source from Result ``key`` inactive (None if it is not active)."""
    if not any(s.result == key and s.active for s in incident.sources):
        return None
    return {"sources": [s.model_copy(update={"active": False}) if s.result == key else s for s in incident.sources]}


def recurrence(phase: str, known: models.Incident, finding: models.Finding, signature: list[str]) -> bool:
    """Whether a report on a target whose latest incident is ``known`` opens a new incident.

    Only after that incident ended, and only if the problem is new: it was fixed
    (Resolved), K8sGPT had stopped reporting it (every source inactive), or a pod
    now fails in a way none of the incident's pods did. A Deployment or Service
    text is a symptom and never reopens on its own.
    """
    if phase not in models.TERMINAL_PHASES:
        return False
    if phase in REOPEN_AFTER or not any(s.active for s in known.sources):
        return True
    if finding.kind != "Pod":
        return False
    pod_signatures = {
        k8sgpt.normalize_text(text, source.object.split("/", 1)[-1])
        for source in known.sources
        if source.kind == "Pod"
        for text in source.texts
    }
    return bool(pod_signatures) and not (set(signature) & pod_signatures)


def describe(exc: BaseException) -> str:
    """A short reason for a log line or an Incident's status (the timeout of a workflow run said as such)."""
    if isinstance(exc, TimeoutError):
        return "the workflow took longer than AEGIS_WORKFLOW_TIMEOUT_SECONDS"
    return f"{type(exc).__name__}: {exc}"[:500]
