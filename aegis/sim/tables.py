"""Server-side printing (``meta.k8s.io/v1`` Table) for the emulated API, so ``kubectl get`` shows real columns.

kubectl asks for a Table (``Accept: application/json;as=Table;...``); the API server
answers with the columns of the kind (pods: READY, STATUS, RESTARTS; deployments:
READY, UP-TO-DATE...; CRDs: their additionalPrinterColumns). Used by
``aegis.sim.apiserver``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

Column = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, value


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _created(obj: dict[str, Any]) -> str:
    return age(obj["metadata"].get("creationTimestamp"))


def _pod_status(pod: dict[str, Any]) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    return reason


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _ports(service: dict[str, Any]) -> str:
    return (
        ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in (service.get("spec") or {}).get("ports") or [])
        or "<none>"
    )


def _endpoints(obj: dict[str, Any]) -> str:
    addresses = [
        f"{a['ip']}:{p['port']}"
        for s in obj.get("subsets") or []
        for a in s.get("addresses") or []
        for p in s.get("ports") or []
    ]
    if not addresses:
        return "<none>"
    return ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def _node_selector(workload: dict[str, Any]) -> str:
    selector = (((workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items())) or "<none>"


def _status(key: str, default: Any = 0) -> Callable[[dict[str, Any]], Any]:
    return lambda obj: (obj.get("status") or {}).get(key, default)


BUILTIN: dict[str, list[Column]] = {
    "pods": [
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        (
            "Restarts",
            "string",
            0,
            lambda p: str(
                sum(s.get("restartCount", 0) for s in (p.get("status") or {}).get("containerStatuses") or [])
            ),
        ),
        ("Age", "string", 0, _created),
        ("IP", "string", 1, lambda p: (p.get("status") or {}).get("podIP") or "<none>"),
        ("Node", "string", 1, lambda p: (p.get("spec") or {}).get("nodeName") or "<none>"),
    ],
    "deployments": [
        (
            "Ready",
            "string",
            0,
            lambda d: f"{(d.get('status') or {}).get('readyReplicas', 0)}/{(d.get('spec') or {}).get('replicas', 1)}",
        ),
        ("Up-to-date", "integer", 0, _status("updatedReplicas")),
        ("Available", "integer", 0, _status("availableReplicas")),
        ("Age", "string", 0, _created),
    ],
    "replicasets": [
        ("Desired", "integer", 0, lambda r: (r.get("spec") or {}).get("replicas", 0)),
        ("Current", "integer", 0, _status("replicas")),
        ("Ready", "integer", 0, _status("readyReplicas")),
        ("Age", "string", 0, _created),
    ],
    "statefulsets": [
        (
            "Ready",
            "string",
            0,
            lambda s: f"{(s.get('status') or {}).get('readyReplicas', 0)}/{(s.get('spec') or {}).get('replicas', 1)}",
        ),
        ("Age", "string", 0, _created),
    ],
    "daemonsets": [
        ("Desired", "integer", 0, _status("desiredNumberScheduled")),
        ("Current", "integer", 0, _status("currentNumberScheduled")),
        ("Ready", "integer", 0, _status("numberReady")),
        ("Up-to-date", "integer", 0, _status("updatedNumberScheduled")),
        ("Available", "integer", 0, _status("numberAvailable")),
        ("Node Selector", "string", 0, _node_selector),
        ("Age", "string", 0, _created),
    ],
    "controllerrevisions": [
        (
            "Controller",
            "string",
            0,
            lambda r: next(
                (
                    f"{o.get('kind', '').lower()}.{o.get('apiVersion', '').split('/')[0]}/{o.get('name', '')}"
                    for o in r["metadata"].get("ownerReferences") or []
                    if o.get("controller")
                ),
                "<none>",
            ),
        ),
        ("Revision", "integer", 0, lambda r: r.get("revision", 0)),
        ("Age", "string", 0, _created),
    ],
    "services": [
        ("Type", "string", 0, lambda s: (s.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda s: (s.get("spec") or {}).get("clusterIP") or "<none>"),
        ("External-IP", "string", 0, lambda s: "<none>"),
        ("Port(s)", "string", 0, _ports),
        ("Age", "string", 0, _created),
    ],
    "endpoints": [("Endpoints", "string", 0, _endpoints), ("Age", "string", 0, _created)],
    "events": [
        ("Last Seen", "string", 0, lambda e: age(e.get("lastTimestamp") or e["metadata"].get("creationTimestamp"))),
        ("Type", "string", 0, lambda e: e.get("type", "")),
        ("Reason", "string", 0, lambda e: e.get("reason", "")),
        (
            "Object",
            "string",
            0,
            lambda e: (
                f"{(e.get('involvedObject') or {}).get('kind', '').lower()}/"
                f"{(e.get('involvedObject') or {}).get('name', '')}"
            ),
        ),
        ("Message", "string", 0, lambda e: e.get("message", "")),
    ],
    "nodes": [
        (
            "Status",
            "string",
            0,
            lambda n: (
                "Ready"
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or []
                )
                else "NotReady"
            ),
        ),
        ("Roles", "string", 0, lambda n: "<none>"),
        ("Age", "string", 0, _created),
        ("Version", "string", 0, lambda n: ((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")),
    ],
    "namespaces": [
        ("Status", "string", 0, lambda n: (n.get("status") or {}).get("phase", "Active")),
        ("Age", "string", 0, _created),
    ],
    "persistentvolumeclaims": [
        ("Status", "string", 0, lambda c: (c.get("status") or {}).get("phase", "Pending")),
        ("Volume", "string", 0, lambda c: (c.get("spec") or {}).get("volumeName", "")),
        ("Capacity", "string", 0, lambda c: ((c.get("status") or {}).get("capacity") or {}).get("storage", "")),
        (
            "Access Modes",
            "string",
            0,
            lambda c: ",".join(
                {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX"}.get(m, m)
                for m in (c.get("spec") or {}).get("accessModes") or []
            ),
        ),
        ("StorageClass", "string", 0, lambda c: (c.get("spec") or {}).get("storageClassName") or "<unset>"),
        ("Age", "string", 0, _created),
    ],
}


def _json_path(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def crd_columns(crd: dict[str, Any], version: str) -> list[Column]:
    spec_version = next((v for v in (crd.get("spec") or {}).get("versions") or [] if v.get("name") == version), {})
    columns: list[Column] = []
    for column in spec_version.get("additionalPrinterColumns") or []:
        path, kind = column["jsonPath"], column.get("type", "string")
        if kind == "date":
            columns.append(
                (column["name"], "string", column.get("priority", 0), lambda o, p=path: age(_json_path(o, p)))
            )
        else:
            columns.append(
                (
                    column["name"],
                    kind,
                    column.get("priority", 0),
                    lambda o, p=path: _json_path(o, p) if _json_path(o, p) is not None else "<none>",
                )
            )
    return columns or [("Age", "string", 0, _created)]


def table(objects: list[dict[str, Any]], columns: list[Column], resource_version: str) -> dict[str, Any]:
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
    definitions += [
        {"name": name, "type": kind, "format": "", "description": "", "priority": priority}
        for name, kind, priority, _ in columns
    ]
    rows = []
    for obj in objects:
        cells = [obj["metadata"]["name"]] + [value(obj) for _, _, _, value in columns]
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
