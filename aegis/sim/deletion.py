"""Deletion semantics of the emulated API server, as kube-apiserver and its controllers apply them.

``Deletion`` is a mixin of ``aegis.sim.apiserver.SimAPIServer``: DELETE of one object
(uid and resourceVersion preconditions, ``dryRun``) and of a collection; finalizers
that hold an object with its ``deletionTimestamp`` set; graceful deletion of pods bound
to a node (``deletionTimestamp`` and ``deletionGracePeriodSeconds`` from DeleteOptions
or the pod's own grace, kept until a delete with grace 0 — the kubelet's); namespace
deletion that removes what it contains (Terminating until its pods are gone, the
namespace controller's part); and ownerReference garbage collection (Background,
Foreground, Orphan), pods going the same graceful way. Eviction and PUT/PATCH that
clear the last finalizer end here too.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import Callable
from typing import Any

import kmock

from aegis.sim import customresources, resources, subresources
from aegis.sim.resources import ApiError, Resource


class Deletion:
    """DELETE, finalizers, graceful pod deletion, namespace purge and garbage collection (a ``SimAPIServer`` mixin)."""

    __slots__ = ()

    # Provided by SimAPIServer.
    store: resources.Store
    logs: subresources.Logs
    resources: kmock.ResourcesArray
    _background: set[asyncio.Task[Any]]
    _closing: bool
    _list: Callable[[Resource, str | None, dict[str, str]], dict[str, Any]]
    _select: Callable[[Resource, str | None, dict[str, str]], list[dict[str, Any]]]

    async def _delete(
        self, res: Resource, namespace: str, name: str, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.store.require(res, namespace, name)
        preconditions = (body or {}).get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != obj["metadata"].get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: "
                f"{obj['metadata'].get('uid')}",
            )
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != obj["metadata"].get(
            "resourceVersion"
        ):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.qualified} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )
        if query.get("dryRun") == "All" or (body or {}).get("dryRun") == ["All"]:
            return obj
        policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Background"
        return await self._remove(res, obj, policy, _grace(query, body))

    async def _remove(
        self, res: Resource, obj: dict[str, Any], policy: str, grace: int | None = None
    ) -> dict[str, Any]:
        """Delete one object: namespaces terminate, pods on a node terminate gracefully, finalizers hold."""
        meta = obj["metadata"]
        if res.key == ("", "namespaces"):
            if not meta.get("deletionTimestamp"):
                terminating = copy.deepcopy(obj)
                terminating["metadata"]["deletionTimestamp"] = resources.now_rfc3339()
                terminating.setdefault("status", {})["phase"] = "Terminating"
                obj = await self.store.put(res.key, terminating, "MODIFIED")
                self._spawn(self._purge_namespace(meta["name"]))
            return obj
        if res.key == ("", "pods"):
            seconds = _pod_grace(obj, grace)
            current = meta.get("deletionGracePeriodSeconds")
            if seconds > 0 and (current is None or seconds < int(current)):
                # kube-apiserver's graceful deletion: the pod stays, Terminating, until its kubelet confirms (grace 0).
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = _rfc3339_in(seconds)
                marked["metadata"]["deletionGracePeriodSeconds"] = seconds
                return await self.store.put(res.key, marked, "MODIFIED")
            if seconds > 0:
                return obj  # already terminating, with a grace period no longer than this one
            if meta.get("deletionGracePeriodSeconds") != 0:
                # A pod deletion is always graceful: first an update to grace 0 (a MODIFIED event), then the removal.
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = resources.now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                obj = await self.store.put(res.key, marked, "MODIFIED")
                if meta.get("finalizers"):
                    return obj
                meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = resources.now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return await self.store.put(res.key, marked, "MODIFIED")
        if policy == "Orphan":
            await self._orphan_dependents(obj)
        gone = await self.store.put(res.key, copy.deepcopy(obj), "DELETED")
        if res.key == ("", "pods"):
            for key in [k for k in self.logs if k[:2] == (meta.get("namespace"), meta["name"])]:
                del self.logs[key]
        if res.key == customresources.CRDS:
            customresources.withdrawn(self.resources, self.store, obj)
        if policy != "Orphan":
            await self._collect_dependents(obj, policy)
        return gone

    async def _delete_collection(self, res: Resource, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        listing = self._list(res, namespace, query)
        if query.get("dryRun") == "All":
            return listing
        for obj in self._select(res, namespace, query):
            await self._remove(res, obj, query.get("propagationPolicy") or "Background", _grace(query, {}))
        return listing

    def _resource_of(self, key: resources.RKey) -> Resource:
        for res in self.resources:
            if (res.group, res.plural) == key:
                info = self.resources[res]
                return Resource(
                    res.group,
                    res.version,
                    res.plural,
                    info.kind or res.plural,
                    bool(info.namespaced),
                    frozenset(info.subresources),
                )
        group, plural = key
        return Resource(group, "v1", plural, plural, True, frozenset())

    async def _collect_dependents(self, owner: dict[str, Any], policy: str) -> None:
        """Garbage-collect objects whose ownerReferences point at ``owner`` (by uid)."""
        uid = owner["metadata"].get("uid")
        if not uid:
            return
        for key in list(self.store.objects):
            for dependent in list(self.store.objects[key].values()):
                refs = dependent["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    remaining = [ref for ref in refs if ref.get("uid") != uid]
                    res = self._resource_of(key)
                    if remaining:  # still owned by someone else: only drop the reference
                        updated = copy.deepcopy(dependent)
                        updated["metadata"]["ownerReferences"] = remaining
                        await self.store.put(key, updated, "MODIFIED")
                    else:
                        await self._remove(res, dependent, policy)

    async def _orphan_dependents(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"].get("uid")
        for key in list(self.store.objects):
            for dependent in list(self.store.objects[key].values()):
                refs = dependent["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    updated = copy.deepcopy(dependent)
                    remaining = [ref for ref in refs if ref.get("uid") != uid]
                    if remaining:
                        updated["metadata"]["ownerReferences"] = remaining
                    else:
                        updated["metadata"].pop("ownerReferences", None)  # empty lists are omitted, as in the API
                    await self.store.put(key, updated, "MODIFIED")

    async def _purge_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything inside, wait for finalizers, then remove the namespace."""
        await asyncio.sleep(0.05)  # the delete call returns first, with the namespace Terminating
        while not self._closing:
            remaining = 0
            for key in list(self.store.objects):
                if key == ("", "namespaces"):
                    continue
                res = self._resource_of(key)
                for obj in list(self.store.items(key, namespace)):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        await self._remove(res, obj, "Background")
            if not remaining:
                break
            await asyncio.sleep(0.1)  # objects with finalizers: their controllers must let go first
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is not None and not self._closing:
            await self.store.put(("", "namespaces"), copy.deepcopy(ns), "DELETED")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _grace(query: dict[str, str], body: dict[str, Any] | None) -> int | None:
    """DeleteOptions.gracePeriodSeconds from the query or the body; None when not given."""
    value = query.get("gracePeriodSeconds")
    if value is None:
        value = (body or {}).get("gracePeriodSeconds")
    if value is None:
        return None
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        raise ApiError(400, "BadRequest", f"invalid gracePeriodSeconds: {value!r}") from None


def _pod_grace(pod: dict[str, Any], grace: int | None) -> int:
    """The grace period a pod deletion gets: 0 for an unbound or terminal pod, else the asked or the pod's own."""
    if not (pod.get("spec") or {}).get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return max(int(grace if grace is not None else 30), 0)


def _rfc3339_in(seconds: int) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
