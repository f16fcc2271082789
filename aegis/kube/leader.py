"""Leader election over a ``coordination.k8s.io`` Lease, as client-go's ``leaderelection`` does it.

Role: with two or more replicas of the operator, exactly one (the holder of the Lease) works on incidents;
the others stand by and take over when it stops renewing. Kopf's peering is not used for this: it pauses
every operator of the same priority, and a paused operator's workflow runs would go on.

How (the semantics of client-go's leaderelection, with its record fields ``holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and ``leaseTransitions``):

- a candidate acquires the Lease when there is none (create), when it holds it already (renew), when it was
  released (no holder), or when the holder has not renewed it for its ``leaseDurationSeconds`` *as observed on
  our own monotonic clock since we last saw the record change* — never by comparing the holder's
  ``renewTime`` with our clock, which may be skewed;
- every write carries the ``resourceVersion`` that was read (a PUT, verb ``update``; a first ``create``), so of
  two candidates racing for an expired Lease only one wins: the other gets 409 Conflict and stays a candidate;
- the leader renews every ``retry`` period; when it has not renewed for ``renew_deadline`` (shorter than the
  lease) it stops leading before anyone else may start, and competes again;
- on a graceful stop the leader releases the Lease (no holder, a one-second duration): the next one takes
  over at its next try instead of waiting the lease out.

``decide``, ``claim``, ``released``, ``observe`` and ``still_leading`` are the pure decisions (unit-tested
with plain data); ``Elector`` applies them over a ``leases.LeaseApi`` (``leases.KubeLeases`` for the real one); and
``Leadership`` is the state others watch: the engine's start/stop callbacks are called on each change, the
admission webhook (``aegis.kube.webhook``) waits for it through ``while_leading``, and readiness reads
``Leadership.is_leader``. Started and stopped by ``handlers.lifecycle``; nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

from aegis import config
from aegis.kube import leases

logger = logging.getLogger("aegis.leader")

T = TypeVar("T")
Action = Literal["create", "renew", "take-over", "wait"]
_NOTHING: Any = object()


# --- the record and the decisions (pure) -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Seen:
    """The Lease as last read: its record, its resourceVersion, and when (our monotonic clock) it last changed."""

    record: leases.Record
    resource_version: str | None
    changed_at: float


def observe(previous: Seen | None, record: leases.Record, resource_version: str | None, now: float) -> Seen:
    """What we know after reading ``record``: the time of change moves only when the record is not the one seen."""
    if previous is not None and previous.record == record:
        return dataclasses.replace(previous, resource_version=resource_version)
    return Seen(record=record, resource_version=resource_version, changed_at=now)


def decide(seen: Seen | None, identity: str, now: float) -> Action:
    """What ``identity`` does after reading the Lease (``seen`` None: there is no Lease).

    ``create`` it, ``renew`` our own, ``take-over`` one released or not renewed for its duration (counted on
    our clock from the moment we saw it change), or ``wait``.
    """
    if seen is None:
        return "create"
    if seen.record.holder == identity:
        return "renew"
    if not seen.record.holder:
        return "take-over"
    if now - seen.changed_at >= seen.record.lease_seconds:
        return "take-over"
    return "wait"


def claim(previous: leases.Record | None, identity: str, lease_seconds: int, at: datetime.datetime) -> leases.Record:
    """The record ``identity`` writes to hold the Lease: a renewal keeps the acquire time and the count of
    transitions; a new holder starts its own term (one transition more)."""
    stamp = leases.micro_time(at)
    if previous is not None and previous.holder == identity:
        return leases.Record(identity, lease_seconds, previous.acquire_time or stamp, stamp, previous.transitions)
    transitions = 0 if previous is None else previous.transitions + 1
    return leases.Record(identity, lease_seconds, stamp, stamp, transitions)


def released(previous: leases.Record, at: datetime.datetime) -> leases.Record:
    """The record a leader writes when it lets go: no holder, a one-second lease (as client-go's release)."""
    stamp = leases.micro_time(at)
    return leases.Record("", 1, stamp, stamp, previous.transitions)


def still_leading(renewed_at: float | None, now: float, renew_deadline: float) -> bool:
    """Whether a leader whose last successful renewal was *sent* at ``renewed_at`` may still act as the leader."""
    return renewed_at is not None and now - renewed_at < renew_deadline


# --- the state others watch --------------------------------------------------------------------------------


class Leadership:
    """Whether this replica leads now; ``term`` counts the times it became the leader."""

    def __init__(self, leading: bool = False) -> None:
        self._leading = leading
        self.term = 1 if leading else 0
        self.holder: str = ""  # the holder as last seen (ours or another's)
        self._changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._leading

    def set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self.term += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_leading(self, after_term: int = 0) -> int:
        """Wait until this replica leads in a term later than ``after_term``; the term."""
        while not (self._leading and self.term > after_term):
            await self._changed.wait()
        return self.term


async def while_leading(items: AsyncIterator[T], leadership: Leadership) -> AsyncIterator[T]:
    """The items of ``items``, passed on only while this replica leads — and the latest once more at the start
    of each later term. ``items`` is not started before the first term.

    For the admission webhook's client configs (``aegis.kube.webhook``): only the leader generates a certificate
    and writes its CA bundle into the webhook configuration, and a replica that leads again after another one
    led (and wrote its own) writes its own again.
    """
    await leadership.wait_leading()
    pending_item: asyncio.Future[T] = asyncio.ensure_future(anext(items))
    pending_term: asyncio.Future[int] | None = None
    latest: Any = _NOTHING
    fresh = False
    passed = 0  # the term in which the latest item was passed on
    try:
        while True:
            if latest is not _NOTHING and leadership.is_leader and (fresh or leadership.term != passed):
                passed, fresh = leadership.term, False
                yield latest
                continue
            waiting: set[asyncio.Future[Any]] = {pending_item}
            if latest is not _NOTHING:
                pending_term = asyncio.ensure_future(leadership.wait_leading(after_term=passed))
                waiting.add(pending_term)
            try:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if pending_term is not None and not pending_term.done():
                    pending_term.cancel()
                pending_term = None
            if pending_item in done:
                try:
                    latest, fresh = pending_item.result(), True
                except StopAsyncIteration:
                    return
                pending_item = asyncio.ensure_future(anext(items))
    finally:
        pending_item.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending_item  # let the source's own clean-up run (e.g. the webhook server stops listening)


# --- the elector -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """Where the Lease is, who we are, and the three durations (retry < renew deadline < lease)."""

    namespace: str
    name: str
    identity: str
    lease_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: config.Settings) -> Options:
        return cls(
            namespace=settings.leader_election_namespace,
            name=settings.leader_election_name,
            identity=identity(settings.pod_name),
            lease_seconds=settings.leader_lease_seconds,
            renew_deadline_seconds=settings.leader_renew_deadline_seconds,
            retry_seconds=settings.leader_retry_seconds,
        )


