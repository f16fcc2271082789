"""A small async Kubernetes API client (aiohttp) for the simulated controllers, kubelet and analyzer.

They are ordinary API clients: they read through ``Informer`` caches (list, then
watch from the list's resourceVersion, re-list on 410, like client-go informers)
and write with plain REST calls, so they work against any API server.
Used by everything in ``aegis.sim`` that acts like a cluster component.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp

logger = logging.getLogger("aegis.sim.client")

# kind -> (group, version, plural, namespaced)
KINDS: dict[str, tuple[str, str, str, bool]] = {
    "Namespace": ("", "v1", "namespaces", False),
    "Node": ("", "v1", "nodes", False),
    "Pod": ("", "v1", "pods", True),
    "Service": ("", "v1", "services", True),
    "Endpoints": ("", "v1", "endpoints", True),
    "Event": ("", "v1", "events", True),
    "ConfigMap": ("", "v1", "configmaps", True),
    "Secret": ("", "v1", "secrets", True),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", True),
    "PersistentVolume": ("", "v1", "persistentvolumes", False),
    "ServiceAccount": ("", "v1", "serviceaccounts", True),
    "ResourceQuota": ("", "v1", "resourcequotas", True),
    "LimitRange": ("", "v1", "limitranges", True),
    "Deployment": ("apps", "v1", "deployments", True),
    "ReplicaSet": ("apps", "v1", "replicasets", True),
    "StatefulSet": ("apps", "v1", "statefulsets", True),
    "DaemonSet": ("apps", "v1", "daemonsets", True),
    "ControllerRevision": ("apps", "v1", "controllerrevisions", True),
    "Job": ("batch", "v1", "jobs", True),
    "CronJob": ("batch", "v1", "cronjobs", True),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices", True),
    "StorageClass": ("storage.k8s.io", "v1", "storageclasses", False),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies", True),
    "Ingress": ("networking.k8s.io", "v1", "ingresses", True),
    "CustomResourceDefinition": ("apiextensions.k8s.io", "v1", "customresourcedefinitions", False),
    "Result": ("core.k8sgpt.ai", "v1alpha1", "results", True),
    "Incident": ("aegis.dev", "v1alpha1", "incidents", True),
}


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path_for(kind: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    try:
        group, version, plural, namespaced = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}") from None
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


class SimClient:
    """REST calls against the API server at ``url`` (no TLS, bearer token optional)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SimClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use SimClient as an async context manager"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method, self.url + path, data=data, params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiError(response.status, message)
            if "json" in (response.content_type or ""):
                return json.loads(text) if text else None
            return text

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path_for(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None = None, *, labels: str | None = None) -> list[dict]:
        params = {"labelSelector": labels} if labels else None
        return (await self.request("GET", path_for(kind, namespace), params=params))["items"]

    async def create(self, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or body.get("metadata", {}).get("namespace")
        return await self.request("POST", path_for(body["kind"], ns), body=body)

    async def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        sub: str | None = None,
        patch_type: str = "merge",
    ) -> dict[str, Any]:
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return await self.request("PATCH", path_for(kind, namespace, name, sub), body=patch, content_type=content_type)

    async def status(self, kind: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self.patch(kind, namespace, name, {"status": status}, sub="status")

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        with contextlib.suppress(ApiError):
            await self.request("DELETE", path_for(kind, namespace, name))

    async def put_logs(self, namespace: str, pod: str, container: str, logs: dict[str, list[str]]) -> None:
        await self.request("PUT", f"/sim/v1/logs/{namespace}/{pod}/{container}", body=logs)


class Informer:
    """A local cache of one kind, kept current by list + watch; ``changed`` fires on every change."""

    def __init__(self, client: SimClient, kind: str, changed: asyncio.Event) -> None:
        self.client = client
        self.kind = kind
        self.changed = changed
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"informer:{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def items(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objects.items() if namespace is None or ns == namespace]

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace or "", name))

    def _key(self, obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "", meta.get("name") or "")

    async def _run(self) -> None:
        while True:
            try:
                listing = await self.client.request("GET", path_for(self.kind))
                self.objects = {self._key(o): o for o in listing["items"]}
                self.synced.set()
                self.changed.set()
                await self._watch(listing["metadata"]["resourceVersion"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost, 410 Gone: list again
                logger.debug("informer %s restarts: %s", self.kind, exc)
                await asyncio.sleep(0.2)

    async def _watch(self, resource_version: str) -> None:
        params = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": "300"}
        async with self.client.session.get(
            self.client.url + path_for(self.kind),
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                if event["type"] == "DELETED":
                    self.objects.pop(self._key(obj), None)
                else:
                    self.objects[self._key(obj)] = obj
                self.changed.set()
