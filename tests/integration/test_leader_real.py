"""Leader election (``aegis.kube.leader``) between two electors on the REAL API server (kube-apiserver v1.28.4).

Exactly one leads; a leader killed without releasing (its task cancelled, standing in for SIGKILL) is succeeded
within the lease and a retry period, and only after its lease ran out; a graceful stop hands over within about a
retry period; a leader cut off from the API server stops leading before the other starts. Throughout, both
electors' states are sampled every few milliseconds: never two leaders at the same instant. Each test has a
namespace of its own for its Lease, removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kubernetes
import pytest

from aegis.kube import leader, leases
from aegis.sim import controlplane
from tests.conftest import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.real]

LEASE, RENEW_DEADLINE, RETRY = 4, 3.0, 0.5
SLACK = 2.0  # API latency and scheduling on a loaded 2-core machine


@pytest.fixture()
def namespace(real_control_plane: controlplane.ControlPlane) -> Iterator[str]:
    name = f"leader-{secrets.token_hex(3)}"
    kubectl(real_control_plane, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(real_control_plane, "delete", "namespace", name, "--wait=false")


class CutOff:
    """A replica's way to the API server that can be cut (a network partition, for that replica only)."""

    def __init__(self, api: leases.LeaseApi) -> None:
        self.api = api
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise leases.LeaseError("connection refused (partitioned)")

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return await self.api.get(namespace, name)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.api.create(namespace, body)

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.api.replace(namespace, name, body)


@dataclasses.dataclass
class Pair:
    electors: dict[str, leader.Elector]
    links: dict[str, CutOff]
    overlaps: list[tuple[float, list[str]]]
    samples: list[int]
    changes: list[tuple[float, str, bool]]  # (monotonic time, identity, leads)
    sampled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # set after each whole sample

    def leaders(self) -> list[str]:
        return [name for name, e in self.electors.items() if e.leadership.is_leader]

    async def wait(self, condition: Any, within: float, what: str) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():
                at = time.monotonic()
                # The sampler is another task: let it take one whole sample after this one, so ``changes``
                # holds what was just seen (one sample runs without an await, so it saw this state or later).
                self.sampled.clear()
                await self.sampled.wait()
                return at
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out after {within}s waiting for {what}; leaders: {self.leaders()}")

    def when(self, name: str, leads: bool, after: float) -> float:
        return next(at for at, who, state in self.changes if who == name and state == leads and at >= after)


@pytest.fixture()
async def pair(real_control_plane: controlplane.ControlPlane, namespace: str) -> AsyncIterator[Pair]:
    clients = [kubernetes.config.new_client_from_config(config_file=str(real_control_plane.kubeconfig)) for _ in "ab"]
    apis = [leases.KubeLeases(api, timeout=RENEW_DEADLINE / 2) for api in clients]
    links = {name: CutOff(api) for name, api in zip("ab", apis, strict=True)}
    electors = {
        name: leader.Elector(
            links[name],
            leader.Options(namespace, "aegis", name, LEASE, RENEW_DEADLINE, RETRY),
        )
        for name in "ab"
    }
    result = Pair(electors, links, overlaps=[], samples=[0], changes=[])

    async def sample() -> None:
        last = {name: False for name in electors}
        while True:
            leaders = result.leaders()
            now = time.monotonic()
            if len(leaders) > 1:
                result.overlaps.append((now, leaders))
            for name, e in electors.items():
                if e.leadership.is_leader != last[name]:
                    last[name] = e.leadership.is_leader
                    result.changes.append((now, name, last[name]))
            result.samples[0] += 1
            result.sampled.set()
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    for e in electors.values():
        e.start()
    try:
        yield result
    finally:
        sampler.cancel()
        for e in electors.values():
            await e.stop(release=False)
        for api_leases, api in zip(apis, clients, strict=True):
            api_leases.close()
            api.close()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def lease_of(plane: controlplane.ControlPlane, namespace: str) -> dict[str, Any]:
    api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
    try:
        return kubernetes.client.CoordinationV1Api(api).read_namespaced_lease("aegis", namespace).to_dict()["spec"]
    finally:
        api.close()


