"""The emulated Kubernetes API server: kmock's ``KubernetesEmulator`` with real API semantics.

kmock serves discovery (every built-in resource, plus CRDs registered at run
time), the HTTP plumbing and test reactions. On top, this module answers every
resource request itself, the way kube-apiserver does where AEGIS depends on it:

- get / list / watch with label and field selectors, resourceVersion on every
  object and list (kind/apiVersion on the list, not on its items; watch events and
  single GETs carry them), watches that resume from a resourceVersion (410 when too old);
- create (generateName, uid, creationTimestamp, generation, defaults, validation,
  409 AlreadyExists, 404 when the namespace does not exist), PUT, PATCH (strategic
  merge with merge keys, JSON merge, JSON patch, server-side apply with a field
  manager), 409 on a stale resourceVersion, ``dryRun=All`` that validates and
  persists nothing, spec and status kept apart by the status subresource;
- custom resources pruned to their CRD's structural schema on every write, as
  kube-apiserver does (``prune_unknown_fields``): an undeclared field vanishes;
- delete with finalizers, graceful deletion of pods bound to a node (``deletionTimestamp``
  and ``deletionGracePeriodSeconds`` from DeleteOptions or the pod's own grace, kept until
  a delete with grace 0 — the kubelet's), namespace deletion that removes what it contains
  (Terminating until its pods are gone), and ownerReference garbage collection
  (Background, Foreground, Orphan), pods going the same graceful way;
- admission as kube-apiserver's plugins do it: ResourceQuota (403 ``exceeded quota`` /
  ``must specify``, status.used kept current, in ``aegis.sim.quota``) and the Service IP
  allocator (a fresh 10.96.0.0/16 address, 422 for a taken one); defaulting is in
  ``aegis.sim.defaults``;
- ``pods/log`` as text, ``pods/binding``, ``*/scale``; CRDs become served resources.

Logs are posted by the kubelet stand-in to ``/sim/v1/logs/{ns}/{pod}/{container}``
(the only non-Kubernetes endpoint). Used by ``aegis.sim.server``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import copy
import dataclasses
import datetime
import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from aegis.sim import defaults, patching, quota, selectors, tables, validation

logger = logging.getLogger("aegis.sim.api")

HISTORY_LIMIT = 20_000
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RKey = tuple[str, str]  # (group, plural)


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


@attrs.define(kw_only=True)
class SimAPIServer(kmock.KubernetesEmulator):
    """kmock's emulator, answering resource requests with kube-apiserver semantics."""

    store: Store = attrs.field(factory=Store)
    logs: dict[tuple[str, str, str], dict[str, list[str]]] = attrs.field(factory=dict)
    faults: list[Any] = attrs.field(factory=list)  # callables(method, route, query) -> ApiError | None, for tests
    _background: set[asyncio.Task[Any]] = attrs.field(factory=set)
    _closing: bool = False

    # --- entry point -----------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        if path.startswith("/sim/v1/logs/"):
            return await self._serve_sim_logs(raw_request)
        if path.startswith("/openapi/v3"):
            return aiohttp.web.json_response(self._openapi_v3(path))
        route = parse_route(path)
        if route is None:
            return await super().__call__(raw_request)  # discovery: /api, /apis, /version...
        await raw_request.read()
        try:
            resource = self._resource(route)
            for fault in self.faults:
                error = fault(raw_request.method, route, dict(raw_request.query))
                if error is not None:
                    raise error
            response = await self._dispatch(raw_request, route, resource)
            if raw_request.method.upper() != "GET" and route.namespace and resource.namespaced:
                await self._refresh_quotas(route.namespace)
            return response
        except ApiError as exc:
            return aiohttp.web.json_response(exc.body(), status=exc.code)
        except Exception as exc:  # a bug in the emulator: answer 500 like a real server would
            logger.exception("emulated API server failed on %s %s", raw_request.method, path)
            error = ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}")
            return aiohttp.web.json_response(error.body(), status=500)

    def _openapi_v3(self, path: str) -> dict[str, Any]:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself."""
        groups: dict[str, list[Any]] = collections.defaultdict(list)
        for res in self.resources:
            prefix = f"api/{res.version}" if not res.group else f"apis/{res.group}/{res.version}"
            groups[prefix].append(res)
        wanted = path.removeprefix("/openapi/v3").strip("/")
        if not wanted:
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sim"} for gv in groups}}
        paths: dict[str, Any] = {}
        for res in groups.get(wanted, []):
            info = self.resources[res]
            gvk = {"group": res.group, "version": res.version, "kind": info.kind}
            params = [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            ]
            ns = "namespaces/{namespace}/" if info.namespaced else ""
            operation = {"x-kubernetes-group-version-kind": gvk, "parameters": params}
            paths[f"/{wanted}/{ns}{res.plural}/{{name}}"] = {"patch": operation, "put": operation}
            paths[f"/{wanted}/{ns}{res.plural}"] = {"post": operation}
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.31.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    async def _serve_version(self, request: Any) -> Any:
        """Discovery of one group-version; short names and categories belong to the resource, not its subresources."""
        document = await super()._serve_version(request)
        document["groupVersion"] = document["groupVersion"].lstrip("/")  # core is "v1", not "/v1"
        for entry in document.get("resources", []):
            if "/" in entry["name"]:
                entry["shortNames"], entry["categories"] = [], []
        return document

    def _resource(self, route: Route) -> Resource:
        for res in self.resources:
            if (res.group, res.version, res.plural) == (route.group, route.version, route.plural):
                info = self.resources[res]
                return Resource(
                    group=route.group,
                    version=route.version,
                    plural=route.plural,
                    kind=info.kind or route.plural.capitalize(),
                    namespaced=bool(info.namespaced),
                    subresources=frozenset(info.subresources),
                )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, route: Route, res: Resource) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        query = dict(raw.query)
        namespace = route.namespace if res.namespaced else None
        if res.namespaced is False and route.namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        sub = route.subresource
        if sub is not None and sub not in res.subresources and sub not in ("log", "eviction"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

        wants_table = "as=Table" in (raw.headers.get("Accept") or "")
        if method == "GET" and route.name is None:
            if route.watch or query.get("watch") in ("true", "1"):
                return await self._watch(raw, res, namespace, query)
            if wants_table:
                return _json(self._table(res, self._select(res, namespace, query)))
            return _json(self._list(res, namespace, query))
        if method == "GET":
            if sub == "log":
                return await self._log(res, namespace or "", route.name, query)
            obj = self._require(res, namespace or "", route.name)
            if sub == "scale":
                return _json(_scale_of(obj))
            return _json(self._table(res, [obj]) if wants_table and sub is None else obj)
        if method == "POST" and route.name is None:
            if res.plural == "bindings":
                body = await _body(raw)
                return _json(await self._bind(namespace or "", body["metadata"]["name"], body), 201)
            return _json(await self._create(res, namespace, await _body(raw), query), 201)
        if method == "POST" and sub == "eviction" and res.plural == "pods":
            obj = self._require(res, namespace or "", route.name)
            if query.get("dryRun") != "All":
                await self._remove(res, obj, "Background")
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)
        if method == "POST" and sub == "binding":
            return _json(await self._bind(namespace or "", route.name, await _body(raw)), 201)
        if method == "PUT" and route.name:
            return _json(await self._put(res, namespace or "", route.name, sub, await _body(raw), query))
        if method == "PATCH" and route.name:
            code, obj = await self._patch(raw, res, namespace or "", route.name, sub, query)
            return _json(obj, code)
        if method == "DELETE" and route.name:
            body = await _body(raw, default={})
            return _json(await self._delete(res, namespace or "", route.name, query, body))
        if method == "DELETE":
            return _json(await self._delete_collection(res, namespace, query))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # --- reading ---------------------------------------------------------------------------------

    def _require(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(res.key, namespace, name)
        if obj is None:
            raise _not_found(res, name)
        return obj

    def _filters(self, query: dict[str, str]) -> tuple[selectors.Predicate, selectors.Predicate]:
        try:
            return selectors.label_selector(query.get("labelSelector")), selectors.field_selector(
                query.get("fieldSelector")
            )
        except selectors.SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None

    def _select(self, res: Resource, namespace: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        """The stored objects a list would answer (label and field selectors applied), by namespace and name."""
        labels, fields = self._filters(query)
        items = [obj for obj in self.store.items(res.key, namespace) if labels(obj) and fields(obj)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def _list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        """A ``<Kind>List``: kind and apiVersion on the list only, never on its items (as kube-apiserver)."""
        items = [
            {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            for obj in self._select(res, namespace, query)
        ]
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, res: Resource, namespace: str | None, query: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        labels, fields = self._filters(query)
        since = query.get("resourceVersion") or "0"
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
            resume = int(since) if since not in ("", "0") else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion or timeoutSeconds: {since!r}") from None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        def visible(obj: dict[str, Any]) -> bool:
            ns = obj["metadata"].get("namespace")
            return (namespace is None or ns == namespace) and labels(obj) and fields(obj)

        def ident(obj: dict[str, Any]) -> tuple[str, str]:
            return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])

        async def send(event: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

        try:
            # What this watcher has shown: an object leaving the selector is DELETED for it, one entering is ADDED.
            shown: set[tuple[str, str]] = set()
            if resume is None:
                last = self.store.rv
                for obj in list(self.store.items(res.key, namespace)):
                    if visible(obj):
                        shown.add(ident(obj))
                        await send("ADDED", obj)
            else:
                last = resume
                if last < self.store.first_rv.get(res.key, 0) - 1:
                    gone = ApiError(410, "Expired", f"too old resource version: {last}")
                    await send("ERROR", gone.body())
                    return response
                shown = self._visible_at(res, last, visible, ident)
            deadline = asyncio.get_running_loop().time() + timeout
            condition = self.store.changed[res.key]
            while not self._closing:
                for rv, event, obj in self.store.since(res.key, last):
                    last = rv
                    key, now_visible = ident(obj), visible(obj)
                    if event == "DELETED":
                        if key in shown:
                            shown.discard(key)
                            await send("DELETED", obj)
                    elif now_visible:
                        await send("MODIFIED" if key in shown and event != "ADDED" else "ADDED", obj)
                        shown.add(key)
                    elif key in shown:
                        shown.discard(key)
                        await send("DELETED", obj)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                async with condition:
                    if not self.store.since(res.key, last):
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(condition.wait(), timeout=min(remaining, 5.0))
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        await response.write_eof()
        return response

    def _visible_at(
        self,
        res: Resource,
        rv: int,
        visible: Callable[[dict[str, Any]], bool],
        ident: Callable[[dict[str, Any]], tuple[str, str]],
    ) -> set[tuple[str, str]]:
        """What a watcher resuming at ``rv`` had seen: the objects visible at that resourceVersion.

        Rebuilt from the change history, so replayed events keep their real types (an object deleted
        since ``rv`` is MODIFIED then DELETED, not ADDED). Objects older than the history count as
        they are now.
        """
        before: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        after: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for entry_rv, event, obj in self.store.history[res.key]:
            key = ident(obj)
            if entry_rv <= rv:
                before[key] = (event, obj)
            elif key not in after:
                after[key] = (event, obj)
        shown = {key for key, (event, obj) in before.items() if event != "DELETED" and visible(obj)}
        shown |= {key for key, (event, obj) in after.items() if key not in before and event != "ADDED" and visible(obj)}
        for obj in self.store.items(res.key, None):
            key = ident(obj)
            if key not in before and key not in after and visible(obj):
                shown.add(key)
        return shown

    def _table(self, res: Resource, objects: list[dict[str, Any]]) -> dict[str, Any]:
        columns = tables.BUILTIN.get(res.plural) if res.group in _BUILTIN_GROUPS else None
        if columns is None:
            crd = next(
                (
                    c
                    for c in self.store.items(("apiextensions.k8s.io", "customresourcedefinitions"), None)
                    if c["spec"]["group"] == res.group and c["spec"]["names"]["plural"] == res.plural
                ),
                None,
            )
            columns = tables.crd_columns(crd, res.version) if crd else [("Age", "string", 0, tables._created)]
        return tables.table(objects, columns, str(self.store.rv))

    # --- writing ---------------------------------------------------------------------------------

    def _check_namespace(self, res: Resource, namespace: str | None) -> None:
        if not res.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", namespace or "")
        if ns is None:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{res.qualified} is forbidden: unable to create new content in "
                f"namespace {namespace} because it is being terminated",
            )

    async def _create(
        self, res: Resource, namespace: str | None, body: Any, query: dict[str, str], *, stamp: bool = True
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        obj = patching.strip_directives(copy.deepcopy(body))
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or meta.get("namespace")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        self._check_namespace(res, namespace)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{res.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            meta["name"] = meta["generateName"] + random_suffix()
        if self.store.get(res.key, namespace or "", meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res.qualified} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": res.group, "kind": res.plural},
            )
        if res.has_status:
            obj["status"] = {}
        defaults.apply(res.kind, obj)
        self._prune(res, obj)
        if res.key == ("", "services"):
            self._allocate_cluster_ip(obj)
        self._validate(res, obj, None)
        meta["uid"] = str(uuid.uuid4())
        if res.key == ("batch", "jobs"):
            defaults.job_selector(obj)
        self._admit_quota(res, obj)
        meta["creationTimestamp"] = now_rfc3339()
        if "spec" in obj or res.group not in ("",):
            meta["generation"] = 1
        for key in ("resourceVersion", "deletionTimestamp", "selfLink"):
            meta.pop(key, None)
        _manage(meta, query, "Update" if stamp else "Apply", res.api_version)
        if query.get("dryRun") == "All":
            meta["resourceVersion"] = str(self.store.rv)
            return obj
        await self.store.put(res.key, obj, "ADDED")
        if res.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            await self._crd_created(obj)
        return obj

    def _allocate_cluster_ip(self, service: dict[str, Any]) -> None:
        """The service IP allocator of 10.96.0.0/16: a fresh address unless one is asked for (422 when taken)."""
        spec = service.get("spec")
        if not isinstance(spec, dict) or spec.get("type") == "ExternalName":
            return
        wanted = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), "")
        if wanted == "None":
            spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            return
        taken = {"10.96.0.1"}
        for other in self.store.items(("", "services"), None):
            taken.update((other.get("spec") or {}).get("clusterIPs") or [])
        if wanted:
            if wanted in taken:
                name = service["metadata"].get("name", "")
                message = (
                    f'spec.clusterIPs: Invalid value: []string{{"{wanted}"}}: '
                    f"failed to allocate IP {wanted}: provided IP is already allocated"
                )
                raise ApiError(
                    422,
                    "Invalid",
                    f'Service "{name}" is invalid: {message}',
                    {
                        "name": name,
                        "kind": "Service",
                        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "spec.clusterIPs"}],
                    },
                )
        else:
            while True:
                number = random.randrange(2, 65534)
                wanted = f"10.96.{number // 256}.{number % 256}"
                if wanted not in taken and not wanted.endswith((".0", ".255")):
                    break
        spec["clusterIP"], spec["clusterIPs"] = wanted, [wanted]

    def _namespace_objects(self, namespace: str) -> dict[RKey, list[dict[str, Any]]]:
        return {key: self.store.items(key, namespace) for key in list(self.store.objects) if key != ("", "namespaces")}

    def _admit_quota(self, res: Resource, obj: dict[str, Any]) -> None:
        """The ResourceQuota admission plugin: 403 when a create would go over a quota of its namespace."""
        namespace = obj["metadata"].get("namespace")
        if not res.namespaced or not namespace:
            return
        quotas = self.store.items(("", "resourcequotas"), namespace)
        if not quotas:
            return
        reason = quota.admit(res.group, res.plural, obj, quotas, self._namespace_objects(namespace))
        if reason:
            name = obj["metadata"].get("name", "")
            raise ApiError(
                403,
                "Forbidden",
                f'{res.qualified} "{name}" is forbidden: {reason}',
                {"name": name, "group": res.group, "kind": res.plural},
            )

    async def _refresh_quotas(self, namespace: str) -> None:
        """The resource quota controller: keep each quota's status.hard/status.used current."""
        quotas = self.store.items(("", "resourcequotas"), namespace)
        if not quotas:
            return
        objects = self._namespace_objects(namespace)
        for current in quotas:
            status = quota.status(current, objects)
            if current.get("status") != status:
                updated = copy.deepcopy(current)
                updated["status"] = status
                await self.store.put(("", "resourcequotas"), updated, "MODIFIED")

    def _prune(self, res: Resource, obj: dict[str, Any]) -> None:
        """Drop the fields a custom resource's CRD does not declare for the served version (in place)."""
        if res.group in _BUILTIN_GROUPS:
            return
        for crd in self.store.items(("apiextensions.k8s.io", "customresourcedefinitions"), None):
            spec = crd.get("spec") or {}
            if spec.get("group") != res.group or (spec.get("names") or {}).get("plural") != res.plural:
                continue
            for version in spec.get("versions") or []:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if version.get("name") == res.version and isinstance(schema, dict):
                    prune_unknown_fields(obj, schema, root=True)
            return

    def _validate(self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        causes = validation.validate(res.kind, obj, old)
        if causes:
            name = obj["metadata"].get("name", "")
            summary = ", ".join(f"{field}: {message}" for field, message in causes)
            raise ApiError(
                422,
                "Invalid",
                f'{res.kind}{"." + res.group if res.group else ""} "{name}" is invalid: {summary}',
                {
                    "name": name,
                    "group": res.group,
                    "kind": res.kind,
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": message, "field": field} for field, message in causes
                    ],
                },
            )

    async def _write(
        self, res: Resource, old: dict[str, Any], new: Any, sub: str | None, query: dict[str, str], operation: str
    ) -> dict[str, Any]:
        """Shared path of PUT and PATCH: preconditions, status split, generation, validation, dry-run."""
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        new = patching.strip_directives(copy.deepcopy(new))
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"].get("resourceVersion"):
            name = old["metadata"]["name"]
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.qualified} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": res.group, "kind": res.plural},
            )
        if sub == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status") or {}
        else:
            result = new
            if res.has_status:
                result["status"] = copy.deepcopy(old.get("status") or {})
        meta = result.setdefault("metadata", {})
        old_meta = old["metadata"]
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        for key in (
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields") or [])
        result["apiVersion"], result["kind"] = res.api_version, res.kind
        if res.kind == "Service" and isinstance(result.get("spec"), dict):  # allocated IPs survive a PUT without them
            for key in ("clusterIP", "clusterIPs"):
                if key in (old.get("spec") or {}) and key not in result["spec"]:
                    result["spec"][key] = old["spec"][key]
        defaults.apply(res.kind, result)
        self._prune(res, result)
        if sub != "status" and result.get("spec") != old.get("spec") and "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        self._validate(res, result, old)
        if _same(result, old):
            return old
        _manage(meta, query, operation, res.api_version, sub)
        if query.get("dryRun") == "All":
            return result
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
            await self.store.put(res.key, result, "DELETED")
            await self._collect_dependents(result, "Background")
            return result
        return await self.store.put(res.key, result, "MODIFIED")

    async def _put(
        self, res: Resource, namespace: str, name: str, sub: str | None, body: Any, query: dict[str, str]
    ) -> dict[str, Any]:
        old = self._require(res, namespace, name)
        if sub == "scale":
            return _scale_of(await self._write(res, old, _with_replicas(old, body), None, query, "Update"))
        return await self._write(res, old, body, sub, query, "Update")

    async def _patch(
        self,
        raw: aiohttp.web.BaseRequest,
        res: Resource,
        namespace: str,
        name: str,
        sub: str | None,
        query: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        content_type = (raw.headers.get("Content-Type") or "").split(";")[0].strip()
        text = await raw.text()
        try:
            body = yaml.safe_load(text) if content_type == "application/apply-patch+yaml" else json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"error decoding patch: {exc}") from None
        old = self.store.get(res.key, namespace, name)
        if content_type in (
            "application/apply-patch+yaml",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ) and not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format: expected an object")
        if content_type == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(
                    400,
                    "BadRequest",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                )
            if old is None:
                if sub is not None:
                    raise _not_found(res, name)
                body.setdefault("metadata", {})["name"] = name
                return 201, await self._create(res, namespace or None, body, query, stamp=False)
        if old is None:
            raise _not_found(res, name)
        base = _scale_of(old) if sub == "scale" else old
        try:
            if content_type == "application/json-patch+json":
                patched = patching.json_patch(base, body)
            elif content_type == "application/merge-patch+json":
                patched = patching.merge_patch(base, body)
            elif content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                if content_type.startswith("application/strategic") and res.group not in _BUILTIN_GROUPS:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown "
                        "format - accepted media types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml",
                    )
                patched = patching.strategic_merge(base, body)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - "
                    f"accepted media types include: application/json-patch+json, "
                    f"application/merge-patch+json, application/apply-patch+yaml (got {content_type!r})",
                )
        except patching.PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        operation = "Apply" if content_type == "application/apply-patch+yaml" else "Update"
        if sub == "scale":
            return 200, _scale_of(await self._write(res, old, _with_replicas(old, patched), None, query, operation))
        return 200, await self._write(res, old, patched, sub, query, operation)

    async def _bind(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        pods = Resource("", "v1", "pods", "Pod", True, frozenset({"status", "binding"}))
        pod = self._require(pods, namespace, name)
        node = ((body or {}).get("target") or {}).get("name")
        if not node:
            raise ApiError(422, "Invalid", "Binding.target.name: Required value")
        if pod["spec"].get("nodeName"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} '
                f'is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node
        conditions = [c for c in bound["status"].get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()})
        bound["status"]["conditions"] = conditions
        await self.store.put(pods.key, bound, "MODIFIED")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- deleting --------------------------------------------------------------------------------

    async def _delete(
        self, res: Resource, namespace: str, name: str, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self._require(res, namespace, name)
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
                terminating["metadata"]["deletionTimestamp"] = now_rfc3339()
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
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                obj = await self.store.put(res.key, marked, "MODIFIED")
                if meta.get("finalizers"):
                    return obj
                meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return await self.store.put(res.key, marked, "MODIFIED")
        if policy == "Orphan":
            await self._orphan_dependents(obj)
        gone = await self.store.put(res.key, copy.deepcopy(obj), "DELETED")
        if res.key == ("", "pods"):
            for key in [k for k in self.logs if k[:2] == (meta.get("namespace"), meta["name"])]:
                del self.logs[key]
        if res.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            await self._crd_deleted(obj)
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

    def _resource_of(self, key: RKey) -> Resource:
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

    # --- CRDs ------------------------------------------------------------------------------------

    async def _crd_created(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                shortnames=set(names.get("shortNames") or []),
                categories=set(names.get("categories") or []),
                subresources=set((version.get("subresources") or {}).keys()),
            )
        established = copy.deepcopy(
            self.store.get(("apiextensions.k8s.io", "customresourcedefinitions"), "", crd["metadata"]["name"])
        )
        if established is not None:
            established["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
            }
            await self.store.put(("apiextensions.k8s.io", "customresourcedefinitions"), established, "MODIFIED")

    async def _crd_deleted(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural")
        for version in spec.get("versions") or []:
            key = f"{spec['group']}/{version['name']}/{plural}"
            if key in self.resources:
                del self.resources[key]
        self.store.objects.pop((spec.get("group", ""), plural or ""), None)

    # --- logs ------------------------------------------------------------------------------------

    async def _log(self, res: Resource, namespace: str, name: str, query: dict[str, str]) -> aiohttp.web.Response:
        if res.plural != "pods":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        pod = self._require(res, namespace, name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        init = [c["name"] for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = query.get("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]",
                )
            container = containers[0]
        if container not in containers + init:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        stored = self.logs.get((namespace, name, container)) or {}
        previous = query.get("previous") in ("true", "1")
        if previous and "previous" not in stored:
            raise ApiError(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found')
        if not previous and "current" not in stored:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            waiting = next(
                (
                    s["state"]["waiting"]
                    for s in statuses
                    if s.get("name") == container and "waiting" in (s.get("state") or {})
                ),
                None,
            )
            reason = (waiting or {}).get("reason") or "ContainerCreating"
            why = {"ImagePullBackOff": "trying and failing to pull image", "ErrImagePull": "image can't be pulled"}
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {why.get(reason, reason)}',
            )
        lines = stored.get("previous" if previous else "current") or []
        tail = query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        text = "".join(line + "\n" for line in lines)
        return aiohttp.web.Response(text=text, content_type="text/plain")

    async def _serve_sim_logs(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        parts = raw.path.split("/")[4:]
        if raw.method != "PUT" or len(parts) != 3:
            return aiohttp.web.json_response({"error": "PUT /sim/v1/logs/{namespace}/{pod}/{container}"}, status=400)
        body = await raw.json()
        self.logs[(parts[0], parts[1], parts[2])] = {
            k: list(v) for k, v in body.items() if k in ("current", "previous")
        }
        return aiohttp.web.json_response({})

    async def close(self) -> None:
        self._closing = True
        for condition in list(self.store.changed.values()):
            async with condition:
                condition.notify_all()
        for task in list(self._background):
            task.cancel()


_BUILTIN_GROUPS = frozenset(
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


_ALWAYS_KEPT = ("apiVersion", "kind", "metadata")  # of a root object or an x-kubernetes-embedded-resource


def prune_unknown_fields(value: Any, schema: dict[str, Any], *, root: bool = False) -> Any:
    """Remove, in place, the object fields that ``schema`` (a structural openAPIV3Schema) does not declare.

    kube-apiserver's pruning of custom resources, on create, update, patch and the status
    subresource alike: an object keeps the keys of its ``properties``; an object whose
    ``additionalProperties`` is a schema is a map whose values are pruned by it (``true``
    keeps them whole); ``items`` prunes each element of an array. With
    ``x-kubernetes-preserve-unknown-fields: true`` undeclared keys stay (declared ones are
    still pruned by their own schema). ``apiVersion``, ``kind`` and ``metadata`` are kept at
    the ``root`` and in an ``x-kubernetes-embedded-resource``. Values of the wrong type are
    left alone (validation's business). Returns ``value``.
    """
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for element in value:
                prune_unknown_fields(element, items)
        return value
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    kept = _ALWAYS_KEPT if root or schema.get("x-kubernetes-embedded-resource") else ()
    for key in list(value):
        if key in properties:
            prune_unknown_fields(value[key], properties[key])
        elif isinstance(extra, dict):
            prune_unknown_fields(value[key], extra)
        elif not (preserve or extra is True or key in kept):
            del value[key]
    return value


def _not_found(res: Resource, name: str) -> ApiError:
    """The API server's 404 for one named object of a resource."""
    return ApiError(
        404, "NotFound", f'{res.qualified} "{name}" not found', {"name": name, "group": res.group, "kind": res.plural}
    )


def _json(obj: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(text=json.dumps(obj), status=status, content_type="application/json")


async def _body(raw: aiohttp.web.BaseRequest, default: Any = None) -> Any:
    text = await raw.text()
    if not text.strip():
        if default is not None:
            return default
        raise ApiError(400, "BadRequest", "the body of the request was empty")
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        out = dict(obj)
        out["metadata"] = {
            k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")
        }
        return out

    return strip(a) == strip(b)


def _manage(
    meta: dict[str, Any], query: dict[str, str], operation: str, api_version: str, sub: str | None = None
) -> None:
    manager = query.get("fieldManager")
    if not manager:
        return
    entries = [
        e
        for e in meta.get("managedFields") or []
        if not (e.get("manager") == manager and e.get("operation") == operation)
    ]
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
    }
    if sub:
        entry["subresource"] = sub
    meta["managedFields"] = [*entries, entry]


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: obj["metadata"].get(k) for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }


def _with_replicas(obj: dict[str, Any], scale: Any) -> dict[str, Any]:
    replicas = ((scale or {}).get("spec") or {}).get("replicas")
    updated = copy.deepcopy(obj)
    if replicas is not None:
        updated["spec"]["replicas"] = replicas
    wanted_rv = ((scale or {}).get("metadata") or {}).get("resourceVersion")
    if wanted_rv:
        updated["metadata"]["resourceVersion"] = wanted_rv
    return updated


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
