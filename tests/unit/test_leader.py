"""Leader election's decisions on plain data, and the elector over an in-memory Lease API with a hand-driven clock:
take-over only after the lease expired on our own clock, renewals, a lost race (409), a leader that cannot renew
stepping down before anyone else may lead, release, and the admission webhook's client configs passed on only
while leading."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis import config
from aegis.kube import leader, leases

WALL = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def record(
    holder: str = "a", lease: int = 15, renewed: str = "2026-11-21T10:00:00.000000Z", n: int = 0
) -> leases.Record:
    return leases.Record(holder, lease, "2026-11-21T09:00:00.000000Z", renewed, n)


# --- the pure decisions ----------------------------------------------------------------------------------


def test_no_lease_is_created_and_our_own_is_renewed() -> None:
    assert leader.decide(None, "a", now=0.0) == "create"
    seen = leader.Seen(record("a"), "7", changed_at=0.0)
    assert leader.decide(seen, "a", now=1.0) == "renew"
    assert leader.decide(seen, "a", now=1000.0) == "renew"  # ours even when long expired (a restart in the pod)


def test_another_holders_lease_is_taken_over_only_once_it_expired_on_our_clock() -> None:
    seen = leader.Seen(record("b", lease=15), "7", changed_at=100.0)
    assert leader.decide(seen, "a", now=100.0) == "wait"
    assert leader.decide(seen, "a", now=114.9) == "wait"
    assert leader.decide(seen, "a", now=115.0) == "take-over"


def test_the_holders_renew_time_is_never_compared_with_our_clock() -> None:
    """A holder whose clock is an hour behind writes renewTimes that look expired to us: still its lease."""
    stale_looking = record("b", lease=15, renewed="2026-11-21T09:00:00.000000Z")
    seen = leader.observe(None, stale_looking, "7", now=50.0)
    assert leader.decide(seen, "a", now=51.0) == "wait"


def test_every_change_of_the_record_restarts_the_lease_on_our_clock() -> None:
    first = leader.observe(None, record("b", renewed="2026-11-21T10:00:00.000000Z"), "7", now=0.0)
    same = leader.observe(first, record("b", renewed="2026-11-21T10:00:00.000000Z"), "7", now=10.0)
    assert same.changed_at == 0.0  # read again, unchanged: the lease keeps running out
    renewed = leader.observe(same, record("b", renewed="2026-11-21T10:00:02.000000Z"), "8", now=12.0)
    assert renewed.changed_at == 12.0 and renewed.resource_version == "8"
    assert leader.decide(renewed, "a", now=20.0) == "wait"  # 15 s after 0 but only 8 s after the renewal
    assert leader.decide(same, "a", now=15.0) == "take-over"


def test_a_released_lease_is_taken_over_at_once() -> None:
    gone = leader.released(record("b", n=3), WALL)
    assert (gone.holder, gone.lease_seconds, gone.transitions) == ("", 1, 3)
    seen = leader.observe(None, gone, "9", now=0.0)
    assert leader.decide(seen, "a", now=0.0) == "take-over"


def test_claims_renew_keeping_the_term_and_take_over_starting_a_new_one() -> None:
    mine = leader.claim(record("a", n=2), "a", 15, WALL)
    assert mine.holder == "a" and mine.acquire_time == "2026-11-21T09:00:00.000000Z" and mine.transitions == 2
    assert mine.renew_time == "2026-11-21T10:00:00.000000Z"
    taken = leader.claim(record("b", n=2), "a", 15, WALL)
    assert taken.holder == "a" and taken.acquire_time == taken.renew_time and taken.transitions == 3
    created = leader.claim(None, "a", 15, WALL)
    assert created.transitions == 0 and created.lease_seconds == 15
    assert created.spec()["leaseDurationSeconds"] == 15 and created.spec()["holderIdentity"] == "a"


def test_a_leader_leads_only_within_its_renew_deadline_from_its_last_renewal() -> None:
    assert leader.still_leading(100.0, now=109.9, renew_deadline=10)
    assert not leader.still_leading(100.0, now=110.0, renew_deadline=10)
    assert not leader.still_leading(None, now=0.0, renew_deadline=10)


def test_settings_order_retry_below_renew_deadline_below_lease() -> None:
    settings = config.load_settings()
    assert (settings.leader_election, settings.leader_lease_seconds) == (False, 15)
    assert (settings.leader_renew_deadline_seconds, settings.leader_retry_seconds) == (10, 2)
    with pytest.raises(config.SettingsError, match="AEGIS_LEADER_RENEW_DEADLINE_SECONDS"):
        config.load_settings(leader_lease_seconds=6, leader_renew_deadline_seconds=6, leader_retry_seconds=1)
    with pytest.raises(config.SettingsError, match="AEGIS_LEADER_RETRY_SECONDS"):
        config.load_settings(leader_lease_seconds=6, leader_renew_deadline_seconds=4, leader_retry_seconds=4)
    options = leader.Options.from_settings(config.load_settings(pod_name="aegis-7d9f-x2"))
    assert options.identity == "aegis-7d9f-x2" and (options.namespace, options.name) == ("aegis-system", "aegis")
    assert leader.identity() != leader.identity()  # no pod name: two processes on one host differ


# --- the elector over an in-memory API -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """One Lease with the API server's optimistic concurrency: a write with a stale resourceVersion is a 409."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes: list[str] = []

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(body["spec"]["holderIdentity"])
        return copy.deepcopy(self.lease)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise leases.LeaseConflict("AlreadyExists")
        return self._store(body)

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise leases.LeaseConflict("Conflict")
        return self._store(body)


