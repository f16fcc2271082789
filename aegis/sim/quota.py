"""ResourceQuota admission and usage, as kube-apiserver's quota admission plugin and quota controller do them.

Pure functions over plain objects: ``usage`` (what one object charges to a quota),
``admit`` (the 403 message a create would get, or None) and ``status`` (a quota's
``status.hard``/``status.used`` from the objects of its namespace). Called by
``aegis.sim.admission`` on create and after every write in a namespace holding quotas.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aegis import quantity

_COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")
# Resources counted by name (the legacy object counts) besides count/<plural>[.<group>].
_OBJECT_COUNTS = {
    ("", "pods"): "pods",
    ("", "services"): "services",
    ("", "configmaps"): "configmaps",
    ("", "secrets"): "secrets",
    ("", "persistentvolumeclaims"): "persistentvolumeclaims",
    ("", "replicationcontrollers"): "replicationcontrollers",
    ("", "resourcequotas"): "resourcequotas",
}


def counted_name(group: str, plural: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def pod_counts(pod: dict[str, Any]) -> bool:
    """A pod is charged to quotas until it is terminal (Succeeded/Failed)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _container_amounts(pod: dict[str, Any], kind: str) -> dict[str, Decimal]:
    """Sum of the containers' ``kind`` (requests/limits), at least each init container's (the pod's effective value)."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, value in ((container.get("resources") or {}).get(kind) or {}).items():
            total[name] = total.get(name, Decimal(0)) + quantity.parse(value)
    for container in spec.get("initContainers") or []:
        for name, value in ((container.get("resources") or {}).get(kind) or {}).items():
            total[name] = max(total.get(name, Decimal(0)), quantity.parse(value))
    return total


def usage(group: str, plural: str, obj: dict[str, Any]) -> dict[str, Decimal]:
    """What ``obj`` charges: its object counts, and for a pod its compute requests and limits."""
    if (group, plural) == ("", "pods") and not pod_counts(obj):
        return {}
    charged = {counted_name(group, plural): Decimal(1)}
    if (group, plural) in _OBJECT_COUNTS:
        charged[_OBJECT_COUNTS[(group, plural)]] = Decimal(1)
    if (group, plural) == ("", "pods"):
        requests, limits = _container_amounts(obj, "requests"), _container_amounts(obj, "limits")
        for name in ("cpu", "memory"):
            charged[name] = charged[f"requests.{name}"] = requests.get(name, Decimal(0))
            charged[f"limits.{name}"] = limits.get(name, Decimal(0))
    return charged


def _format(name: str, value: Decimal) -> str:
    if "memory" in name or "storage" in name:
        whole = value.to_integral_value()
        return quantity.format_bytes(whole) if whole == value else f"{int(value * 1000)}m"
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


def _pretty(values: dict[str, Decimal]) -> str:
    return ",".join(f"{name}={_format(name, values[name])}" for name in sorted(values))


def used(quota: dict[str, Any], objects: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Decimal]:
    """The quota's usage over ``objects`` ((group, plural) -> objects of the quota's namespace)."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    totals = {name: Decimal(0) for name in hard}
    for (group, plural), items in objects.items():
        for obj in items:
            for name, amount in usage(group, plural, obj).items():
                if name in totals:
                    totals[name] += amount
    return totals


def status(quota: dict[str, Any], objects: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": hard, "used": {name: _format(name, amount) for name, amount in used(quota, objects).items()}}


def _missing(pod: dict[str, Any], constrained: set[str]) -> str | None:
    """The quota plugin's ``must specify`` text for containers lacking a constrained request/limit."""
    missing: dict[str, set[str]] = {}
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = container.get("resources") or {}
        for name in constrained:
            kind, _, resource = name.rpartition(".")
            present = (resources.get(kind or "requests") or {}).get(resource)
            if present is None:
                missing.setdefault(name, set()).add(container.get("name", ""))
    if not missing:
        return None
    return "must specify " + "; ".join(
        f"{name} for: {','.join(sorted(containers))}" for name, containers in sorted(missing.items())
    )


def admit(
    group: str,
    plural: str,
    obj: dict[str, Any],
    quotas: list[dict[str, Any]],
    objects: dict[tuple[str, str], list[dict[str, Any]]],
) -> str | None:
    """The reason a create of ``obj`` is forbidden by one of ``quotas`` (after ``<plural> "<name>" is forbidden: ``)."""
    charged = usage(group, plural, obj)
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        name = quota["metadata"]["name"]
        hard = (quota.get("spec") or {}).get("hard") or {}
        if (group, plural) == ("", "pods"):
            constrained = {resource for resource in hard if resource in _COMPUTE}
            reason = _missing(obj, constrained) if constrained and pod_counts(obj) else None
            if reason:
                return f"failed quota: {name}: {reason}"
        current = used(quota, objects)
        over = [
            resource
            for resource, amount in charged.items()
            if resource in hard and current.get(resource, Decimal(0)) + amount > quantity.parse(hard[resource])
        ]
        if over:
            requested = {resource: charged[resource] for resource in over}
            in_use = {resource: current.get(resource, Decimal(0)) for resource in over}
            limited = {resource: quantity.parse(hard[resource]) for resource in over}
            return (
                f"exceeded quota: {name}, requested: {_pretty(requested)}, used: {_pretty(in_use)}, "
                f"limited: {_pretty(limited)}"
            )
    return None
