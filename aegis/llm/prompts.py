"""The one prompt renderer: template files in ``aegis/llm/templates`` filled with ``string.Template``.

Templates name their slots (``$target``, ``$evidence``…); a missing value is a
programming error and raises. The taxonomy and the action vocabulary are described
here once, for every prompt that needs them. Called by ``aegis.llm.advisor``.
"""

from __future__ import annotations

import functools
import importlib.resources
import string
from typing import Any

CATEGORIES: dict[str, str] = {
    "image-pull": "the image cannot be pulled (wrong tag or name, missing registry credentials)",
    "missing-config": "a ConfigMap or Secret the pod mounts or reads does not exist",
    "missing-env": "the application exits because a required environment variable is not set",
    "app-crash": "the application crashes after start (bad release, bad argument, bug)",
    "oom-killed": "containers are killed for exceeding their memory limit",
    "probe-failure": "a liveness or readiness probe checks the wrong port or path",
    "unschedulable-resources": "pods cannot be scheduled: requests exceed what any node has",
    "unschedulable-constraints": "pods cannot be scheduled: nodeSelector, affinity or taints match no node",
    "service-selector-mismatch": "a Service selects no pods (selector does not match the pods' labels)",
    "service-port-mismatch": "a Service's targetPort is not a port the pods listen on",
    "pvc-pending": "a PersistentVolumeClaim stays Pending (missing StorageClass, no volume)",
    "unknown": "none of the above, or the evidence does not show the cause",
}

VOCABULARY: dict[str, str] = {
    "set-image": 'params {"container": name, "image": "repo/name:tag"} — on a Deployment/StatefulSet/DaemonSet',
    "rollback": 'params {} or {"revision": n} — a Deployment back to its previous (or given) revision',
    "set-env": 'params {"container": name, "name": VAR, "value": text} — sets one environment variable',
    "set-resources": 'params {"container": name, "limits": {"memory": "512Mi"}, "requests": {"memory": "256Mi"}}',
    "set-probe": 'params {"container": name, "probe": "livenessProbe"|"readinessProbe"|"startupProbe", '
    '"port": declared port number or name, "path": "/path"} — port and/or path',
    "scale": 'params {"replicas": n} — a Deployment or StatefulSet',
    "restart": "params {} — a rolling restart of the workload",
    "patch-service": 'params {"selector": {label: value}} and/or {"port": servicePort, "targetPort": port} '
    "— on the Service",
    "set-node-selector": 'params {"nodeSelector": {label: value}} or {"nodeSelector": null} to remove it',
    "recreate-pvc": 'params {"storageClassName": name} and/or {"size": "1Gi"} — recreates a Pending claim',
}


@functools.cache
def _template(name: str) -> string.Template:
    text = importlib.resources.files("aegis.llm").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")
    return string.Template(text)


def render(name: str, **values: Any) -> str:
    """The template ``templates/<name>.txt`` with every ``$slot`` filled (``KeyError`` if one is missing)."""
    return _template(name).substitute({key: str(value) for key, value in values.items()})


def categories() -> str:
    return "\n".join(f"- {name}: {meaning}" for name, meaning in CATEGORIES.items())


def vocabulary() -> str:
    return "\n".join(f"- {kind}: {params}" for kind, params in VOCABULARY.items())