async def one_leader(pair: Pair) -> tuple[str, str]:
    await pair.wait(lambda: len(pair.leaders()) == 1, 20, "one leader")
    await asyncio.sleep(3 * RETRY)  # a few renewals: the same one still leads, the other still stands by
    leaders = pair.leaders()
    assert len(leaders) == 1, leaders
    first = leaders[0]
    return first, next(name for name in pair.electors if name != first)


async def test_one_leads_and_the_other_takes_over_within_the_lease_when_it_dies(
    pair: Pair, real_control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    first, second = await one_leader(pair)
    spec = lease_of(real_control_plane, namespace)
    assert spec["holder_identity"] == first and spec["lease_duration_seconds"] == LEASE
    assert spec["lease_transitions"] == 0 and spec["acquire_time"] is not None and spec["renew_time"] is not None

    task = pair.electors[first].task
    assert task is not None
    killed = time.monotonic()
    task.cancel()  # as SIGKILL: no release, the Lease still names it
    with contextlib.suppress(asyncio.CancelledError):
        await task
    taken = await pair.wait(lambda: pair.leaders() == [second], LEASE + RETRY + SLACK + 5, "the standby to lead")
    took = taken - killed
    print(f"\ntakeover after the leader was killed: {took:.2f}s (lease {LEASE}s, retry {RETRY}s)")
    assert took <= LEASE + RETRY + SLACK, f"took {took:.2f}s"
    assert took >= LEASE - RETRY - 0.2, f"took over after {took:.2f}s, before the lease could have run out"
    spec = lease_of(real_control_plane, namespace)
    assert spec["holder_identity"] == second and spec["lease_transitions"] == 1
    assert pair.overlaps == [] and pair.samples[0] > 100


async def test_a_graceful_stop_hands_over_within_about_a_retry_period(
    pair: Pair, real_control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    first, second = await one_leader(pair)
    stopped = time.monotonic()
    await pair.electors[first].stop(release=True)
    assert not pair.electors[first].leadership.is_leader
    taken = await pair.wait(lambda: pair.leaders() == [second], LEASE + SLACK, "the standby to lead")
    took = taken - stopped
    print(f"\ntakeover after a graceful stop (Lease released): {took:.2f}s (retry {RETRY}s)")
    assert took <= RETRY + SLACK and took < LEASE, f"took {took:.2f}s: the release did not hand over"
    spec = lease_of(real_control_plane, namespace)
    assert spec["holder_identity"] == second and spec["lease_transitions"] == 1
    assert pair.overlaps == []


async def test_a_leader_cut_off_from_the_api_server_stops_leading_before_the_other_starts(
    pair: Pair, real_control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    first, second = await one_leader(pair)
    cut = time.monotonic()
    pair.links[first].down = True  # it keeps running, but cannot renew
    await pair.wait(lambda: pair.leaders() == [second], LEASE + RETRY + SLACK + 5, "the other to lead")
    stepped_down = pair.when(first, False, cut) - cut
    took_over = pair.when(second, True, cut) - cut
    print(f"\ncut off: the leader stood down after {stepped_down:.2f}s, the other led after {took_over:.2f}s")
    assert stepped_down <= RENEW_DEADLINE + 1.0, f"still leading {stepped_down:.2f}s after it lost the API server"
    assert took_over > stepped_down
    assert pair.overlaps == []
    pair.links[first].down = False  # back: it sees the other's record and stands by
    await asyncio.sleep(3 * RETRY)
    assert pair.leaders() == [second] and pair.electors[first].leadership.holder == second
    assert lease_of(real_control_plane, namespace)["holder_identity"] == second
