"""A small async Kubernetes API client (aiohttp) for the simulated controllers, kubelet and analyzer.

They are ordinary API clients: they read through ``Informer`` caches (list, then
watch from the list's resourceVersion with bookmarks, re-list on 410, like
client-go informers) and write with plain REST calls, so they work against any
API server: the emulator over plain HTTP (``SimClient(url)``) or a real one over
TLS from a kubeconfig (``SimClient.from_kubeconfig(path)``: CA file/data or
insecure-skip-tls-verify, bearer token or client certificate).
Used by everything in ``aegis.sim`` that acts like a cluster component.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import pathlib
import ssl
import tempfile
from typing import Any

import aiohttp
import yaml

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
    "Lease": ("coordination.k8s.io", "v1", "leases", True),
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
    """REST calls against the API server at ``url`` (plain HTTP or TLS; bearer token optional)."""

    def __init__(self, url: str, token: str | None = None, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], context: str | None = None) -> SimClient:
        """A client for a kubeconfig's context (default: ``current-context``)."""
        config = yaml.safe_load(pathlib.Path(path).read_text()) or {}
        base = pathlib.Path(path).resolve().parent
        name = context or config.get("current-context")
        contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
        if name not in contexts:
            raise ValueError(f"kubeconfig {path}: no context {name!r}")
        ctx = contexts[name]
        cluster = next(
            (c.get("cluster") or {} for c in config.get("clusters") or [] if c["name"] == ctx.get("cluster")), None
        )
        if cluster is None or not cluster.get("server"):
            raise ValueError(f"kubeconfig {path}: context {name!r} has no cluster server")
        user = next((u.get("user") or {} for u in config.get("users") or [] if u["name"] == ctx.get("user")), {})
        url = str(cluster["server"])
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = _resolve(base, user["tokenFile"]).read_text().strip()
        context_ssl = None
        if url.startswith("https"):
            context_ssl = _ssl_context(base, cluster, user)
        return cls(url, token, ssl_context=context_ssl)

    async def __aenter__(self) -> SimClient:
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=None), connector=connector
        )
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
        items = (await self.request("GET", path_for(kind, namespace), params=params))["items"]
        group, version, _, _ = KINDS[kind]
        for item in items:  # a real server puts kind/apiVersion on the list only
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", f"{group}/{version}" if group else version)
        return items

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

    async def delete(
        self, kind: str, namespace: str | None, name: str, *, grace_period: int | None = None, uid: str | None = None
    ) -> None:
        """Delete, ignoring errors; ``grace_period`` 0 removes at once (the kubelet finishing a pod)."""
        if grace_period is None and uid is None:
            with contextlib.suppress(ApiError):
                await self.request("DELETE", path_for(kind, namespace, name))
            return
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        params = {}
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
            params["gracePeriodSeconds"] = str(grace_period)
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        with contextlib.suppress(ApiError):
            await self.request("DELETE", path_for(kind, namespace, name), body=options, params=params)

    async def put_logs(self, namespace: str, pod: str, container: str, logs: dict[str, list[str]]) -> None:
        await self.request("PUT", f"/sim/v1/logs/{namespace}/{pod}/{container}", body=logs)


def _resolve(base: pathlib.Path, value: str) -> pathlib.Path:
    path = pathlib.Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _ssl_context(base: pathlib.Path, cluster: dict[str, Any], user: dict[str, Any]) -> ssl.SSLContext:
    """TLS as kubectl does it: the cluster's CA (file or data) or no verification; a client certificate if given."""
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        context = ssl.create_default_context(cafile=str(_resolve(base, cluster["certificate-authority"])))
    else:
        context = ssl.create_default_context()
    if cluster.get("tls-server-name"):
        context.check_hostname = False  # a server name override: verify the chain only
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    if cert or user.get("client-certificate"):
        with tempfile.TemporaryDirectory(prefix="aegis-kubeconfig-") as folder:
            cert_path = _resolve(base, user["client-certificate"]) if not cert else pathlib.Path(folder) / "client.crt"
            key_path = _resolve(base, user.get("client-key") or "") if not key else pathlib.Path(folder) / "client.key"
            if cert:
                cert_path.write_bytes(base64.b64decode(cert))
            if key:
                key_path.write_bytes(base64.b64decode(key))
                key_path.chmod(0o600)
            context.load_cert_chain(str(cert_path), str(key_path))
    return context


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

    def _typed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Real list responses carry kind/apiVersion on the list only: put them on every cached item."""
        group, version, _, _ = KINDS[self.kind]
        obj.setdefault("kind", self.kind)
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        return obj

    async def _run(self) -> None:
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    listing = await self.client.request("GET", path_for(self.kind))
                    self.objects = {self._key(o): self._typed(o) for o in listing["items"]}
                    resource_version = str(listing["metadata"]["resourceVersion"])
                    self.synced.set()
                    self.changed.set()
                # A watch that ends (server timeout) resumes from the last version seen; 410 Gone lists again.
                resource_version = await self._watch(resource_version)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                logger.debug("informer %s relists: %s", self.kind, exc)
                resource_version = None
                await asyncio.sleep(0.2)
            except Exception as exc:  # connection lost: list again
                logger.debug("informer %s restarts: %s", self.kind, exc)
                resource_version = None
                await asyncio.sleep(0.2)

    async def _watch(self, resource_version: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        async with self.client.session.get(
            self.client.url + path_for(self.kind),
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, (await response.text())[:300])
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    resource_version = str(version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.objects.pop(self._key(obj), None)
                else:
                    self.objects[self._key(obj)] = self._typed(obj)
                self.changed.set()
        return resource_version
