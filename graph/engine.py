"""The engine: the coordinator the Kopf handlers call; it runs each Incident's workflow.

Result events go to its ``graph.intake.Intake`` (``Engine.on_result``,
``Engine.on_result_deleted``), which opens or joins Incidents and asks the engine
to run them. ``Engine.on_incident`` resumes unfinished workflows (after an
operator restart, or with a human's answer to an approval request) and hands an
ended incident's symptoms back to intake to look at again. ``start_janitor``
sweeps expired shadow namespaces and ends approvals nobody gave in time. With
several replicas (``AEGIS_LEADER_ELECTION``) only the leader works: ``lead`` and
``step_down`` are called when this replica gains or loses the Lease.

Runs are background tasks bounded by a semaphore; one task per Incident; the
LangGraph checkpointer decides whether a run starts, resumes or is already done,
so delivering the same event twice never runs a workflow twice. Every failure
inside a run ends the Incident in phase Failed with the reason. Called by the
Kopf handlers (built by ``graph.runtime``); never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from langgraph.types import Command

from aegis import approvals, config, expiry, k8sgpt, models, shadow
from aegis.kube import client, incidents
from graph import context, intake

logger = logging.getLogger("aegis.engine")

RUN_RETRIES = (2.0, 6.0, 18.0)  # seconds before resuming a workflow run that raised


class Engine:
    """Turns Result events into Incidents (through its intake) and keeps their workflows running."""

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
        self.intake = self._new_intake()
        # Several replicas (aegis.kube.leader): only the leader works; the others ignore events until lead().
        self.active = not settings.leader_election
        self._catch_up: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrent_incidents)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Incident changes that came while their thread's run was busy: (latest object, expire), looked at after.
        self._seen_while_busy: dict[str, tuple[dict[str, Any], bool]] = {}
        self._followups: set[asyncio.Task[bool]] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._closing = False

    # --- Result events ---------------------------------------------------------------------------

    async def on_result(self, body: Mapping[str, Any]) -> intake.IntakeResult:
        """A Result was created, updated, or listed at start-up."""
        if not self.active:
            return intake.IntakeResult("standby", "another replica leads; this one catches up when it leads")
        return await self.intake.on_result(body)

    async def on_result_deleted(self, body: Mapping[str, Any]) -> intake.IntakeResult:
        """K8sGPT deleted a Result: the problem is no longer reported. Mark that source inactive."""
        if not self.active:
            return intake.IntakeResult("standby", "another replica leads")
        return await self.intake.on_result_deleted(body)

    # --- Incident events -------------------------------------------------------------------------

    async def on_incident(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """An Incident was listed or changed: resume its workflow if it is unfinished."""
        obj = dict(body)
        if self.deps.metrics is not None:  # the Incident gauges follow every Incident the watch delivers
            self.deps.metrics.incident_seen(obj, deleted)
        if not self.active:
            return  # another replica leads; this one lists every Incident when it leads
        meta = obj.get("metadata") or {}
        if deleted:
            thread_prefix = f"{meta.get('namespace')}/{meta.get('name')}/"
            for thread_id, task in list(self._tasks.items()):
                if thread_id.startswith(thread_prefix):
                    task.cancel()
            self.intake.forget_sources(obj)  # a re-report may open a new one
            return
        if incidents.phase_of(obj) in models.TERMINAL_PHASES:
            await self.intake.recheck_symptoms(obj)
            return
        refusal = refuse(obj, self.settings)
        if refusal:
            logger.warning("not running Incident %s/%s: %s", meta.get("namespace"), meta.get("name"), refusal)
            return
        await self._ensure_running(obj)

    # --- janitor ---------------------------------------------------------------------------------

    def start_janitor(self, interval: float | None = None) -> None:
        """Every ``interval`` (default: a tenth of the approval timeout, at most 60 s), delete shadow namespaces
        past their expiry (left by a crash mid-verification) and end approvals nobody gave in time.

        A plain loop rather than a Kopf timer: a timer would put a Kopf finalizer on every shadow
        namespace, and with the operator gone they would never finish terminating.
        """
        if not self.active:
            return  # started by lead()
        if interval is None:
            interval = sweep_interval(self.settings.approval_timeout_seconds)
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.create_task(self._sweep(interval), name="aegis:janitor")

    async def _sweep(self, interval: float) -> None:
        while not self._closing:
            try:
                listed = await self.cluster.list_namespaces({shadow.LABEL_SHADOW: "true"})
                for ns in listed:
                    if shadow.expired(ns, self.deps.clock()) and not ns["metadata"].get("deletionTimestamp"):
                        logger.info("deleting expired shadow namespace %s", ns["metadata"]["name"])
                        await self.cluster.delete_namespace(ns["metadata"]["name"])
                if self.deps.metrics is not None:  # those that still exist: not terminating, not just deleted
                    self.deps.metrics.shadows_found(shadow.remaining(listed, self.deps.clock()))
            except Exception as exc:  # the sweep must outlive any one failure; the next round tries again
                logger.warning("shadow janitor: %s", intake.describe(exc))
            try:
                await self.expire_approvals()
            except Exception as exc:  # the sweep must outlive any one failure; the next round tries again
                logger.warning("approval expiry: %s", intake.describe(exc))
            await asyncio.sleep(interval)

    async def expire_approvals(self) -> list[str]:
        """Resume every wait for approval that is past its deadline with the answer "Expired".

        The deadline comes from the Incident as stored (when the wait began), so it holds across restarts.
        Returns the incidents ("namespace/name") whose expiry was started.
        """
        timeout = self.settings.approval_timeout_seconds
        now = self.deps.clock()
        started = []
        for obj in await self.store.list():
            if incidents.phase_of(obj) != expiry.AWAITING or not expiry.overdue(obj, timeout, now):
                continue
            if refuse(obj, self.settings):
                continue
            meta = obj.get("metadata") or {}
            logger.info("approval of Incident %s/%s expired", meta.get("namespace"), meta.get("name"))
            if await self._ensure_running(obj, expire=True):
                started.append(f"{meta.get('namespace')}/{meta.get('name')}")
        return started

    # --- leadership (several replicas; called by the elector's callbacks, see handlers.lifecycle) ---------

    async def lead(self) -> None:
        """This replica became the leader: list every Incident and K8sGPT Result and feed them through
        ``on_incident`` / ``on_result``, as Kopf's listing at start-up does (unfinished workflows resume from their
        checkpoints, exactly as after a restart), and start the janitor. Returns at once; the listing runs on."""
        if self._closing:
            return
        self.active = True
        self.start_janitor()
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.create_task(self._list_and_feed(), name="aegis:catch-up")

    async def _list_and_feed(self) -> None:
        delay = 1.0
        while self.active:
            try:
                listed = await self.store.list()
                results = await self.cluster.list_custom(
                    k8sgpt.RESULT_GROUP, k8sgpt.RESULT_VERSION, k8sgpt.RESULT_PLURAL
                )
                break
            except client.ClusterError as exc:  # keep trying while leading: nothing else would look at them
                logger.warning("catching up as the leader: %s; again in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        else:
            return
        logger.info("leading: catching up on %d Incident(s) and %d K8sGPT Result(s)", len(listed), len(results))
        for obj in listed:
            try:
                await self.on_incident(obj)
            except Exception as exc:  # one bad object must not stop the others
                logger.warning("catching up on Incident %s: %s", obj.get("metadata", {}).get("name"), exc)
        for body in results:
            try:
                await self.on_result(body)
            except Exception as exc:
                logger.warning("catching up on Result %s: %s", body.get("metadata", {}).get("name"), exc)

    async def step_down(self, grace: float = 0.0) -> None:
        """This replica no longer leads (or is about to let go): ignore events, stop the janitor and the catch-up,
        give running workflows ``grace`` seconds and cancel the rest — they resume from their checkpoints on the
        leader, as after a restart. Intake starts afresh (its memory of Results is the leader's business)."""
        self.active = False
        for task in (self._janitor, self._catch_up):
            if task is not None:
                task.cancel()
        self._janitor = self._catch_up = None
        self.intake.close()
        self.intake = self._new_intake()
        self._seen_while_busy.clear()
        await self.wait_idle(grace)
        running = [*self._tasks.values(), *self._followups]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def _new_intake(self) -> intake.Intake:
        return intake.Intake(
            settings=self.settings, cluster=self.cluster, store=self.store, deps=self.deps, start=self._ensure_running
        )

    # --- workflow runs ---------------------------------------------------------------------------

    async def _ensure_running(self, obj: dict[str, Any], expire: bool = False) -> bool:
        """Start a run of this Incident's thread unless one is running; True if one was started.

        ``expire``: a wait for approval past its deadline is answered "Expired" (unless a human answered).
        """
        if self._closing or not self.active or incidents.phase_of(obj) in models.TERMINAL_PHASES:
            return False
        try:
            incident = incidents.incident_from_object(obj)
        except (KeyError, ValueError) as exc:
            logger.warning("Incident %s is malformed, not running it: %s", obj.get("metadata", {}).get("name"), exc)
            return False
        task = self._tasks.get(incident.thread_id)
        if task is not None and not task.done():
            # A change (an answer) seen while the run is busy is looked at once it ends: no event is lost.
            self._seen_while_busy[incident.thread_id] = (obj, expire)
            return False
        self._seen_while_busy.pop(incident.thread_id, None)
        approval = dict((obj.get("spec") or {}).get("approval") or {})
        task = asyncio.create_task(self._run(incident, approval, expire), name=f"aegis:{incident.thread_id}")
        self._tasks[incident.thread_id] = task
        task.add_done_callback(lambda t, key=incident.thread_id: self._forget(key, t))
        return True

    async def _stale_answer(self, incident: models.Incident, approval: dict[str, Any], obj: dict[str, Any]) -> None:
        """Withdraw an answer to an earlier question (once: the reset makes the next event find no answer)."""
        where = f"{incident.namespace}/{incident.name}"
        logger.warning("Incident %s: an answer to an earlier question was ignored", where)
        reset = {"decision": "Pending", "reason": "", "question": None, **dict.fromkeys(approvals.FIELDS)}
        patch = {
            "metadata": {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")},
            "spec": {"approval": reset},
        }
        try:
            await self.cluster.patch_custom(
                models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL, incident.namespace, incident.name, patch
            )
        except client.ClusterError:
            return  # changed meanwhile (a new answer): its own event handles it
        line = models.TimelineEntry(
            at=self.deps.clock(),
            stage="gate",
            message=f"ignored {approval.get('decision')} for question {approval.get('question')}: that fix is no "
            "longer the one asked; review the current one (aegis show) and answer again",
        )
        with contextlib.suppress(client.ClusterError):
            await self.store.note(incident.namespace, incident.name, line)

    def _late(self, obj: dict[str, Any] | None, approval: dict[str, Any], verified: bool) -> bool:
        """An approval seen after the wait's deadline, not proven (by a signed stamp) to be given before it."""
        due = expiry.deadline(obj or {}, self.settings.approval_timeout_seconds)
        if due is None or self.deps.clock() <= due:
            return False
        given = expiry.parse_time(approval.get("approvedAt")) if verified else None
        return given is None or given > due

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        later = self._seen_while_busy.pop(key, None)
        if later is not None and not self._closing:
            obj, expire = later
            self._rerun(self._ensure_running(obj, expire))

    def _rerun(self, start: Any) -> None:
        followup = asyncio.get_running_loop().create_task(start, name="aegis:rerun")
        self._followups.add(followup)
        followup.add_done_callback(self._followups.discard)

    async def _run(
        self, incident: models.Incident, approval: dict[str, Any] | None = None, expire: bool = False
    ) -> None:
        """Start, resume or finish this incident's thread; transient errors resume it from its checkpoint."""
        config_ = {"configurable": {"thread_id": incident.thread_id}}
        attempt = 0
        while attempt <= len(RUN_RETRIES):
            async with self._slots:
                try:
                    snapshot = await self.graph.aget_state(config_)
                    # Finished before (e.g. a duplicate event after a restart). A step whose node had saved its
                    # writes when the process died shows no `next` but that task: it is resumed, not finished.
                    if snapshot.values and not snapshot.next and not snapshot.tasks:
                        return
                    payload: Any = None if snapshot.values else self._initial_state(incident)
                    if snapshot.interrupts and expire and await self._unanswered(incident):
                        payload = Command(resume={"decision": expiry.EXPIRED})  # the gate ends it Expired
                    elif snapshot.interrupts:
                        latest = await self.store.get(incident.namespace, incident.name)
                        approval = ((latest or {}).get("spec") or {}).get("approval") or approval or {}
                        decision = (approval or {}).get("decision", "Pending")
                        if decision not in ("Approved", "Rejected"):
                            return  # still waiting for a human: the Incident's next change wakes it
                        if not approvals.answers_question(approval, (latest or {}).get("status")):
                            await self._stale_answer(incident, approval, latest or {})
                            return  # an answer to an earlier question: the fix now asked needs its own
                        # who: verified only from this operator's own admission stamp (aegis.approvals)
                        who = approvals.approver(
                            approval,
                            namespace=incident.namespace,
                            name=incident.name,
                            uid=incident.uid,
                            secret=approvals.secret_for(self.settings),
                        )
                        answer = {"decision": decision, "reason": (approval or {}).get("reason", ""), **who}
                        if decision == "Approved" and self._late(latest, approval, bool(who.get("verified"))):
                            answer = {"decision": expiry.EXPIRED, "late": True}
                        payload = Command(resume=answer)
                    await asyncio.wait_for(
                        self.graph.ainvoke(payload, config_, context=self.deps),
                        timeout=self.settings.workflow_timeout_seconds,
                    )
                    # The answer may have come while this run was reaching its interrupt (the event found the
                    # run still busy and left): look once more, so an approval is never left unheard.
                    if (await self.graph.aget_state(config_)).interrupts:
                        latest = await self.store.get(incident.namespace, incident.name)
                        decided = ((latest or {}).get("spec") or {}).get("approval") or {}
                        if decided.get("decision") in ("Approved", "Rejected"):
                            approval = decided
                            continue
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = intake.describe(exc)
                    final = attempt == len(RUN_RETRIES) or isinstance(exc, TimeoutError) or self._closing
                    logger.warning(
                        "workflow of Incident %s/%s failed (attempt %d): %s",
                        incident.namespace,
                        incident.name,
                        attempt + 1,
                        reason,
                        exc_info=final,
                    )
                    if final:
                        await self._fail(incident, reason)
                        return
            await asyncio.sleep(RUN_RETRIES[attempt])
            attempt += 1

    async def _unanswered(self, incident: models.Incident) -> bool:
        """Whether the Incident's spec.approval still holds no answer (an answer given in time wins over expiry)."""
        latest = await self.store.get(incident.namespace, incident.name)
        decision = (((latest or {}).get("spec") or {}).get("approval") or {}).get("decision") or "Pending"
        return latest is not None and decision not in ("Approved", "Rejected")

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
        self.intake.close()
        for task in (self._janitor, self._catch_up):
            if task is not None:
                task.cancel()
        await self.wait_idle(grace)
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def sweep_interval(approval_timeout_seconds: float) -> float:
    """How often the janitor looks for expired approvals: a tenth of the timeout, between 0.5 and 60 seconds."""
    return min(60.0, max(approval_timeout_seconds / 10, 0.5))


def refuse(obj: dict[str, Any], settings: config.Settings) -> str | None:
    """Why AEGIS must not work on this Incident (it only runs its own, on allowed targets in their namespace)."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(incidents.LABEL_MANAGED) != "aegis":
        return "not created by AEGIS"
    target = (obj.get("spec") or {}).get("target") or {}
    if target.get("namespace") != meta.get("namespace"):
        return f"its target is in namespace {target.get('namespace')!r}, not in the Incident's own"
    if not settings.namespace_allowed(str(target.get("namespace"))):
        return f"namespace {target.get('namespace')} is not watched by AEGIS"
    return None