class View:
    """One replica's way to the API: it can be cut off (a partition), or delay a write until told to go on."""

    def __init__(self, store: Leases) -> None:
        self.leases = store
        self.down = False
        self.hold_writes: asyncio.Event | None = None

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.down:
            raise leases.LeaseError("connection refused")
        return await self.leases.get(namespace, name)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise leases.LeaseError("connection refused")
        return await self.leases.create(namespace, body)

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        if self.down:
            raise leases.LeaseError("connection refused")
        return await self.leases.replace(namespace, name, body)


class Calls:
    def __init__(self) -> None:
        self.log: list[str] = []

    def of(self, name: str) -> tuple[Any, Any]:
        async def started() -> None:
            self.log.append(f"{name} leads")

        async def stopped() -> None:
            self.log.append(f"{name} stops")

        return started, stopped


def elector(name: str, api: Any, clock: Clock, calls: Calls | None = None) -> leader.Elector:
    options = leader.Options(
        "aegis-system", "aegis", name, lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2
    )
    started, stopped = (calls or Calls()).of(name)
    return leader.Elector(
        api, options, on_started_leading=started, on_stopped_leading=stopped, clock=clock, wall=lambda: WALL
    )


async def rounds(clock: Clock, electors: list[leader.Elector], seconds: float, step: float = 2.0) -> list[set[str]]:
    """Tick every elector each ``step`` seconds of the fake clock; the set of leaders after each tick."""
    seen = []
    end = clock.now + seconds
    while clock.now < end:
        for one in electors:
            await one.tick()
            leaders = {e.identity for e in electors if e.leadership.is_leader}
            assert len(leaders) <= 1, f"two leaders at once: {leaders}"
            seen.append(leaders)
        clock.now += step
    return seen


async def test_one_leads_the_other_takes_over_only_after_the_lease_expired_on_its_clock() -> None:
    clock, store, calls = Clock(), Leases(), Calls()
    a, b = elector("a", View(store), clock, calls), elector("b", View(store), clock, calls)
    await rounds(clock, [a, b], 10)
    assert a.leadership.is_leader and not b.leadership.is_leader
    assert store.writes == ["a"] * 5 and b.leadership.holder == "a"
    # a dies (no more renewals, no release): b waits out the lease from the last change it saw, then takes over.
    died = clock.now
    while not b.leadership.is_leader:
        await b.tick()
        assert b.leadership.is_leader or clock.now - died < 15
        clock.now += 2.0
    assert clock.now - 2.0 - died <= 15 + 2  # within the lease and one retry
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1
    assert calls.log == ["a leads", "b leads"]


