"""Emulated Job and CronJob controllers, with kube-controller-manager's visible behaviour.

A Job creates pods (``generateName`` from the Job, the ``batch.kubernetes.io/controller-uid``
and ``job-name`` labels the API server put on its template, a controller ownerReference
and the ``batch.kubernetes.io/job-tracking`` finalizer), counts finished pods into
``status.succeeded``/``status.failed`` once (removing the finalizer, as the real
controller's tracking does), keeps ``parallelism`` pods active, and ends with condition
``Complete`` (event ``Completed``) when ``completions`` pods succeeded, or ``Failed`` with
reason ``BackoffLimitExceeded`` (or ``DeadlineExceeded``) deleting what still runs.

A CronJob creates a Job at each time of its standard 5-field schedule (``*``, ``*/N``,
``a-b``, ``a,b``, ``a-b/N``, the ``@hourly``-style macros), on the ``SimClock`` (cluster
time), named ``<cronjob>-<minutes since the epoch>``, with ``lastScheduleTime``,
``status.active``, ``SawCompletedJob``, ``lastSuccessfulTime``, ``concurrencyPolicy``
and the successful/failed history limits. Both read through the shared informers of
``aegis.sim.controllers``; run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from aegis.sim import client, controllers, events

logger = logging.getLogger("aegis.sim.jobs")
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # day-of-week 7 is Sunday too


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("type") == kind and c.get("status") == "True"
        ),
        None,
    )


def finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` for a finished Job, else None."""
    for kind in ("Complete", "Failed"):
        if _condition(job, kind):
            return kind
    return None


class Schedule:
    """A standard 5-field cron schedule (minute hour day-of-month month day-of-week), in UTC."""

    def __init__(self, text: str) -> None:
        spec = _MACROS.get(text.strip(), text.strip())
        fields = spec.split()
        if len(fields) != 5:
            raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {text}")
        self.sets = [self._field(field, low, high) for field, (low, high) in zip(fields, _RANGES, strict=True)]
        self.any_day, self.any_weekday = fields[2] == "*", fields[4] == "*"

    @staticmethod
    def _field(field: str, low: int, high: int) -> set[int]:
        values: set[int] = set()
        for part in field.split(","):
            body, _, step_text = part.partition("/")
            step = int(step_text) if step_text else 1
            if body in ("*", "?"):
                start, end = low, high
            elif "-" in body:
                start, end = (int(x) for x in body.split("-", 1))
            else:
                start = int(body)
                end = high if step_text else start
            if step <= 0 or start < low or end > high or start > end:
                raise ValueError(f"invalid cron field {field!r}")
            values.update(range(start, end + 1, step))
        return {0 if (v == 7 and high == 7) else v for v in values}

    def matches(self, moment: datetime.datetime) -> bool:
        minute, hour, day, month, weekday = self.sets
        if moment.minute not in minute or moment.hour not in hour or moment.month not in month:
            return False
        day_ok, weekday_ok = moment.day in day, (moment.isoweekday() % 7) in weekday
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok  # both restricted: either matches, as cron does

    def last_between(self, after: datetime.datetime, until: datetime.datetime) -> datetime.datetime | None:
        """The latest scheduled minute in (after, until], looking back at most a day."""
        moment = until.replace(second=0, microsecond=0)
        floor = max(after, until - datetime.timedelta(days=1))
        while moment > floor:
            if self.matches(moment):
                return moment
            moment -= datetime.timedelta(minutes=1)
        return None