def identity(pod_name: str = "") -> str:
    """This replica's name in the Lease: the pod's name (``AEGIS_POD_NAME``, from the downward API), else the
    host name and a short random suffix (two processes on one host never share an identity)."""
    return pod_name or f"{socket.gethostname()}-{secrets.token_hex(3)}"


Callback = Callable[[], Awaitable[None]]


class Elector:
    """Competes for the Lease and keeps it; tells ``on_started_leading`` / ``on_stopped_leading`` of changes."""

    def __init__(
        self,
        api: leases.LeaseApi,
        options: Options,
        *,
        leadership: Leadership | None = None,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.options = options
        self.leadership = leadership if leadership is not None else Leadership()
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        self.wall = wall
        self.task: asyncio.Task[None] | None = None
        self._seen: Seen | None = None
        self._renewed_at: float | None = None  # when our last successful write was sent (our clock)
        self._last_action: Action | None = None
        self._last_trouble = ""

    @property
    def identity(self) -> str:
        return self.options.identity

    @property
    def where(self) -> str:
        return f"{self.options.namespace}/{self.options.name}"

    def start(self) -> asyncio.Task[None]:
        """Compete in the background (never blocks: a standby's start-up does not wait for leadership)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name=f"aegis:leader-election:{self.where}")
        return self.task

    async def run(self) -> None:
        """Try to acquire or renew every retry period, forever. Cancelled: stops leading, releases nothing."""
        try:
            while True:
                began = self.clock()
                await self.tick()
                wake = began + self.options.retry_seconds
                if self.leadership.is_leader and self._renewed_at is not None:  # failing to renew: stop on time
                    wake = min(wake, self._renewed_at + self.options.renew_deadline_seconds)
                await asyncio.sleep(max(0.0, wake - self.clock()))
        finally:
            # Cancelled (the process is ending; SIGKILL in a test): nothing acts on this leadership any more.
            self.leadership.set(False)

    async def tick(self) -> None:
        """One try, then the change of state it implies (callbacks run here, outside the try's deadline)."""
        leading = self.leadership.is_leader
        try:
            if leading:
                left = (self._renewed_at or 0.0) + self.options.renew_deadline_seconds - self.clock()
                held = await asyncio.wait_for(self.attempt(), timeout=max(left, 0.0))
            else:
                held = await self.attempt()
        except TimeoutError:
            held = None
        except Exception as exc:  # never let one failure end the election
            logger.warning("leader election (Lease %s): %s", self.where, exc)
            held = None
        if held is True and not leading:
            how = {"create": "created it", "take-over": "took it over", "renew": "it was ours"}.get(
                str(self._last_action), ""
            )
            logger.info("became the leader as %s (Lease %s: %s)", self.identity, self.where, how)
            await self._changed(True)
        elif held is False and leading:
            logger.warning("lost leadership: Lease %s is held by %s now", self.where, self.leadership.holder)
            await self._changed(False)
        elif (
            held is None
            and leading
            and not still_leading(self._renewed_at, self.clock(), self.options.renew_deadline_seconds)
        ):
            logger.warning(
                "lost leadership: Lease %s not renewed within %.0fs; standing by",
                self.where,
                self.options.renew_deadline_seconds,
            )
            await self._changed(False)

    async def attempt(self) -> bool | None:
        """Read the Lease and acquire or renew it if we may: True (we hold it now), False (another one does),
        None (no news: the API failed, or our write lost a race and the Lease must be read again)."""
        try:
            lease = await self.api.get(self.options.namespace, self.options.name)
        except leases.LeaseError as exc:
            self._trouble(f"reading Lease {self.where}: {exc}")
            return None
        now = self.clock()
        if lease is None:
            self._seen = None
        else:
            version = (lease.get("metadata") or {}).get("resourceVersion")
            self._seen = observe(self._seen, leases.Record.from_lease(lease), version, now)
            self._note_holder(self._seen.record.holder)
        action = decide(self._seen, self.identity, now)
        self._last_action = action
        if action == "wait":
            return False
        previous = self._seen.record if self._seen is not None else None
        record = claim(previous, self.identity, self.options.lease_seconds, self.wall())
        sent = self.clock()
        try:
            if self._seen is None:
                body = leases.lease_body(self.options.namespace, self.options.name, record, None)
                written = await self.api.create(self.options.namespace, body)
            else:
                body = leases.lease_body(self.options.namespace, self.options.name, record, self._seen.resource_version)
                written = await self.api.replace(self.options.namespace, self.options.name, body)
        except leases.LeaseConflict as exc:
            logger.debug("Lease %s: %s (someone else wrote it first)", self.where, exc)
            return None
        except leases.LeaseError as exc:
            self._trouble(f"writing Lease {self.where}: {exc}")
            return None
        self._last_trouble = ""
        version = (written.get("metadata") or {}).get("resourceVersion")
        self._seen = Seen(leases.Record.from_lease(written), version, self.clock())
        self._renewed_at = sent
        self._note_holder(self.identity)
        return True

    def _trouble(self, message: str) -> None:
        """A failed call: a warning the first time (a missing namespace, RBAC), then quietly at every retry."""
        logger.log(logging.DEBUG if message == self._last_trouble else logging.WARNING, "%s", message)
        self._last_trouble = message

    def _note_holder(self, holder: str) -> None:
        if holder != self.leadership.holder:
            if holder and holder != self.identity:
                logger.info("Lease %s is held by %s; %s stands by", self.where, holder, self.identity)
            self.leadership.holder = holder

    async def _changed(self, leading: bool) -> None:
        self.leadership.set(leading)
        callback = self.on_started_leading if leading else self.on_stopped_leading
        if callback is None:
            return
        try:
            await callback()
        except Exception:  # a failing callback must not end the election
            logger.exception("leader election: the %s callback failed", "start" if leading else "stop")

    async def stop(self, release: bool = True) -> None:
        """Stop competing; a leader stops leading (callback) and, with ``release``, lets go of the Lease."""
        was_leading = self.leadership.is_leader
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.leadership.set(False)
        if not was_leading:
            return
        if self.on_stopped_leading is not None:
            try:
                await self.on_stopped_leading()
            except Exception:
                logger.exception("leader election: the stop callback failed")
        if release:
            try:
                await asyncio.wait_for(self._release(), timeout=self.options.renew_deadline_seconds)
            except (TimeoutError, leases.LeaseError) as exc:
                logger.warning("could not release Lease %s (it expires by itself): %s", self.where, exc)

    async def _release(self) -> None:
        lease = await self.api.get(self.options.namespace, self.options.name)
        if lease is None or leases.Record.from_lease(lease).holder != self.identity:
            return  # taken over meanwhile: not ours to release
        version = (lease.get("metadata") or {}).get("resourceVersion")
        record = released(leases.Record.from_lease(lease), self.wall())
        body = leases.lease_body(self.options.namespace, self.options.name, record, version)
        await self.api.replace(self.options.namespace, self.options.name, body)
        self._renewed_at = None
        logger.info("released Lease %s: the next replica takes over at once", self.where)