async def test_two_candidates_racing_for_an_expired_lease_never_both_win() -> None:
    clock, store = Clock(), Leases()
    store.lease = {"metadata": {"resourceVersion": "0"}, "spec": record("gone").spec()}
    b_view = View(store)
    a, b = elector("a", View(store), clock), elector("b", b_view, clock)
    await a.tick(), await b.tick()  # both see the dead holder's record
    clock.now += 16
    b_view.hold_writes = asyncio.Event()
    racing_b = asyncio.create_task(b.tick())  # b read version 0 and decided to take over; its write waits
    await asyncio.sleep(0)
    await a.tick()  # a writes first
    b_view.hold_writes.set()
    await racing_b  # b's write carries version 0: 409
    assert a.leadership.is_leader and not b.leadership.is_leader
    assert store.writes == ["a"]
    await b.tick()
    assert not b.leadership.is_leader and b.leadership.holder == "a"


async def test_a_leader_that_cannot_renew_steps_down_before_the_other_may_lead() -> None:
    clock, store, calls = Clock(), Leases(), Calls()
    a_view = View(store)
    a, b = elector("a", a_view, clock, calls), elector("b", View(store), clock, calls)
    await rounds(clock, [a, b], 4)
    a_view.down = True  # a is cut off from the API server; b still reaches it
    timeline = await rounds(clock, [a, b], 24)
    assert not a.leadership.is_leader and b.leadership.is_leader
    assert calls.log == ["a leads", "a stops", "b leads"]
    lost = next(i for i, leaders in enumerate(timeline) if not leaders)
    won = next(i for i, leaders in enumerate(timeline) if leaders == {"b"})
    assert won > lost + 2  # a gap with no leader at all (lease 15 s > renew deadline 10 s)
    # Back on the network: a reads b's record and stays a standby.
    a_view.down = False
    await rounds(clock, [a, b], 6)
    assert b.leadership.is_leader and not a.leadership.is_leader and a.leadership.holder == "b"


async def test_a_renewal_that_landed_late_is_read_back_and_kept() -> None:
    """A renewal lost on the way back (timeout) leaves our own, newer record: the next try renews it again."""
    clock, store = Clock(), Leases()
    a = elector("a", View(store), clock)
    await a.tick()
    assert store.lease is not None
    store.lease["metadata"]["resourceVersion"] = "99"  # our write that we never heard back from
    clock.now += 2
    await a.tick()  # reads version 99, holder is us: renews it
    assert a.leadership.is_leader and store.writes == ["a", "a"]


async def test_release_lets_the_standby_take_over_at_its_next_try() -> None:
    clock, store, calls = Clock(), Leases(), Calls()
    a, b = elector("a", View(store), clock, calls), elector("b", View(store), clock, calls)
    await rounds(clock, [a, b], 4)
    await a.stop(release=True)
    assert not a.leadership.is_leader
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == ""
    await b.tick()  # no waiting out the lease
    assert b.leadership.is_leader and calls.log == ["a leads", "a stops", "b leads"]
    await b.stop(release=False)  # not released: the record still names b
    assert store.lease["spec"]["holderIdentity"] == "b" and not b.leadership.is_leader


async def test_release_leaves_a_lease_someone_else_holds_alone() -> None:
    clock, store = Clock(), Leases()
    a = elector("a", View(store), clock)
    await a.tick()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "b"  # taken over while a did not look
    await a.stop(release=True)
    assert store.lease["spec"]["holderIdentity"] == "b"


# --- the state others wait on ----------------------------------------------------------------------------


async def test_the_webhook_configs_pass_only_while_leading_and_again_in_each_new_term() -> None:
    leadership = leader.Leadership()
    started: list[str] = []
    more = asyncio.Event()

    async def configs() -> AsyncIterator[str]:
        started.append("certificate made")
        yield "ca-1"
        await more.wait()
        yield "ca-2"
        await asyncio.Event().wait()

    out: list[str] = []

    async def consume() -> None:
        async for item in leader.while_leading(configs(), leadership):
            out.append(item)

    task = asyncio.create_task(consume())

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    await settle()
    assert started == [] and out == []  # a standby makes no certificate and writes no configuration
    leadership.set(True)
    await settle()
    assert out == ["ca-1"]
    leadership.set(False)
    more.set()  # a new config (a renewed certificate) while another replica leads: held back
    await settle()
    assert out == ["ca-1"]
    leadership.set(True)  # leading again: the latest config is written again
    await settle()
    assert out == ["ca-1", "ca-2"]
    leadership.set(False)
    leadership.set(True)
    await settle()
    assert out == ["ca-1", "ca-2", "ca-2"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
