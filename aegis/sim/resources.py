"""The emulated API server's vocabulary: routes, served resources, ``Status`` errors and the object store.

``parse_route`` reads a resource URL into a ``Route``; ``Resource`` is what the server
knows of the resource it names; ``ApiError`` is answered as a Kubernetes ``Status``;
``Store`` holds the objects with a global resourceVersion and the change history that
watches resume from. Shared by ``aegis.sim.apiserver`` and the modules it delegates to
(``admission``, ``customresources``, ``deletion``, ``subresources``), so none of them
imports the server; ``aegis.sim.apiserver`` re-exports ``ApiError``, ``Route`` and
``parse_route`` for its callers.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import copy
import dataclasses
import datetime
import random
from typing import Any

HISTORY_LIMIT = 20_000
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RKey = tuple[str, str]  # (group, plural)

BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "policy",
        "autoscaling",
        "networking.k8s.io",
        "storage.k8s.io",
        "rbac.authorization.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
        "scheduling.k8s.io",
        "node.k8s.io",
    }
)


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choices(_NAME_ALPHABET, k=length))


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclasses.dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool  # the legacy /watch/ path form


@dataclasses.dataclass
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str]

    @property
    def key(self) -> RKey:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def parse_route(path: str) -> Route | None:
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return Route(group, version, plural, namespace, name, sub, watch)


def not_found(res: Resource, name: str) -> ApiError:
    """The API server's 404 for one named object of a resource."""
    return ApiError(
        404, "NotFound", f'{res.qualified} "{name}" not found', {"name": name, "group": res.group, "kind": res.plural}
    )


class Store:
    """Objects by resource, a global resourceVersion, and a bounded change history per resource for watches."""

    def __init__(self) -> None:
        self.objects: dict[RKey, dict[tuple[str, str], dict[str, Any]]] = collections.defaultdict(dict)
        self.history: dict[RKey, list[tuple[int, str, dict[str, Any]]]] = collections.defaultdict(list)
        self.first_rv: dict[RKey, int] = {}  # the oldest resourceVersion a watch may resume from
        self.rv = 1
        self.changed: dict[RKey, asyncio.Condition] = collections.defaultdict(asyncio.Condition)

    def get(self, key: RKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects[key].get((namespace, name))

    def require(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        """One stored object of ``res``, or the API server's 404."""
        obj = self.get(res.key, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def items(self, key: RKey, namespace: str | None) -> list[dict[str, Any]]:
        return [obj for (ns, _), obj in self.objects[key].items() if namespace is None or ns == namespace]

    def since(self, key: RKey, rv: int) -> list[tuple[int, str, dict[str, Any]]]:
        """History entries of one resource newer than ``rv`` (binary search: cheap for many watchers)."""
        history = self.history[key]
        return history[bisect.bisect_right(history, rv, key=lambda entry: entry[0]) :]

    async def put(self, key: RKey, obj: dict[str, Any], event: str) -> dict[str, Any]:
        """Store (or remove, for DELETED) an object with a new resourceVersion and notify that resource's watchers."""
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        ident = (meta.get("namespace") or "", meta["name"])
        if event == "DELETED":
            self.objects[key].pop(ident, None)
        else:
            self.objects[key][ident] = obj
        history = self.history[key]
        history.append((self.rv, event, copy.deepcopy(obj)))
        if len(history) > HISTORY_LIMIT * 5 // 4:  # compact in batches; older resumes get 410 Gone
            del history[: len(history) - HISTORY_LIMIT]
            self.first_rv[key] = history[0][0]
        condition = self.changed[key]
        async with condition:
            condition.notify_all()
        return obj
