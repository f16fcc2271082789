"""Discovery extras of the emulated API server, beyond what kmock serves.

``openapi_v3`` is just enough of ``/openapi/v3`` for kubectl to see that the server
validates fields itself (``fieldValidation`` and ``dryRun`` on every write);
``group_version`` tidies kmock's discovery document of one group-version as
kube-apiserver serves it. Called by ``aegis.sim.apiserver``.
"""

from __future__ import annotations

import collections
from typing import Any

import kmock


def openapi_v3(served: kmock.ResourcesArray, path: str) -> dict[str, Any]:
    """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself."""
    groups: dict[str, list[Any]] = collections.defaultdict(list)
    for res in served:
        prefix = f"api/{res.version}" if not res.group else f"apis/{res.group}/{res.version}"
        groups[prefix].append(res)
    wanted = path.removeprefix("/openapi/v3").strip("/")
    if not wanted:
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sim"} for gv in groups}}
    paths: dict[str, Any] = {}
    for res in groups.get(wanted, []):
        info = served[res]
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


def group_version(document: dict[str, Any]) -> dict[str, Any]:
    """Core is "v1", not "/v1"; short names and categories belong to the resource, not its subresources."""
    document["groupVersion"] = document["groupVersion"].lstrip("/")
    for entry in document.get("resources", []):
        if "/" in entry["name"]:
            entry["shortNames"], entry["categories"] = [], []
    return document
