"""What a pod's containers see of ConfigMaps, Secrets and the downward API, or why they cannot start.

``environment`` resolves a container's ``env``/``envFrom`` (``$(VAR)`` references,
ConfigMap/Secret keys, ``fieldRef``) into the variables its program gets, or the
``CreateContainerConfigError`` message; ``files`` gives the files its ConfigMap and
Secret volume mounts hold; ``missing_volume`` is the ``FailedMount`` message of a
volume whose ConfigMap or Secret does not exist; ``missing_pull_secrets`` the listed
imagePullSecrets that do not exist. Read from the informers' caches;
called by the kubelet stand-in (``aegis.sim.kubelet``).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from aegis.sim import controllers

_DEPENDENT = re.compile(r"\$\((\w+)\)")  # Kubernetes' $(VAR) references between env vars


def missing_volume(informers: controllers.Informers, pod: dict[str, Any]) -> str | None:
    """The ``FailedMount`` message of the first volume whose (non-optional) ConfigMap or Secret is missing."""
    ns = pod["metadata"]["namespace"]
    for volume in pod["spec"].get("volumes") or []:
        for key, kind, what in (("configMap", "ConfigMap", "configmap"), ("secret", "Secret", "secret")):
            source = volume.get(key)
            if source is None or source.get("optional"):
                continue
            name = source.get("name") or source.get("secretName")
            if informers[kind].get(ns, name) is None:
                return f'MountVolume.SetUp failed for volume "{volume["name"]}" : {what} "{name}" not found'
    return None


def missing_pull_secrets(informers: controllers.Informers, pod: dict[str, Any]) -> list[str]:
    """The pod's ``imagePullSecrets`` that do not exist in its namespace, in the order listed."""
    ns = pod["metadata"]["namespace"]
    names = [ref.get("name") for ref in pod["spec"].get("imagePullSecrets") or [] if ref.get("name")]
    return [name for name in names if informers["Secret"].get(ns, name) is None]


def environment(
    informers: controllers.Informers, pod: dict[str, Any], container: dict[str, Any], pod_ip: str
) -> tuple[dict[str, str], str | None]:
    """The container's env as the program would see it, or the CreateContainerConfigError text."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for key, kind, what in (("configMapRef", "ConfigMap", "configmap"), ("secretRef", "Secret", "secret")):
            ref = source.get(key)
            if ref is None:
                continue
            obj = informers[kind].get(ns, ref.get("name"))
            if obj is None:
                if ref.get("optional"):
                    continue
                return env, f'{what} "{ref.get("name")}" not found'
            for data_key, value in data(obj).items():
                env[(source.get("prefix") or "") + data_key] = value
    for item in container.get("env") or []:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = _DEPENDENT.sub(lambda m: env.get(m.group(1), m.group(0)), str(item.get("value", "")))
            continue
        for key, kind, what in (
            ("configMapKeyRef", "ConfigMap", "configmap"),
            ("secretKeyRef", "Secret", "secret"),
        ):
            ref = source.get(key)
            if ref is None:
                continue
            obj = informers[kind].get(ns, ref.get("name"))
            values = data(obj) if obj is not None else {}
            if obj is None and not ref.get("optional"):
                return env, f'{what} "{ref.get("name")}" not found'
            if obj is not None and ref.get("key") not in values:
                if ref.get("optional"):
                    continue
                return env, f"couldn't find key {ref.get('key')} in {kind} {ns}/{ref.get('name')}"
            if ref.get("key") in values:
                env[item["name"]] = values[ref["key"]]
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            env[item["name"]] = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": ns,
                "status.podIP": pod_ip,
                "spec.nodeName": pod["spec"].get("nodeName", ""),
            }.get(path, "")
    return env, None


def files(informers: controllers.Informers, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """Files the container sees from ConfigMap and Secret volumes, by path."""
    ns = pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    out: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        for key, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
            if key in volume:
                obj = informers[kind].get(ns, volume[key].get("name") or volume[key].get("secretName"))
                for data_key, value in (data(obj) if obj else {}).items():
                    out[f"{mount['mountPath'].rstrip('/')}/{data_key}"] = value
    return out


def data(obj: dict[str, Any] | None) -> dict[str, str]:
    """A ConfigMap's ``data``, or a Secret's decoded ``data`` and ``stringData``; ``{}`` for None."""
    if obj is None:
        return {}
    out = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if obj.get("kind") == "Secret":
        out = {}
        for key, value in (obj.get("data") or {}).items():
            try:
                out[key] = base64.b64decode(value).decode("utf-8", "replace")
            except (ValueError, TypeError):
                out[key] = ""
        out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return out
