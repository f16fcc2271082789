"""Subresources of the emulated API server beyond ``status``: ``pods/log``, ``pods/binding`` and ``*/scale``.

``pods/log`` answers as text from the lines the kubelet stand-in posts to
``/sim/v1/logs/{ns}/{pod}/{container}`` (``serve_sim_logs``, the only non-Kubernetes
endpoint), with kubelet's errors for a missing container or one still waiting; a
binding sets ``spec.nodeName`` and PodScheduled once (409 when already bound); a
``Scale`` is read from and written into the object's replicas. Called by
``aegis.sim.apiserver``'s request dispatch.
"""

from __future__ import annotations

import copy
from typing import Any

import aiohttp.web

from aegis.sim import resources
from aegis.sim.resources import ApiError

Logs = dict[tuple[str, str, str], dict[str, list[str]]]  # (namespace, pod, container) -> current/previous lines
PODS = resources.Resource("", "v1", "pods", "Pod", True, frozenset({"status", "binding"}))


async def log(
    store: resources.Store, logs: Logs, res: resources.Resource, namespace: str, name: str, query: dict[str, str]
) -> aiohttp.web.Response:
    if res.plural != "pods":
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    pod = store.require(res, namespace, name)
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
    stored = logs.get((namespace, name, container)) or {}
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


async def serve_sim_logs(logs: Logs, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
    parts = raw.path.split("/")[4:]
    if raw.method != "PUT" or len(parts) != 3:
        return aiohttp.web.json_response({"error": "PUT /sim/v1/logs/{namespace}/{pod}/{container}"}, status=400)
    body = await raw.json()
    logs[(parts[0], parts[1], parts[2])] = {k: list(v) for k, v in body.items() if k in ("current", "previous")}
    return aiohttp.web.json_response({})


async def bind(store: resources.Store, namespace: str, name: str, body: Any) -> dict[str, Any]:
    pod = store.require(PODS, namespace, name)
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
    conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": resources.now_rfc3339()})
    bound["status"]["conditions"] = conditions
    await store.put(PODS.key, bound, "MODIFIED")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
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


def with_replicas(obj: dict[str, Any], scale: Any) -> dict[str, Any]:
    replicas = ((scale or {}).get("spec") or {}).get("replicas")
    updated = copy.deepcopy(obj)
    if replicas is not None:
        updated["spec"]["replicas"] = replicas
    wanted_rv = ((scale or {}).get("metadata") or {}).get("resourceVersion")
    if wanted_rv:
        updated["metadata"]["resourceVersion"] = wanted_rv
    return updated
