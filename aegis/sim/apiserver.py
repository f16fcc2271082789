"""The emulated Kubernetes API server: kmock's ``KubernetesEmulator`` with real API semantics.

kmock serves discovery (every built-in resource, plus CRDs registered at run time)
and the HTTP plumbing. On top, ``SimAPIServer`` routes every resource request and
answers it the way kube-apiserver does where AEGIS depends on it:

- get and list with label and field selectors, resourceVersion on every object and
  list (kind/apiVersion on the list, not on its items), server-side tables
  (``aegis.sim.tables``); watch streams are in ``aegis.sim.watches``;
- create (generateName, uid, creationTimestamp, generation, defaults, 409 AlreadyExists),
  PUT, PATCH (strategic merge with merge keys, JSON merge, JSON patch, server-side apply
  with a field manager; ``aegis.sim.patching``), 409 on a stale resourceVersion,
  ``dryRun=All`` that validates and persists nothing, spec and status kept apart by the
  status subresource, managedFields per field manager.

The other roles are in their own modules: routes, resources, ``Status`` errors and
the object store in ``aegis.sim.resources``; admission (namespace lifecycle,
ServiceAccount, ResourceQuota, the Service IP allocator, validation) in ``aegis.sim.admission`` and
defaulting in ``aegis.sim.defaults``; CRDs served and custom resources pruned to their
schema in ``aegis.sim.customresources``; delete, finalizers, graceful pod deletion,
namespace purge and garbage collection in ``aegis.sim.deletion`` (the ``Deletion``
mixin of ``SimAPIServer``); ``pods/log``, ``pods/binding`` and ``*/scale`` in
``aegis.sim.subresources``; OpenAPI v3 and discovery fixes in ``aegis.sim.discovery``.
``ApiError``, ``Route``, ``parse_route`` and ``prune_unknown_fields`` are re-exported
here for callers. Used by ``aegis.sim.server``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from aegis.sim import (
    admission,
    customresources,
    defaults,
    deletion,
    discovery,
    patching,
    resources,
    selectors,
    subresources,
    tables,
    watches,
)
from aegis.sim.customresources import prune_unknown_fields
from aegis.sim.resources import ApiError, Resource, Route, Store, parse_route

__all__ = ["ApiError", "Route", "SimAPIServer", "parse_route", "prune_unknown_fields"]

logger = logging.getLogger("aegis.sim.api")


@attrs.define(kw_only=True)
class SimAPIServer(deletion.Deletion, kmock.KubernetesEmulator):
    """kmock's emulator, answering resource requests with kube-apiserver semantics."""

    store: Store = attrs.field(factory=Store)
    logs: subresources.Logs = attrs.field(factory=dict)
    faults: list[Any] = attrs.field(factory=list)  # callables(method, route, query) -> ApiError | None, for tests
    _background: set[asyncio.Task[Any]] = attrs.field(factory=set)
    _closing: bool = False

    # --- entry point -----------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        if path.startswith("/sim/v1/logs/"):
            return await subresources.serve_sim_logs(self.logs, raw_request)
        if path.startswith("/openapi/v3"):
            return aiohttp.web.json_response(discovery.openapi_v3(self.resources, path))
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
                await admission.refresh_quotas(self.store, route.namespace)
            return response
        except ApiError as exc:
            return aiohttp.web.json_response(exc.body(), status=exc.code)
        except Exception as exc:  # a bug in the emulator: answer 500 like a real server would
            logger.exception("emulated API server failed on %s %s", raw_request.method, path)
            error = ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}")
            return aiohttp.web.json_response(error.body(), status=500)

    async def _serve_version(self, request: Any) -> Any:
        """Discovery of one group-version; short names and categories belong to the resource, not its subresources."""
        return discovery.group_version(await super()._serve_version(request))

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
                labels, fields = self._filters(query)
                return await watches.stream(
                    raw, self.store, res, namespace, query, labels, fields, closing=lambda: self._closing
                )
            if wants_table:
                return _json(self._table(res, self._select(res, namespace, query)))
            return _json(self._list(res, namespace, query))
        if method == "GET":
            if sub == "log":
                return await subresources.log(self.store, self.logs, res, namespace or "", route.name, query)
            obj = self.store.require(res, namespace or "", route.name)
            if sub == "scale":
                return _json(subresources.scale_of(obj))
            return _json(self._table(res, [obj]) if wants_table and sub is None else obj)
        if method == "POST" and route.name is None:
            if res.plural == "bindings":
                body = await _body(raw)
                return _json(await subresources.bind(self.store, namespace or "", body["metadata"]["name"], body), 201)
            return _json(await self._create(res, namespace, await _body(raw), query), 201)
        if method == "POST" and sub == "eviction" and res.plural == "pods":
            obj = self.store.require(res, namespace or "", route.name)
            if query.get("dryRun") != "All":
                await self._remove(res, obj, "Background")
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)
        if method == "POST" and sub == "binding":
            return _json(await subresources.bind(self.store, namespace or "", route.name, await _body(raw)), 201)
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

    def _table(self, res: Resource, objects: list[dict[str, Any]]) -> dict[str, Any]:
        columns = tables.BUILTIN.get(res.plural) if res.group in resources.BUILTIN_GROUPS else None
        if columns is None:
            crd = next(
                (
                    c
                    for c in self.store.items(customresources.CRDS, None)
                    if c["spec"]["group"] == res.group and c["spec"]["names"]["plural"] == res.plural
                ),
                None,
            )
            columns = tables.crd_columns(crd, res.version) if crd else [("Age", "string", 0, tables._created)]
        return tables.table(objects, columns, str(self.store.rv))

    # --- writing ---------------------------------------------------------------------------------

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
        admission.check_namespace(self.store, res, namespace)
        admission.check_service_account(self.store, res, obj)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{res.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            meta["name"] = meta["generateName"] + resources.random_suffix()
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
        customresources.prune(self.store, res, obj)
        if res.key == ("", "services"):
            admission.allocate_cluster_ip(self.store, obj)
        admission.validate(res, obj, None)
        meta["uid"] = str(uuid.uuid4())
        if res.key == ("batch", "jobs"):
            defaults.job_selector(obj)
        defaults.template_generation(res.kind, obj, None)
        admission.admit_quota(self.store, res, obj)
        meta["creationTimestamp"] = resources.now_rfc3339()
        if "spec" in obj or res.group not in ("",):
            meta["generation"] = 1
        for key in ("resourceVersion", "deletionTimestamp", "selfLink"):
            meta.pop(key, None)
        _manage(meta, query, "Update" if stamp else "Apply", res.api_version)
        if query.get("dryRun") == "All":
            meta["resourceVersion"] = str(self.store.rv)
            return obj
        await self.store.put(res.key, obj, "ADDED")
        if res.key == customresources.CRDS:
            await customresources.established(self.resources, self.store, obj)
        return obj

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
        customresources.prune(self.store, res, result)
        if sub != "status" and result.get("spec") != old.get("spec") and "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        if sub != "status":
            defaults.template_generation(res.kind, result, old)
        admission.validate(res, result, old)
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
        old = self.store.require(res, namespace, name)
        if sub == "scale":
            return subresources.scale_of(
                await self._write(res, old, subresources.with_replicas(old, body), None, query, "Update")
            )
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
                    raise resources.not_found(res, name)
                body.setdefault("metadata", {})["name"] = name
                return 201, await self._create(res, namespace or None, body, query, stamp=False)
        if old is None:
            raise resources.not_found(res, name)
        base = subresources.scale_of(old) if sub == "scale" else old
        try:
            if content_type == "application/json-patch+json":
                patched = patching.json_patch(base, body)
            elif content_type == "application/merge-patch+json":
                patched = patching.merge_patch(base, body)
            elif content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                if content_type.startswith("application/strategic") and res.group not in resources.BUILTIN_GROUPS:
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
            return 200, subresources.scale_of(
                await self._write(res, old, subresources.with_replicas(old, patched), None, query, operation)
            )
        return 200, await self._write(res, old, patched, sub, query, operation)

    async def close(self) -> None:
        self._closing = True
        for condition in list(self.store.changed.values()):
            async with condition:
                condition.notify_all()
        for task in list(self._background):
            task.cancel()


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
        "time": resources.now_rfc3339(),
        "fieldsType": "FieldsV1",
    }
    if sub:
        entry["subresource"] = sub
    meta["managedFields"] = [*entries, entry]
