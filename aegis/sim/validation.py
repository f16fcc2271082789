"""A subset of the API server's validation, so that a dry-run or a bad patch fails as it would for real.

``validate(kind, obj, old)`` returns ``[(field, message)]``; empty means valid. It
covers what a remediation can get wrong: names, required fields, container names
and images, ports, resource quantities (requests within limits), probes, replica
counts, selectors that must match the template, immutable fields
(Deployment selector, PVC spec, Service clusterIP), and the keys (and, for registry
credentials, the JSON) that typed Secrets must hold. Used by ``aegis.sim.admission``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from aegis import quantity

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

Causes = list[tuple[str, str]]

_POD_TEMPLATE_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"}


def validate(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> Causes:
    causes: Causes = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if kind in ("Namespace", "Service") and not _DNS1123_LABEL.match(name):
        causes.append(
            (
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 label must consist of "
                "lower case alphanumeric characters or '-'",
            )
        )
    elif kind not in ("Event",) and name and not _DNS1123_SUBDOMAIN.match(name):
        causes.append(
            (
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                "lower case alphanumeric characters, '-' or '.'",
            )
        )
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                (
                    f"metadata.labels.{key}",
                    f"Invalid value: {value!r}: a valid label must be 63 characters "
                    "or less and consist of alphanumerics, '-', '_' or '.'",
                )
            )
    spec = obj.get("spec") or {}
    old_spec = (old or {}).get("spec") or {}
    if old is not None:
        causes += _immutable(kind, spec, old_spec)
    if kind == "Pod":
        causes += _pod_spec(spec, "spec")
    elif kind in _POD_TEMPLATE_KINDS or kind == "CronJob":
        template = (
            spec.get("template")
            if kind != "CronJob"
            else ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        )
        prefix = "spec.template" if kind != "CronJob" else "spec.jobTemplate.spec.template"
        if not isinstance(template, dict):
            causes.append((prefix, "Required value"))
        else:
            causes += _pod_spec(template.get("spec") or {}, f"{prefix}.spec")
            if kind != "CronJob" and kind != "Job":
                causes += _selector(spec, template)
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
            causes.append(("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"))
        immutable_selector = kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
        if old is not None and immutable_selector and old_spec.get("selector") != spec.get("selector"):
            causes.append(("spec.selector", "Invalid value: field is immutable"))
    elif kind == "Service":
        for index, port in enumerate(spec.get("ports") or []):
            if not _port_ok(port.get("port")):
                causes.append(
                    (
                        f"spec.ports[{index}].port",
                        f"Invalid value: {port.get('port')!r}: must be between 1 and 65535, inclusive",
                    )
                )
            target = port.get("targetPort")
            if target is not None and not (_port_ok(target) or (isinstance(target, str) and _port_name_ok(target))):
                causes.append((f"spec.ports[{index}].targetPort", f"Invalid value: {target!r}"))
        if old is not None and old_spec.get("clusterIP") and spec.get("clusterIP") != old_spec.get("clusterIP"):
            causes.append(("spec.clusterIP", "Invalid value: field is immutable"))
    elif kind == "Secret":
        causes += _secret(obj)
    elif kind == "PersistentVolumeClaim":
        if old is not None:
            before = {k: v for k, v in old_spec.items() if k not in ("resources", "volumeName")}
            after = {k: v for k, v in spec.items() if k not in ("resources", "volumeName")}
            if before != after:
                causes.append(
                    (
                        "spec",
                        "Forbidden: spec is immutable after creation except resources.requests "
                        "and volumeAttributesClassName for bound claims",
                    )
                )
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            causes.append(("spec.resources[storage]", "Required value"))
        elif not quantity.valid(storage):
            causes.append(("spec.resources.requests.storage", f"Invalid value: {storage!r}"))
    return causes


# Secret types whose keys the API server requires; registry credentials must also be JSON.
_SECRET_KEYS = {
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _secret(obj: dict[str, Any]) -> Causes:
    """kube-apiserver's ValidateSecret for the typed Secrets (its messages; the contents are never echoed)."""
    kind = obj.get("type") or "Opaque"
    data = obj.get("data") or {}
    if kind == "kubernetes.io/basic-auth":
        if not data.get("username") and not data.get("password"):
            return [("data[username]", "Required value"), ("data[password]", "Required value")]
        return []
    causes: Causes = [(f"data[{key}]", "Required value") for key in _SECRET_KEYS.get(kind, ()) if key not in data]
    if kind in ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg") and not causes:
        key = _SECRET_KEYS[kind][0]
        try:
            text = base64.b64decode(str(data[key]), validate=True).decode("utf-8")
            json.loads(text)
        except (binascii.Error, UnicodeDecodeError):
            causes.append((f"data[{key}]", 'Invalid value: "<secret contents redacted>": invalid JSON'))
        except json.JSONDecodeError as exc:
            start = len(text) - len(text.lstrip())
            if start == len(text):
                why = "unexpected end of JSON input"
            elif exc.pos == start:  # Go's words for a value that is not JSON at all
                why = f"invalid character {text[start]!r} looking for beginning of value"
            else:
                why = f"invalid JSON: {exc.msg}"
            causes.append((f"data[{key}]", f'Invalid value: "<secret contents redacted>": {why}'))
    return causes


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")
_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _immutable(kind: str, spec: dict[str, Any], old_spec: dict[str, Any]) -> Causes:
    """Fields the API server refuses to change on update."""
    if kind == "Pod":

        def frozen(pod_spec: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in pod_spec.items() if k not in _POD_MUTABLE}
            for group in ("containers", "initContainers"):
                out[group] = [{k: v for k, v in c.items() if k != "image"} for c in pod_spec.get(group) or []]
            return out

        if frozen(spec) != frozen(old_spec):
            return [
                (
                    "spec",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                    "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
                    "was previously negative)",
                )
            ]
    if kind == "Job":
        for field in ("template", "selector", "completions"):
            if field in old_spec and spec.get(field) != old_spec.get(field):
                return [(f"spec.{field}", "Invalid value: field is immutable")]
    if kind == "StatefulSet":
        before = {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}
        after = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        if before != after:
            return [
                (
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                    "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                    "are forbidden",
                )
            ]
    if kind == "PersistentVolumeClaim":
        new_size = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        old_size = ((old_spec.get("resources") or {}).get("requests") or {}).get("storage")
        if (
            quantity.valid(new_size)
            and quantity.valid(old_size)
            and quantity.parse(new_size) < quantity.parse(old_size)
        ):
            return [("spec.resources.requests.storage", "Forbidden: field can not be less than previous value")]
    return []


