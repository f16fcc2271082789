"""Patch semantics of the Kubernetes API for the emulated server.

``merge_patch`` (RFC 7386, ``application/merge-patch+json``), ``strategic_merge``
(``application/strategic-merge-patch+json``: lists merged by their merge keys —
containers, env, ports, volumes... — with the ``$patch`` / ``$setElementOrder`` /
``$deleteFromPrimitiveList`` / ``$retainKeys`` directives), ``json_patch``
(RFC 6902) and ``apply`` (server-side apply as a strategic merge, recording the
field manager). Used by ``aegis.sim.apiserver``.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

# Field name -> merge key(s), as in the Kubernetes OpenAPI `x-kubernetes-patch-merge-key`.
# For `ports` the key depends on the list: container ports merge on containerPort, Service ports on port.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "ports": ("containerPort", "port"),
    "resourceClaims": ("name",),
    "readinessGates": ("conditionType",),
}
# Lists of scalars merged as sets (x-kubernetes-patch-strategy: merge on primitive lists).
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch cannot be applied; the message is what the API server would say."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from exc


def _merge_key(field: str, items: list[Any]) -> str | None:
    keys = MERGE_KEYS.get(field)
    if not keys:
        return None
    for key in keys:
        if any(isinstance(item, dict) and key in item for item in items):
            return key
    return keys[0]


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge patch of ``patch`` onto ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [item for item in result[name] if item not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in SET_LISTS:
        merged = list(current)
        for item in patch:
            if item not in merged:
                merged.append(copy.deepcopy(item))
        return merged
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    key = _merge_key(field, current + patch)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(patch)  # no merge key: the list is replaced, as the API server does
    merged = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next((i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
            continue
        if index is None:
            merged.append(strategic_merge({}, item, field))
        else:
            merged[index] = strategic_merge(merged[index], item, field)
    return merged


def strip_directives(obj: Any) -> Any:
    """Remove any leftover ``$...`` directive keys (a created object never stores them)."""
    if isinstance(obj, dict):
        return {k: strip_directives(v) for k, v in obj.items() if not k.startswith("$")}
    if isinstance(obj, list):
        return [strip_directives(v) for v in obj]
    return obj
