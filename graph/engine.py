"""The engine: from K8sGPT Result events to Incidents and their workflow runs.

``Engine.on_result`` parses a Result, resolves the workload it is about, and
either joins the open Incident for that target or creates a new one, then makes
sure that Incident's workflow runs. ``Engine.on_incident`` resumes unfinished
workflows (after an operator restart) and ``Engine.on_result_deleted`` records
that K8sGPT stopped reporting a problem.

Runs are background tasks bounded by a semaphore; one task per Incident; the
LangGraph checkpointer decides whether a run starts, resumes or is already done,
so delivering the same event twice never runs a workflow twice. Every failure
inside a run ends the Incident in phase Failed with the reason. Called by the
Kopf handlers; never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from typing import Any, Literal

from aegis import config, k8sgpt, models
from aegis.kube import client, incidents
from graph import context

logger = logging.getLogger("aegis.engine")

IntakeStatus = Literal["created", "joined", "unchanged", "ignored", "invalid", "noted", "error"]

# After these phases the problem was fixed; a *new* report on the target is a recurrence.
REOPEN_AFTER = frozenset({"Resolved"})
_SEEN_LIMIT = 10_000


@dataclasses.dataclass(frozen=True)
class IntakeResult:
    """What intake did with one Result event, for the handler's log line."""

    status: IntakeStatus
    reason: str
    incident: str | None = None  # "<namespace>/<name>"


def _content_digest(finding: models.Finding) -> str:
    material = "\n".join([finding.kind, finding.namespace, finding.name, *finding.texts])
    return hashlib.sha256(material.encode()).hexdigest()


