"""The CLI's synchronous connection to a cluster, and its one-line error messages.

Resolves the cluster as kubectl does: ``--kubeconfig`` (else ``$KUBECONFIG``, else
``~/.kube/config``) and ``--context`` (else the current context), falling back to the
in-cluster service account when no kubeconfig exists; the default namespace is the
context's namespace, else ``default``. Reads and writes Incidents (and reads the
objects their fixes target) with the official ``kubernetes`` client, returning the
JSON the API server sent. Every failure — no kubeconfig, an unreachable API server,
401/403, a missing CRD — becomes an ``AccessError`` with one line to print.

Used by the ``aegis incidents / show / approve / reject`` commands (``aegis.cli``).
The operator itself uses ``aegis.kube.client`` (async, bounded thread pool).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import kubernetes
import urllib3

from aegis import models
from aegis.kube import client

IN_CLUSTER_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_INCIDENTS = (models.API_GROUP, models.API_VERSION)


class AccessError(RuntimeError):
    """The cluster could not be reached or refused the request; ``str()`` is one line for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Session:
    """An API client, the namespace commands default to, and where it points (for messages)."""

    api_client: kubernetes.client.ApiClient
    namespace: str
    server: str
    timeout: float = 15.0

    def close(self) -> None:
        self.api_client.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """One request; the decoded JSON, None on 404, ``AccessError`` otherwise."""
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise AccessError(describe_api_error(what, exc, self.server), exc.status) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise AccessError(f"cannot reach the Kubernetes API at {self.server}: {_reason(exc)}") from None
        data = response.data
        return json.loads(data) if data else {}

    def _custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api_client)

    def incidents(self, namespace: str | None) -> list[dict[str, Any]]:
        """Incidents in ``namespace`` (every namespace when None)."""
        plural = models.INCIDENT_PLURAL
        if namespace is None:
            found = self._call("list incidents", self._custom().list_cluster_custom_object, *_INCIDENTS, plural)
        else:
            found = self._call(
                f"list incidents in {namespace}",
                self._custom().list_namespaced_custom_object,
                *_INCIDENTS,
                namespace,
                plural,
            )
        if found is None:
            raise AccessError(
                f"the API server at {self.server} does not serve incidents.{models.API_GROUP}/{models.API_VERSION}: "
                "install the Incident CRD (kubectl apply -f deploy/aegis/crd-incident.yaml)",
                404,
            )
        return list(found.get("items") or [])

    def incident(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Incident, or None when it does not exist."""
        return self._call(
            f"get incident {namespace}/{name}",
            self._custom().get_namespaced_custom_object,
            *_INCIDENTS,
            namespace,
            models.INCIDENT_PLURAL,
            name,
        )

    def patch_incident(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of the Incident (a ``metadata.resourceVersion`` in it is a precondition: 409)."""
        return self._call(
            f"patch incident {namespace}/{name}",
            self._custom().patch_namespaced_custom_object,
            *_INCIDENTS,
            namespace,
            models.INCIDENT_PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A namespaced object of a kind AEGIS knows (None when it does not exist)."""
        try:
            api, suffix = client._kind(kind)
        except client.ClusterError:
            return None  # a kind no AEGIS action targets
        fn = getattr(getattr(kubernetes.client, api)(self.api_client), f"read_namespaced_{suffix}")
        return self._call(f"get {kind} {namespace}/{name}", fn, name, namespace)

    def replica_sets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """The ReplicaSets a Deployment owns (its revisions, for previewing a rollback)."""
        meta = deployment.get("metadata") or {}
        labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        apps = kubernetes.client.AppsV1Api(self.api_client)
        found = self._call(
            f"list ReplicaSets in {meta.get('namespace')}",
            apps.list_namespaced_replica_set,
            meta.get("namespace"),
            label_selector=client.selector_string(labels) if labels else None,
        )
        return [
            rs
            for rs in (found or {}).get("items") or []
            if any(ref.get("uid") == meta.get("uid") for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])
        ]


def connect(kubeconfig: str | None = None, context: str | None = None, *, timeout: float = 15.0) -> Session:
    """A session for ``--kubeconfig`` / ``--context`` (kubectl's defaults), else the in-cluster service account."""
    if kubeconfig is not None and not pathlib.Path(kubeconfig).expanduser().is_file():
        raise AccessError(f"kubeconfig {kubeconfig} does not exist")
    location = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    files = [pathlib.Path(p).expanduser() for p in location.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster(timeout)
        raise AccessError(f"no kubeconfig at {location} and not running in a cluster; pass --kubeconfig")
    config_file = str(files[0]) if kubeconfig else None
    try:
        api_client = kubernetes.config.new_client_from_config(
            config_file=config_file, context=context, persist_config=False
        )
        contexts, current = kubernetes.config.list_kube_config_contexts(config_file=config_file)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise AccessError(f"cannot use the kubeconfig {location}: {_reason(exc)}") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    server = api_client.configuration.host
    return Session(api_client=api_client, namespace=namespace, server=server, timeout=timeout)


def _in_cluster(timeout: float) -> Session:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException as exc:
        raise AccessError(f"no kubeconfig, and the in-cluster configuration failed: {exc}") from None
    try:
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        namespace = "default"
    return Session(kubernetes.client.ApiClient(configuration), namespace, configuration.host, timeout)


def describe_api_error(what: str, exc: kubernetes.client.ApiException, server: str) -> str:
    """One line for an HTTP error, with the API server's own message (who may not do what)."""
    message = ""
    try:
        body = json.loads(exc.body) if exc.body else {}
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        message = str(exc.body or "")[:300]
    if exc.status == 401:
        return f"{what}: the API server at {server} refused the credentials (401 Unauthorized)"
    if exc.status == 403:
        return f"{what}: forbidden (403): {message or 'RBAC does not allow it'}"
    return f"{what}: HTTP {exc.status} {exc.reason or ''}".rstrip() + (f": {message}" if message else "")


def _reason(exc: BaseException) -> str:
    """The root cause of a connection error, in one line (urllib3 nests it in MaxRetryError.reason)."""
    reason: Any = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    return " ".join(text.split())[:300] or type(exc).__name__
