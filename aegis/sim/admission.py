"""Admission in the emulated API server: the checks kube-apiserver makes before it stores a write.

NamespaceLifecycle (``check_namespace``: 404 for a missing namespace, 403 while it is
terminating), ServiceAccount (``check_service_account``: 403 for a pod whose ServiceAccount
does not exist), the Service IP allocator (``allocate_cluster_ip``: a fresh 10.96.0.0/16
address, 422 for a taken one), ResourceQuota (``admit_quota``: 403 ``exceeded quota`` /
``must specify``; ``refresh_quotas`` keeps status.used current after every write, as the
quota controller does; the arithmetic is in ``aegis.sim.quota``) and validation
(``validate``: 422 ``Invalid`` with its causes, rules in ``aegis.sim.validation``).
Called by ``aegis.sim.apiserver`` on create, update and patch.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from aegis.sim import quota, resources, validation
from aegis.sim.resources import ApiError


def check_namespace(store: resources.Store, res: resources.Resource, namespace: str | None) -> None:
    if not res.namespaced:
        return
    ns = store.get(("", "namespaces"), "", namespace or "")
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


def check_service_account(store: resources.Store, res: resources.Resource, obj: dict[str, Any]) -> None:
    """The ServiceAccount admission plugin: a pod may only be created with a ServiceAccount that exists.

    ``default`` counts as existing: kube-controller-manager's serviceaccount controller creates it in every
    namespace (the emulator has no such controller). The name in the message is the one the request gave
    (a ReplicaSet's ``generateName`` prefix), as the plugin runs before a name is generated.
    """
    if res.key != ("", "pods"):
        return
    spec = obj.get("spec") or {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    namespace = obj["metadata"].get("namespace") or ""
    if account == "default" or store.get(("", "serviceaccounts"), namespace, account) is not None:
        return
    name = obj["metadata"].get("name") or obj["metadata"].get("generateName") or ""
    raise ApiError(
        403,
        "Forbidden",
        f'pods "{name}" is forbidden: error looking up service account {namespace}/{account}: '
        f'serviceaccount "{account}" not found',
        {"name": name, "kind": "pods"},
    )


def allocate_cluster_ip(store: resources.Store, service: dict[str, Any]) -> None:
    """The service IP allocator of 10.96.0.0/16: a fresh address unless one is asked for (422 when taken)."""
    spec = service.get("spec")
    if not isinstance(spec, dict) or spec.get("type") == "ExternalName":
        return
    wanted = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), "")
    if wanted == "None":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return
    taken = {"10.96.0.1"}
    for other in store.items(("", "services"), None):
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


def _namespace_objects(store: resources.Store, namespace: str) -> dict[resources.RKey, list[dict[str, Any]]]:
    return {key: store.items(key, namespace) for key in list(store.objects) if key != ("", "namespaces")}


def admit_quota(store: resources.Store, res: resources.Resource, obj: dict[str, Any]) -> None:
    """The ResourceQuota admission plugin: 403 when a create would go over a quota of its namespace."""
    namespace = obj["metadata"].get("namespace")
    if not res.namespaced or not namespace:
        return
    quotas = store.items(("", "resourcequotas"), namespace)
    if not quotas:
        return
    reason = quota.admit(res.group, res.plural, obj, quotas, _namespace_objects(store, namespace))
    if reason:
        name = obj["metadata"].get("name", "")
        raise ApiError(
            403,
            "Forbidden",
            f'{res.qualified} "{name}" is forbidden: {reason}',
            {"name": name, "group": res.group, "kind": res.plural},
        )


async def refresh_quotas(store: resources.Store, namespace: str) -> None:
    """The resource quota controller: keep each quota's status.hard/status.used current."""
    quotas = store.items(("", "resourcequotas"), namespace)
    if not quotas:
        return
    objects = _namespace_objects(store, namespace)
    for current in quotas:
        status = quota.status(current, objects)
        if current.get("status") != status:
            updated = copy.deepcopy(current)
            updated["status"] = status
            await store.put(("", "resourcequotas"), updated, "MODIFIED")


def validate(res: resources.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
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