class JobController(controllers.Controller):
    component = "job-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.counted: dict[str, set[str]] = {}  # job uid -> pod uids already counted (the cache may lag)
        self.started: dict[str, float] = {}  # job uid -> sim time it started (for activeDeadlineSeconds)

    async def reconcile(self) -> None:
        uids = {job["metadata"]["uid"] for job in self.inf["Job"].items()}
        controllers._prune(self.counted, uids)
        controllers._prune(self.started, uids)
        await self.each("Job", self._sync)

    async def _sync(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        ns, uid = meta["namespace"], meta["uid"]
        status = dict(job.get("status") or {})
        pods = [p for p in self.inf["Pod"].items(ns) if controllers.owned_by(p, job)]
        counted = self.counted.setdefault(uid, set())
        succeeded, failed = int(status.get("succeeded") or 0), int(status.get("failed") or 0)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            done = phase in ("Succeeded", "Failed") or not controllers.alive(pod)
            if not done or TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or []):
                continue
            if pod["metadata"]["uid"] not in counted:
                counted.add(pod["metadata"]["uid"])
                if phase == "Succeeded":
                    succeeded += 1
                else:
                    failed += 1
            rest = [f for f in pod["metadata"].get("finalizers") or [] if f != TRACKING_FINALIZER]
            await self.api.patch("Pod", ns, pod["metadata"]["name"], {"metadata": {"finalizers": rest or None}})
        active = [
            p
            for p in pods
            if controllers.alive(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        outcome = finished(job)
        now = events._now()
        status.setdefault("startTime", now)
        self.started.setdefault(uid, self.clock.now())
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        conditions = list(status.get("conditions") or [])
        if outcome is None:
            reason = message = None
            deadline = spec.get("activeDeadlineSeconds")
            if failed > int(spec.get("backoffLimit", 6)):
                reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            elif deadline is not None and self.clock.now() - self.started[uid] > int(deadline):
                reason, message = "DeadlineExceeded", "Job was active longer than specified deadline"
            if reason is not None:
                outcome = "Failed"
                conditions.append(
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastProbeTime": now,
                        "lastTransitionTime": now,
                    }
                )
                await self.events.record(job, "Warning", reason, str(message))
            elif (completions is not None and succeeded >= int(completions)) or (
                completions is None and succeeded > 0 and not active
            ):
                outcome = "Complete"
                conditions.append(
                    {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                )
                status["completionTime"] = now
                await self.events.record(job, "Normal", "Completed", "Job completed")
        if outcome is not None:
            for pod in active:  # what still runs of a finished Job is deleted
                await self.api.delete("Pod", ns, pod["metadata"]["name"])
            active = []
        elif not spec.get("suspend"):
            remaining = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
            for _ in range(max(remaining - len(active), 0)):
                pod = await self._create_pod(job)
                if pod is None:
                    break
                active.append(pod)
                await self.events.record(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        new_status: dict[str, Any] = {
            **status,
            "active": len(active) or None,
            "ready": sum(1 for p in active if controllers.pod_ready(p)),
            "succeeded": succeeded or None,
            "failed": failed or None,
            "conditions": conditions or None,
            "uncountedTerminatedPods": {},
        }
        new_status = {k: v for k, v in new_status.items() if v is not None}
        if new_status != (job.get("status") or {}):
            await self.api.status(
                "Job", ns, meta["name"], {**new_status, **{k: None for k in status if k not in new_status}}
            )

    async def _create_pod(self, job: dict[str, Any]) -> dict[str, Any] | None:
        template = (job.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{job['metadata']['name']}-",
                "namespace": job["metadata"]["namespace"],
                "labels": dict(template_meta.get("labels") or {}),
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [controllers.owner_ref({**job, "kind": "Job", "apiVersion": "batch/v1"})],
                "finalizers": [TRACKING_FINALIZER],
            },
            "spec": template.get("spec") or {},
        }
        try:
            return await self.api.create(body)
        except client.ApiError as exc:
            message = str(exc).removeprefix(f"HTTP {exc.status}: ")
            await self.events.record(job, "Warning", "FailedCreate", f"Error creating: {message}")
            return None


class CronJobController(controllers.Controller):
    component = "cronjob-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.epoch = datetime.datetime.now(tz=datetime.UTC)  # cluster time is this plus SimClock seconds

    def cluster_now(self) -> datetime.datetime:
        return self.epoch + datetime.timedelta(seconds=self.clock.now())

    async def reconcile(self) -> None:
        await self.each("CronJob", self._sync)

    async def _sync(self, cron: dict[str, Any]) -> None:
        meta, spec = cron["metadata"], cron.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        status = dict(cron.get("status") or {})
        jobs = [j for j in self.inf["Job"].items(ns) if controllers.owned_by(j, cron)]
        by_uid = {j["metadata"]["uid"]: j for j in jobs}
        active = []
        for ref in status.get("active") or []:
            job = by_uid.get(ref.get("uid"))
            if job is None:
                continue  # gone: no longer active
            outcome = finished(job)
            if outcome is None:
                active.append(ref)
                continue
            await self.events.record(
                cron, "Normal", "SawCompletedJob", f"Saw completed job: {job['metadata']['name']}, status: {outcome}"
            )
            if outcome == "Complete" and (job.get("status") or {}).get("completionTime"):
                status["lastSuccessfulTime"] = job["status"]["completionTime"]
        known = {ref.get("uid") for ref in active}
        for job in jobs:  # a running Job the status does not list yet (our cache was behind)
            if finished(job) is None and job["metadata"]["uid"] not in known and controllers.alive(job):
                active.append(_reference(job))
        await self._history(cron, jobs)
        if not spec.get("suspend"):
            try:
                schedule = Schedule(str(spec.get("schedule", "")))
            except ValueError as exc:
                await self.events.record(cron, "Warning", "UnparseableSchedule", f"unparseable schedule: {exc}")
                return
            last = _parse_time(status.get("lastScheduleTime")) or _parse_time(meta.get("creationTimestamp"))
            due = schedule.last_between(last or self.epoch, self.cluster_now())
            if due is not None:
                created = await self._start(cron, due, active)
                if created is not None:
                    active.append(_reference(created))
                status["lastScheduleTime"] = _rfc3339(due)
        status["active"] = active or None
        wanted = {k: v for k, v in status.items() if v is not None}
        if wanted != (cron.get("status") or {}):
            await self.api.status("CronJob", ns, name, {**wanted, **{k: None for k in status if k not in wanted}})

    async def _start(
        self, cron: dict[str, Any], due: datetime.datetime, active: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        meta, spec = cron["metadata"], cron.get("spec") or {}
        ns = meta["namespace"]
        policy = spec.get("concurrencyPolicy", "Allow")
        if active and policy == "Forbid":
            return None
        if active and policy == "Replace":
            for ref in list(active):
                await self.api.delete("Job", ns, ref["name"])
                await self.events.record(cron, "Normal", "SuccessfulDelete", f"Deleted job {ref['name']}")
                active.remove(ref)
        template = spec.get("jobTemplate") or {}
        template_meta = template.get("metadata") or {}
        job_name = f"{meta['name']}-{int(due.timestamp() // 60)}"
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": ns,
                "labels": dict(template_meta.get("labels") or {}),
                "annotations": {
                    **(template_meta.get("annotations") or {}),
                    "batch.kubernetes.io/cronjob-scheduled-timestamp": _rfc3339(due),
                },
                "ownerReferences": [controllers.owner_ref({**cron, "kind": "CronJob", "apiVersion": "batch/v1"})],
            },
            "spec": template.get("spec") or {},
        }
        try:
            job = await self.api.create(body)
        except client.ApiError as exc:
            if exc.status == 409:
                return None  # already made for this time
            message = str(exc).removeprefix(f"HTTP {exc.status}: ")
            await self.events.record(cron, "Warning", "FailedCreate", f"Error creating job: {message}")
            return None
        await self.events.record(cron, "Normal", "SuccessfulCreate", f"Created job {job_name}")
        return job

    async def _history(self, cron: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        spec = cron.get("spec") or {}
        for outcome, limit_key, default in (
            ("Complete", "successfulJobsHistoryLimit", 3),
            ("Failed", "failedJobsHistoryLimit", 1),
        ):
            done = [j for j in jobs if finished(j) == outcome and controllers.alive(j)]
            done.sort(key=lambda j: ((j.get("status") or {}).get("startTime") or "", j["metadata"]["name"]))
            limit = int(spec.get(limit_key, default))
            for job in done[: max(len(done) - limit, 0)]:
                await self.api.delete("Job", job["metadata"]["namespace"], job["metadata"]["name"])
                await self.events.record(cron, "Normal", "SuccessfulDelete", f"Deleted job {job['metadata']['name']}")


def _reference(job: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "resourceVersion": meta.get("resourceVersion"),
    }