def _port_ok(value: Any) -> bool:
    return isinstance(value, int) and 1 <= value <= 65535


def _port_name_ok(value: str) -> bool:
    return 1 <= len(value) <= 15 and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value) is not None


def _selector(spec: dict[str, Any], template: dict[str, Any]) -> Causes:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return [("spec.selector", "Required value")]
    labels = (template.get("metadata") or {}).get("labels") or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return [
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            ]
    return []


def _pod_spec(spec: dict[str, Any], prefix: str) -> Causes:
    causes: Causes = []
    containers = spec.get("containers")
    if not containers:
        return [(f"{prefix}.containers", "Required value")]
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            path = f"{prefix}.{group}[{index}]"
            name = container.get("name") or ""
            if not name:
                causes.append((f"{path}.name", "Required value"))
            elif not _DNS1123_LABEL.match(name):
                causes.append((f"{path}.name", f"Invalid value: {name!r}: a lowercase RFC 1123 label"))
            elif name in names:
                causes.append((f"{path}.name", f"Duplicate value: {name!r}"))
            names.add(name)
            if not (container.get("image") or "").strip():
                causes.append((f"{path}.image", "Required value"))
            for p_index, port in enumerate(container.get("ports") or []):
                if not _port_ok(port.get("containerPort")):
                    causes.append(
                        (
                            f"{path}.ports[{p_index}].containerPort",
                            f"Invalid value: {port.get('containerPort')!r}: must be between 1 and 65535, inclusive",
                        )
                    )
            for e_index, env in enumerate(container.get("env") or []):
                if not _ENV_NAME.match(env.get("name") or ""):
                    causes.append((f"{path}.env[{e_index}].name", f"Invalid value: {env.get('name')!r}"))
            causes += _resources(container.get("resources") or {}, f"{path}.resources")
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if isinstance(probe, dict):
                    causes += _probe(probe, f"{path}.{probe_name}")
    return causes


def _resources(resources: dict[str, Any], path: str) -> Causes:
    causes: Causes = []
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    for section, values in (("limits", limits), ("requests", requests)):
        for resource, value in values.items():
            if not quantity.valid(value):
                causes.append(
                    (
                        f"{path}.{section}[{resource}]",
                        f"Invalid value: {value!r}: must match the regular "
                        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )
                )
    for resource, value in requests.items():
        comparable = resource in limits and quantity.valid(value) and quantity.valid(limits[resource])
        if comparable and quantity.parse(value) > quantity.parse(limits[resource]):
            causes.append(
                (
                    f"{path}.requests",
                    f"Invalid value: {value!r}: must be less than or equal to {resource} limit of {limits[resource]}",
                )
            )
    return causes


def _probe(probe: dict[str, Any], path: str) -> Causes:
    handlers = [key for key in ("httpGet", "tcpSocket", "exec", "grpc") if key in probe]
    if len(handlers) != 1:
        return [(path, "Required value: must specify a handler type")]
    handler = probe[handlers[0]]
    if handlers[0] in ("httpGet", "tcpSocket"):
        port = handler.get("port")
        if not (_port_ok(port) or (isinstance(port, str) and _port_name_ok(port))):
            return [(f"{path}.{handlers[0]}.port", f"Invalid value: {port!r}: must be between 1 and 65535, inclusive")]
    for field in ("periodSeconds", "failureThreshold", "successThreshold", "timeoutSeconds"):
        value = probe.get(field)
        if value is not None and (not isinstance(value, int) or value < 1):
            return [(f"{path}.{field}", f"Invalid value: {value!r}: must be greater than or equal to 1")]
    return []