class Engine:
    """Turns Result events into Incidents and keeps their workflows running."""

    def __init__(
        self,
        *,
        settings: config.Settings,
        cluster: client.Cluster,
        store: incidents.IncidentStore,
        deps: context.Deps,
        graph: Any,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.store = store
        self.deps = deps
        self.graph = graph
        self._slots = asyncio.Semaphore(settings.max_concurrent_incidents)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._target_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._seen: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._closing = False

    # --- Result events ---------------------------------------------------------------------------

    async def on_result(self, body: Mapping[str, Any]) -> IntakeResult:
        """A Result was created, updated, or listed at start-up."""
        try:
            finding = k8sgpt.parse_result(body)
        except k8sgpt.InvalidResult as exc:
            return IntakeResult("invalid", f"malformed K8sGPT Result: {exc}")
        digest = _content_digest(finding)
        if self._seen.get(finding.result_key) == digest:
            return IntakeResult("unchanged", "same content as last processed")
        if not self.settings.namespace_allowed(finding.namespace):
            return IntakeResult("ignored", f"namespace {finding.namespace} is not watched by AEGIS")
        try:
            target, chain, how = await k8sgpt.resolve_target(finding, self.cluster)
            async with self._target_locks[target.key]:
                result = await self._upsert(finding, target, chain, how)
        except k8sgpt.InvalidResult as exc:
            return IntakeResult("invalid", str(exc))
        except client.ClusterError as exc:
            return IntakeResult("error", f"{exc} (retried at the Result's next event)")
        self._remember(finding.result_key, digest)
        return result

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
        existing = await self.store.for_target(target)
        current = existing[-1] if existing else None
        signature = k8sgpt.signature(finding)

        if current is not None:
            known = incidents.incident_from_object(current)
            previous = next((s for s in known.sources if s.result == source.result), None)
            is_known = previous is not None and previous.active and previous.texts == texts
            recurrence = incidents.phase_of(current) in REOPEN_AFTER and not is_known
            if not recurrence:
                ref = f"{known.namespace}/{known.name}"
                if is_known:
                    await self._ensure_running(current)
                    return IntakeResult("unchanged", "source already recorded", ref)
                if previous is not None:
                    source = source.model_copy(update={"first_seen": previous.first_seen})
                sources = [s for s in known.sources if s.result != source.result] + [source]
                await self.store.set_sources(known.namespace, known.name, sources)
                new_symptoms = [text for text in signature if text not in known.signature]
                if new_symptoms and incidents.phase_of(current) not in models.TERMINAL_PHASES:
                    note = f"also reported by {finding.kind} {source.object}: {'; '.join(texts)}"
                    entry = models.TimelineEntry(at=now, stage="intake", message=note)
                    await self.store.note(known.namespace, known.name, entry)
                await self._ensure_running(current)
                return IntakeResult("joined", f"{finding.kind} {source.object} joins the open incident", ref)

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
            opened = models.TimelineEntry(
                at=now, stage="intake", message=f"opened from K8sGPT Result {finding.result_key} (target by {how})"
            )
            await self.store.set_status(incident.namespace, incident.name, {"phase": "Pending"}, [opened])
        await self._ensure_running(obj)
        return IntakeResult("created" if created else "joined", f"incident for {target}", ref)

    async def on_result_deleted(self, body: Mapping[str, Any]) -> IntakeResult:
        """K8sGPT deleted a Result: the problem is no longer reported. Mark that source inactive."""
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        self._seen.pop(key, None)
        touched = []
        for obj in await self.store.list():
            known = incidents.incident_from_object(obj)
            if not any(s.result == key and s.active for s in known.sources):
                continue
            sources = [s.model_copy(update={"active": False}) if s.result == key else s for s in known.sources]
            await self.store.set_sources(known.namespace, known.name, sources)
            remaining = sum(1 for s in sources if s.active)
            message = f"K8sGPT no longer reports Result {key}" + (
                "; no active K8sGPT report remains" if not remaining else f"; {remaining} report(s) remain"
            )
            entry = models.TimelineEntry(at=self.deps.clock(), stage="intake", message=message)
            await self.store.note(known.namespace, known.name, entry)
            touched.append(f"{known.namespace}/{known.name}")
        if not touched:
            return IntakeResult("ignored", f"no incident lists Result {key}")
        return IntakeResult("noted", f"Result {key} deleted", ", ".join(touched))

    # --- Incident events -------------------------------------------------------------------------

    async def on_incident(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """An Incident was listed or changed: resume its workflow if it is unfinished."""
        meta = body.get("metadata") or {}
        thread_prefix = f"{meta.get('namespace')}/{meta.get('name')}/"
        if deleted:
            for thread_id, task in list(self._tasks.items()):
                if thread_id.startswith(thread_prefix):
                    task.cancel()
            return
        if incidents.phase_of(dict(body)) in models.TERMINAL_PHASES:
            return
        await self._ensure_running(dict(body))

    # --- workflow runs ---------------------------------------------------------------------------

    async def _ensure_running(self, obj: dict[str, Any]) -> None:
        if self._closing or incidents.phase_of(obj) in models.TERMINAL_PHASES:
            return
        try:
            incident = incidents.incident_from_object(obj)
        except (KeyError, ValueError) as exc:
            logger.warning("Incident %s is malformed, not running it: %s", obj.get("metadata", {}).get("name"), exc)
            return
        task = self._tasks.get(incident.thread_id)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._run(incident), name=f"aegis:{incident.thread_id}")
        self._tasks[incident.thread_id] = task
        task.add_done_callback(lambda t, key=incident.thread_id: self._forget(key, t))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _run(self, incident: models.Incident) -> None:
        config_ = {"configurable": {"thread_id": incident.thread_id}}
        async with self._slots:
            try:
                snapshot = await self.graph.aget_state(config_)
                if snapshot.values and not snapshot.next:
                    return  # finished before (e.g. a duplicate event after a restart)
                if snapshot.interrupts:
                    return  # waiting for a human; resumed by the approval handler
                payload = None if snapshot.values else self._initial_state(incident)
                await asyncio.wait_for(
                    self.graph.ainvoke(payload, config_, context=self.deps),
                    timeout=self.settings.workflow_timeout_seconds,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _describe(exc)
                logger.exception("workflow of Incident %s/%s failed: %s", incident.namespace, incident.name, reason)
                await self._fail(incident, reason)

    def _initial_state(self, incident: models.Incident) -> dict[str, Any]:
        hints = [text for source in incident.sources for text in source.texts]
        return {"incident": incident.dump(), "hints": list(dict.fromkeys(hints)), "timeline": []}

    async def _fail(self, incident: models.Incident, reason: str) -> None:
        """End the incident in phase Failed with the reason; keep its timeline."""
        try:
            line = models.TimelineEntry(at=self.deps.clock(), stage="error", message=f"workflow failed: {reason}")
            await self.store.set_status(
                incident.namespace, incident.name, {"phase": "Failed", "reason": reason}, [line]
            )
        except client.ClusterError as exc:
            logger.error("could not record the failure of Incident %s/%s: %s", incident.namespace, incident.name, exc)

    async def wait_idle(self, grace: float | None = None) -> None:
        """Wait until no workflow run is in progress, or ``grace`` seconds (tests, demo, shutdown)."""
        tasks = [task for task in self._tasks.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop starting runs, give running ones a grace period, cancel the rest (they resume on restart)."""
        self._closing = True
        await self.wait_idle(grace)
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _remember(self, key: str, digest: str) -> None:
        self._seen[key] = digest
        self._seen.move_to_end(key)
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the workflow took longer than AEGIS_WORKFLOW_TIMEOUT_SECONDS"
    return f"{type(exc).__name__}: {exc}"[:500]
