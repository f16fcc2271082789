"""Custom resources in the emulated API server, as kube-apiserver's apiextensions side serves them.

A created CRD's served versions become resources in kmock's discovery and the CRD is
marked Established (``established``); a deleted one stops being served and its objects
go (``withdrawn``); every write of a custom resource is pruned to its CRD's structural
schema (``prune``, ``prune_unknown_fields``): an undeclared field vanishes. Called by
``aegis.sim.apiserver`` on create, update and patch, and by ``aegis.sim.deletion``.
"""

from __future__ import annotations

import copy
from typing import Any

import kmock

from aegis.sim import resources

CRDS: resources.RKey = ("apiextensions.k8s.io", "customresourcedefinitions")
_ALWAYS_KEPT = ("apiVersion", "kind", "metadata")  # of a root object or an x-kubernetes-embedded-resource


async def established(served: kmock.ResourcesArray, store: resources.Store, crd: dict[str, Any]) -> None:
    """Serve the CRD's served versions, then write its Established status."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        served[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names.get("kind"),
            singular=names.get("singular"),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            shortnames=set(names.get("shortNames") or []),
            categories=set(names.get("categories") or []),
            subresources=set((version.get("subresources") or {}).keys()),
        )
    current = copy.deepcopy(store.get(CRDS, "", crd["metadata"]["name"]))
    if current is not None:
        current["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        }
        await store.put(CRDS, current, "MODIFIED")


def withdrawn(served: kmock.ResourcesArray, store: resources.Store, crd: dict[str, Any]) -> None:
    """A deleted CRD: its versions are no longer served and its objects are gone."""
    spec = crd.get("spec") or {}
    plural = (spec.get("names") or {}).get("plural")
    for version in spec.get("versions") or []:
        key = f"{spec['group']}/{version['name']}/{plural}"
        if key in served:
            del served[key]
    store.objects.pop((spec.get("group", ""), plural or ""), None)


def prune(store: resources.Store, res: resources.Resource, obj: dict[str, Any]) -> None:
    """Drop the fields a custom resource's CRD does not declare for the served version (in place)."""
    if res.group in resources.BUILTIN_GROUPS:
        return
    for crd in store.items(CRDS, None):
        spec = crd.get("spec") or {}
        if spec.get("group") != res.group or (spec.get("names") or {}).get("plural") != res.plural:
            continue
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if version.get("name") == res.version and isinstance(schema, dict):
                prune_unknown_fields(obj, schema, root=True)
        return


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
