"""The ``coordination.k8s.io`` Lease as leader election reads and writes it: its record, and the API.

``Record`` is a Lease's spec (holder, duration, acquire/renew times, transitions) and ``lease_body`` the
object written; ``LeaseApi`` is what ``aegis.kube.leader.Elector`` needs (get, create, replace — RBAC verbs
get, create, update) and ``KubeLeases`` provides it on the ``kubernetes`` client. Used by ``aegis.kube.leader``
and built by ``handlers.lifecycle``; nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kubernetes


@dataclasses.dataclass(frozen=True)
class Record:
    """A Lease's spec, as leader election reads and writes it."""

    holder: str = ""
    lease_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def micro_time(at: datetime.datetime) -> str:
    """A ``MicroTime`` as the API server writes it (RFC 3339, microseconds, UTC)."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseError(RuntimeError):
    """A Lease call failed (API unreachable, timeout, forbidden...): no news about the Lease."""


class LeaseConflict(LeaseError):
    """A write lost a race: the Lease changed since it was read (409), or was created meanwhile."""


class LeaseApi(Protocol):
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def lease_body(namespace: str, name: str, record: Record, resource_version: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version  # the write fails with 409 if anyone wrote since
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": record.spec()}


class KubeLeases:
    """``LeaseApi`` on the ``kubernetes`` client's ``CoordinationV1Api`` (verbs: get, create, update).

    The blocking calls run in a thread of their own rather than in ``aegis.kube.client.Cluster``'s pool: a
    renewal must never queue behind workflow calls (evidence, shadow copies) when every worker is busy.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="aegis-leader")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        call = functools.partial(fn, *args, _preload_content=False, _request_timeout=self.timeout)
        try:
            response = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise LeaseConflict(f"{what}: HTTP 409 {exc.reason}") from exc
            raise LeaseError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        except Exception as exc:  # connection refused, timeouts, TLS...
            raise LeaseError(f"{what}: {type(exc).__name__}: {exc}") from exc
        data = response.data
        return json.loads(data) if data else {}

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"get Lease {namespace}/{name}", self._api.read_namespaced_lease, name, namespace)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        created = await self._call(
            f"create Lease {namespace}/{name}", self._api.create_namespaced_lease, namespace, body
        )
        if created is None:
            raise LeaseError(f"create Lease {namespace}/{name}: namespace {namespace} not found")
        return created

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        fn = self._api.replace_namespaced_lease
        replaced = await self._call(f"update Lease {namespace}/{name}", fn, name, namespace, body)
        if replaced is None:
            raise LeaseConflict(f"update Lease {namespace}/{name}: it was deleted")
        return replaced
