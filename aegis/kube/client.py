"""Async access to the Kubernetes API through the official (blocking) ``kubernetes`` client.

``Cluster`` runs every call in a bounded thread pool so Kopf's event loop never
blocks, reads raw JSON (``_preload_content=False``) so objects are the dicts the
API server sent, applies a timeout to every request, and filters list results
by label selector on the client side too (cheap, and correct even against API
servers that ignore selectors).

Built once by ``handlers.lifecycle`` (or a test / the demo) and injected into
the engine and graph nodes; nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from aegis import config
from aegis import metrics as aegis_metrics

# Cluster-scoped kinds AEGIS reads: kind -> (API class, method suffix)
_CLUSTER_KINDS: dict[str, tuple[str, str]] = {
    "StorageClass": ("StorageV1Api", "storage_class"),
    "Node": ("CoreV1Api", "node"),
}
# Namespaced kinds: kind -> (API class, method suffix)
_KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("CoreV1Api", "pod"),
    "Service": ("CoreV1Api", "service"),
    "Endpoints": ("CoreV1Api", "endpoints"),
    "Event": ("CoreV1Api", "event"),
    "ConfigMap": ("CoreV1Api", "config_map"),
    "PersistentVolumeClaim": ("CoreV1Api", "persistent_volume_claim"),
    "Deployment": ("AppsV1Api", "deployment"),
    "ReplicaSet": ("AppsV1Api", "replica_set"),
    "StatefulSet": ("AppsV1Api", "stateful_set"),
    "DaemonSet": ("AppsV1Api", "daemon_set"),
    "Job": ("BatchV1Api", "job"),
    "CronJob": ("BatchV1Api", "cron_job"),
    "Secret": ("CoreV1Api", "secret"),
    "ServiceAccount": ("CoreV1Api", "service_account"),
    "ResourceQuota": ("CoreV1Api", "resource_quota"),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy"),
}
# apiVersion of each kind, for list items (a real API server writes kind/apiVersion on the list, not the items)
_API_VERSIONS: dict[str, str] = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "StorageClass": "storage.k8s.io/v1",
}
_PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
FIELD_MANAGER = "aegis"


class ClusterError(RuntimeError):
    """An API call failed for a reason other than 'not found'; the message says which call and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def api_client_from_config(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.ApiClient:
    """An ApiClient from in-cluster config, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
    if kubeconfig is None and context is None:
        try:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    return kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)


def match_labels(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy a LabelSelector (``{"matchLabels": ..., "matchExpressions": ...}``).

    A Service's plain selector map is passed as ``{"matchLabels": selector}``.
    """
    match = (selector or {}).get("matchLabels") or {}
    expressions = (selector or {}).get("matchExpressions") or []
    if not match and not expressions:
        return False  # an empty selector selects nothing for our purposes (workloads always have one)
    labels = labels or {}
    if any(labels.get(key) != value for key, value in match.items()):
        return False
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def terminating(obj: Mapping[str, Any]) -> bool:
    """Whether an object is being deleted (``metadata.deletionTimestamp`` set): a pod keeps its grace period,
    30 s by default, and is going away — a rollout is never judged on it."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def selector_string(selector: Mapping[str, str]) -> str:
    """``{"app": "web"}`` -> ``"app=web"`` for the API's labelSelector parameter."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


class Cluster:
    """The async face of the Kubernetes API that AEGIS uses."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        settings: config.Settings,
        metrics: aegis_metrics.Metrics | None = None,
    ) -> None:
        self.api_client = api_client
        self.timeout = settings.kube_timeout_seconds
        self.metrics = metrics  # counts failed calls (aegis_kubernetes_api_errors_total); None: not counted
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.kube_workers, thread_name_prefix="aegis-kube"
        )
        self._apis: dict[str, Any] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    def _api(self, name: str) -> Any:
        if name not in self._apis:
            self._apis[name] = getattr(kubernetes.client, name)(self.api_client)
        return self._apis[name]

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking call off the loop; decode its JSON. 404 -> None."""
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", self.timeout)
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            self._count_error(fn, exc.status)
            raise ClusterError(f"{what}: HTTP {exc.status} {exc.reason}: {_brief(exc.body)}", exc.status) from exc
        except Exception as exc:  # connection refused, timeouts, TLS...
            self._count_error(fn, None)
            raise ClusterError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if not kwargs["_preload_content"]:
            data = response.data
            if isinstance(data, bytes):
                data = data.decode("utf-8", "replace")
            if fn.__name__.endswith("_log"):
                return data
            return json.loads(data) if data else {}
        return response

    def _count_error(self, fn: Callable[..., Any], status: int | None) -> None:
        if self.metrics is not None:
            self.metrics.api_error(aegis_metrics.api_verb(getattr(fn, "__name__", "")), status)

    # --- reading ---------------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object by kind, or None when it does not exist (``namespace`` is ignored for cluster kinds)."""
        if kind in _CLUSTER_KINDS:
            api, suffix = _CLUSTER_KINDS[kind]
            obj = await self._call(f"get {kind} {name}", getattr(self._api(api), f"read_{suffix}"), name)
            return obj if obj else None
        api, suffix = _kind(kind)
        fn = getattr(self._api(api), f"read_namespaced_{suffix}")
        obj = await self._call(f"get {kind} {namespace}/{name}", fn, name, namespace)
        return obj if obj else None

    async def list(
        self,
        kind: str,
        namespace: str,
        *,
        selector: Mapping[str, Any] | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace, optionally chosen by a LabelSelector."""
        api, suffix = _kind(kind)
        fn = getattr(self._api(api), f"list_namespaced_{suffix}")
        kwargs: dict[str, Any] = {}
        if selector and selector.get("matchLabels"):
            kwargs["label_selector"] = selector_string(selector["matchLabels"])
        if field_selector:
            kwargs["field_selector"] = field_selector
        result = await self._call(f"list {kind} in {namespace}", fn, namespace, **kwargs)
        items = listed_items(result, kind)
        if selector:
            items = [item for item in items if match_labels(selector, (item.get("metadata") or {}).get("labels"))]
        return items

    async def pod_log(
        self, namespace: str, pod: str, container: str, *, tail_lines: int, previous: bool = False
    ) -> list[str]:
        """The last lines a container wrote (its previous instance when ``previous``)."""
        fn = self._api("CoreV1Api").read_namespaced_pod_log
        text = await self._call(
            f"log of {namespace}/{pod}/{container}",
            fn,
            pod,
            namespace,
            container=container,
            tail_lines=tail_lines,
            previous=previous,
        )
        if not isinstance(text, str):
            return []
        return text.splitlines()[-tail_lines:] if tail_lines else []

    async def list_cluster(self, kind: str) -> list[dict[str, Any]]:
        """All objects of a cluster-scoped kind (StorageClass, Node)."""
        api, suffix = _CLUSTER_KINDS[kind]
        result = await self._call(f"list {kind}", getattr(self._api(api), f"list_{suffix}"))
        return listed_items(result, kind)

    # --- writing ---------------------------------------------------------------------------------

    async def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: Any,
        patch_type: str,
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Patch one object (strategic merge, merge or JSON patch); server-side dry-run when ``dry_run``."""
        api, suffix = _kind(kind)
        fn = getattr(self._api(api), f"patch_namespaced_{suffix}")
        kwargs: dict[str, Any] = {"field_manager": field_manager, "_content_type": _PATCH_TYPES[patch_type]}
        if dry_run:
            kwargs["dry_run"] = "All"
        what = f"{'dry-run ' if dry_run else ''}patch {kind} {namespace}/{name}"
        result = await self._call(what, fn, name, namespace, patch, **kwargs)
        if result is None:
            raise ClusterError(f"{what}: not found", 404)
        return result

    async def create(self, kind: str, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        api, suffix = _kind(kind)
        fn = getattr(self._api(api), f"create_namespaced_{suffix}")
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER}
        if dry_run:
            kwargs["dry_run"] = "All"
        name = (body.get("metadata") or {}).get("name")
        return await self._call(f"create {kind} {namespace}/{name}", fn, namespace, body, **kwargs)

    async def delete(self, kind: str, namespace: str, name: str, *, dry_run: bool = False) -> bool:
        """Delete one object; False when it did not exist."""
        api, suffix = _kind(kind)
        fn = getattr(self._api(api), f"delete_namespaced_{suffix}")
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return await self._call(f"delete {kind} {namespace}/{name}", fn, name, namespace, **kwargs) is not None

    async def get_mutating_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        """One MutatingWebhookConfiguration (cluster-scoped), or None when it does not exist."""
        fn = self._api("AdmissionregistrationV1Api").read_mutating_webhook_configuration
        return await self._call(f"get MutatingWebhookConfiguration {name}", fn, name) or None

    async def delete_mutating_webhook_configuration(self, name: str, *, uid: str | None = None) -> bool:
        """Delete one MutatingWebhookConfiguration (only that incarnation when ``uid`` is given); False: absent."""
        fn = self._api("AdmissionregistrationV1Api").delete_mutating_webhook_configuration
        body = {"preconditions": {"uid": uid}} if uid else None
        return await self._call(f"delete MutatingWebhookConfiguration {name}", fn, name, body=body) is not None

    async def create_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        fn = self._api("CoreV1Api").create_namespace
        return await self._call(f"create namespace {body['metadata']['name']}", fn, body)

    async def delete_namespace(self, name: str) -> bool:
        fn = self._api("CoreV1Api").delete_namespace
        return await self._call(f"delete namespace {name}", fn, name) is not None

    async def list_namespaces(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        fn = self._api("CoreV1Api").list_namespace
        result = await self._call("list namespaces", fn, label_selector=selector_string(labels))
        items = listed_items(result, "Namespace")
        return [i for i in items if match_labels({"matchLabels": dict(labels)}, i["metadata"].get("labels"))]

    async def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event about ``involved`` (best effort: an Event is never worth failing for)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'aegis')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "aegis"},
            "reportingComponent": "aegis",
        }
        with contextlib.suppress(ClusterError):
            await self._call(
                f"event on {namespace}/{meta.get('name')}",
                self._api("CoreV1Api").create_namespaced_event,
                namespace,
                body,
            )

    # --- custom objects --------------------------------------------------------------------------

    async def get_custom(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        fn = self._api("CustomObjectsApi").get_namespaced_custom_object
        obj = await self._call(f"get {plural}.{group} {namespace}/{name}", fn, group, version, namespace, plural, name)
        return obj if obj else None

    async def list_custom(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        api = self._api("CustomObjectsApi")
        kwargs: dict[str, Any] = {}
        if labels:
            kwargs["label_selector"] = selector_string(labels)
        if namespace is None:
            result = await self._call(
                f"list {plural}.{group}", api.list_cluster_custom_object, group, version, plural, **kwargs
            )
        else:
            result = await self._call(
                f"list {plural}.{group} in {namespace}",
                api.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                **kwargs,
            )
        items = listed_items(result)
        if labels:
            items = [
                item for item in items if match_labels({"matchLabels": dict(labels)}, item["metadata"].get("labels"))
            ]
        return items

    async def create_custom(
        self, group: str, version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        fn = self._api("CustomObjectsApi").create_namespaced_custom_object
        name = body["metadata"]["name"]
        return await self._call(
            f"create {plural}.{group} {namespace}/{name}", fn, group, version, namespace, plural, body
        )

    async def patch_custom(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any] | None:
        """Merge-patch a custom object (its status subresource when ``status``)."""
        api = self._api("CustomObjectsApi")
        fn = api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
        what = f"patch {plural}.{group} {namespace}/{name}{'/status' if status else ''}"
        return await self._call(what, fn, group, version, namespace, plural, name, patch)


def listed_items(result: Mapping[str, Any] | None, kind: str | None = None) -> list[dict[str, Any]]:
    """The items of a LIST response, each a full object with its ``kind`` and ``apiVersion``.

    A real API server writes ``kind`` (``PodList``) and ``apiVersion`` on the list only; code that copies,
    creates or judges a listed object needs them on the object. ``kind`` is what was listed (else the
    list's kind without ``List``); an item's own values, when present, are kept.
    """
    result = result or {}
    list_kind = str(result.get("kind") or "")
    kind = kind or (list_kind.removesuffix("List") if list_kind.endswith("List") else None)
    api_version = result.get("apiVersion") or (_API_VERSIONS.get(kind, "v1") if kind else None)
    items: list[dict[str, Any]] = []
    for item in result.get("items") or []:
        if not isinstance(item, dict):
            continue
        if kind and not item.get("kind"):
            item = {"kind": kind, **item}
        if api_version and not item.get("apiVersion"):
            item = {"apiVersion": api_version, **item}
        items.append(item)
    return items


def _kind(kind: str) -> tuple[str, str]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ClusterError(f"kind {kind!r} is not supported by AEGIS's API access") from None


def _brief(body: Any, limit: int = 300) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        message = json.loads(body).get("message") or body
    except (TypeError, ValueError, AttributeError):
        message = body
    return str(message)[:limit]
