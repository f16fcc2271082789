"""K8sGPT Result -> what AEGIS acts on.

``parse_result`` validates a ``core.k8sgpt.ai/v1alpha1`` Result (as written by
K8sGPT's operator, or an item of ``k8sgpt analyze -o json``) into a ``Finding``;
a malformed one raises ``InvalidResult`` with a clear reason. ``resolve_target``
follows the live object's ownerReferences to the workload that owns it
(``parentObject`` is empty in operator-written Results and is used only when
present). ``signature`` and ``fingerprint`` strip volatile parts (pod names,
hashes, counts) so the many Results K8sGPT writes for one problem look alike.

Called by ``graph.intake`` (intake of Result events); pure except for
``resolve_target``, which reads through an injected ``ObjectReader``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

from aegis import models, redact

RESULT_GROUP = "core.k8sgpt.ai"
RESULT_VERSION = "v1alpha1"
RESULT_PLURAL = "results"

# Analyzer kind strings whose object AEGIS can act on, and how the object is named.
SUPPORTED_KINDS = frozenset(
    {
        "Pod",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "Service",
        "PersistentVolumeClaim",
    }
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MAX_TEXTS = 50
_MAX_TEXT_LEN = 4000


class InvalidResult(ValueError):
    """A Result that AEGIS cannot act on; ``str(exc)`` says why."""


class UnsupportedResult(InvalidResult):
    """A well-formed Result about something AEGIS does not remediate (a Node, an Ingress...)."""


class ObjectReader(Protocol):
    """Reads live objects: one (``None`` when it does not exist) or a namespace's by selector."""

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list(
        self, kind: str, namespace: str, *, selector: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


def _field(mapping: Mapping[str, Any], *names: str) -> Any:
    """First present key among ``names`` (operator CRs use lower camel, CLI JSON capitalises)."""
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def _parse_failures(raw: Any) -> list[models.Failure]:
    if raw is None:
        raise InvalidResult("spec.error is missing (K8sGPT always writes at least one failure)")
    if not isinstance(raw, list):
        raise InvalidResult(f"spec.error must be a list, got {type(raw).__name__}")
    failures: list[models.Failure] = []
    for index, entry in enumerate(raw[:_MAX_TEXTS]):
        if not isinstance(entry, Mapping):
            raise InvalidResult(f"spec.error[{index}] must be an object, got {type(entry).__name__}")
        text = _field(entry, "text", "Text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidResult(f"spec.error[{index}].text is missing or empty")
        masks: list[models.Mask] = []
        sensitive = _field(entry, "sensitive", "Sensitive") or []
        if isinstance(sensitive, list):
            for item in sensitive:
                if isinstance(item, Mapping):
                    masks.append(
                        models.Mask(
                            unmasked=str(_field(item, "unmasked", "Unmasked") or ""),
                            masked=str(_field(item, "masked", "Masked") or ""),
                        )
                    )
        # The Log analyzer copies raw log lines: redact before the text is stored anywhere.
        failures.append(models.Failure(text=redact.text(text.strip()[:_MAX_TEXT_LEN]), sensitive=masks))
    if not failures:
        raise InvalidResult("spec.error is empty: the Result reports no failure")
    return failures


def parse_result(body: Mapping[str, Any]) -> models.Finding:
    """Validate a Result object into a ``Finding`` or raise ``InvalidResult`` saying why."""
    if not isinstance(body, Mapping):
        raise InvalidResult(f"a Result must be an object, got {type(body).__name__}")
    metadata = body.get("metadata") or {}
    spec = body.get("spec")
    status = body.get("status") or {}
    if not isinstance(metadata, Mapping) or not isinstance(status, Mapping):
        raise InvalidResult("metadata and status must be objects")
    if not isinstance(spec, Mapping):
        raise InvalidResult("spec is missing")

    kind = _field(spec, "kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidResult("spec.kind is missing")
    if kind not in SUPPORTED_KINDS:
        supported = ", ".join(sorted(SUPPORTED_KINDS))
        raise UnsupportedResult(f"kind {kind!r} is not something AEGIS remediates (supported: {supported})")

    raw_name = _field(spec, "name")
    if not isinstance(raw_name, str) or not raw_name:
        raise InvalidResult("spec.name is missing")
    parts = raw_name.split("/")
    container: str | None = None
    if len(parts) == 3 and kind == "Pod":  # the Log analyzer: ns/pod/container
        namespace, name, container = parts
    elif len(parts) == 2:
        namespace, name = parts
    else:
        raise InvalidResult(f"spec.name {raw_name!r} is not '<namespace>/<name>'")
    if not _DNS_LABEL.match(namespace or ""):
        raise InvalidResult(f"spec.name {raw_name!r} has no valid namespace")
    if not _DNS_SUBDOMAIN.match(name or "") or len(name) > 253:
        raise InvalidResult(f"spec.name {raw_name!r} has no valid object name")

    parent = _field(spec, "parentObject", "parent_object") or ""
    if not isinstance(parent, str):
        parent = ""
    details = _field(spec, "details") or ""
    return models.Finding(
        result_namespace=str(metadata.get("namespace") or ""),
        result_name=str(metadata.get("name") or raw_name.replace("/", "").replace("-", "")),
        result_uid=metadata.get("uid"),
        kind=kind,
        namespace=namespace,
        name=name,
        container=container,
        failures=_parse_failures(_field(spec, "error", "Error")),
        details=details if isinstance(details, str) else "",
        parent_object=parent,
        lifecycle=str(status.get("lifecycle") or ""),
        content_hash=str(status.get("contentHash") or ""),
        backend=str(_field(spec, "backend") or ""),
    )


# --- volatile parts of failure texts -------------------------------------------------------------

_UID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_POD_ARG = re.compile(r"\bpod=\S+")
_POD_SLICE = re.compile(r"pods: \[[^\]]*\]")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9.-]*")  # a possible object name; one linear pass over the text
_SAFE = frozenset("bcdfghjklmnpqrstvwxz2456789")  # the alphabet of pod-template-hash and pod suffixes
_STS_POD = re.compile(r"\b([a-z0-9][-a-z0-9]*)-\d+ in the namespace")
_DURATION = re.compile(r"\b\d+(h|m|s|ms)(\d+(m|s|ms))*\b")
# Counts ("has 3 replicas but 1 are available"), not digits inside tags, versions, paths or key=value pairs.
_NUMBER = re.compile(r"(?<![\w.:/=-])\d+(?![\w.:/-])")
_MAX_NORMALIZED = 2000


def _generated(part: str, lengths: range) -> bool:
    return len(part) in lengths and all(char in _SAFE for char in part)


def _strip_generated(token: str) -> str:
    """``web-7b9c6d5f4-x8k2p`` -> ``web-<pod>``, ``web-7b9c6d5f4`` -> ``web-<hash>``; other tokens unchanged."""
    parts = token.split("-")
    if len(parts) >= 3 and _generated(parts[-1], range(5, 6)) and _generated(parts[-2], range(6, 11)):
        return "-".join(parts[:-2]) + "-<pod>"
    if len(parts) >= 2 and _generated(parts[-1], range(8, 11)):
        return "-".join(parts[:-1]) + "-<hash>"
    return token


def normalize_text(text: str, object_name: str = "") -> str:
    """A failure text without the parts that change from pod to pod and cycle to cycle."""
    out = _UID.sub("<uid>", text[:_MAX_NORMALIZED])
    out = _POD_ARG.sub("pod=<pod>", out)
    out = _POD_SLICE.sub("pods: [<pods>]", out)
    out = _TOKEN.sub(lambda match: _strip_generated(match.group(0)), out)
    if object_name:
        out = re.sub(rf"(?<![\w.-]){re.escape(object_name)}(?![\w.-])", "<object>", out)
    out = _STS_POD.sub(r"\1-<ordinal> in the namespace", out)
    out = _DURATION.sub("<duration>", out)
    out = _NUMBER.sub("<n>", out)
    return " ".join(out.split())


def signature(finding: models.Finding) -> list[str]:
    """The finding's failure texts, normalized, de-duplicated and sorted."""
    return sorted({normalize_text(text, finding.name) for text in finding.texts})


def fingerprint(target: models.ObjectRef, texts: list[str]) -> str:
    """Stable digest of a target and a problem signature (hex, 16 characters)."""
    material = "\n".join([target.key, *sorted(set(texts))])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def target_digest(target: models.ObjectRef) -> str:
    """Short digest of the target alone, used as a label value to find its incidents."""
    return hashlib.sha256(target.key.encode()).hexdigest()[:16]


# --- owner resolution ----------------------------------------------------------------------------

_TOP_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
_CHAIN_KINDS = frozenset({"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"})
_MAX_CHAIN = 5


def _controller_owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    chosen = None
    for owner in owners:
        if not isinstance(owner, Mapping) or owner.get("kind") not in _CHAIN_KINDS:
            continue
        if owner.get("controller") or chosen is None:
            chosen = (str(owner["kind"]), str(owner.get("name", "")))
    return chosen


def _ref(kind: str, namespace: str, obj: Mapping[str, Any] | None, name: str) -> models.ObjectRef:
    meta = (obj or {}).get("metadata") or {}
    return models.ObjectRef(
        kind=kind,
        namespace=namespace,
        name=name,
        apiVersion=(obj or {}).get("apiVersion"),
        uid=meta.get("uid"),
    )


async def resolve_target(
    finding: models.Finding, reader: ObjectReader
) -> tuple[models.ObjectRef, list[models.ObjectRef], str]:
    """The object an incident is about, the chain that leads to it, and how it was found.

    A Pod or ReplicaSet is followed up its controller ownerReferences to the
    top-most workload (Deployment, StatefulSet, DaemonSet, CronJob; a Job when
    not owned). Services, PVCs and workloads are their own target. When the
    reported object is gone (pods are replaced all the time), ``parentObject``
    is used if present, then the ReplicaSet named by the pod-template-hash.
    """
    namespace = finding.namespace
    chain: list[models.ObjectRef] = []
    kind, name = finding.kind, finding.name
    obj = await reader.get(kind, namespace, name)
    how = "live object"

    # A Service whose backends exist but are not ready, or a claim that pods wait for, is a symptom of a
    # workload: the incident is about that workload (one incident per broken app, not one per symptom).
    if obj is not None and kind in ("Service", "PersistentVolumeClaim"):
        pod = await _symptom_pod(kind, obj, namespace, reader)
        if pod is not None:
            chain.append(_ref(kind, namespace, obj, name))
            kind, name, obj = "Pod", pod["metadata"]["name"], pod
            how = "backends not ready" if chain[0].kind == "Service" else "pods wait for the claim"
        elif kind == "PersistentVolumeClaim":
            # Reported before the workload's pods exist (a new namespace's pods wait for its ServiceAccount):
            # the workload whose pod template mounts the claim is the one it belongs to.
            workload = await _claim_workload(name, namespace, reader)
            if workload is not None:
                chain.append(_ref(kind, namespace, obj, name))
                kind, name, obj = str(workload["kind"]), workload["metadata"]["name"], workload
                how = "its pod template mounts the claim"

    if obj is None and kind in ("Pod", "ReplicaSet"):
        parent = finding.parent_object
        if parent and "/" in parent:
            parent_kind, parent_name = parent.split("/", 1)
            if parent_kind in _CHAIN_KINDS:
                chain.append(models.ObjectRef(kind=kind, namespace=namespace, name=name))
                kind, name = parent_kind, parent_name
                obj = await reader.get(kind, namespace, name)
                how = "parentObject"
        if obj is None and kind == "Pod" and name.count("-") >= 2:
            rs_name = name.rsplit("-", 1)[0]
            rs = await reader.get("ReplicaSet", namespace, rs_name)
            if rs is not None:
                chain.append(models.ObjectRef(kind="Pod", namespace=namespace, name=name))
                kind, name, obj = "ReplicaSet", rs_name, rs
                how = "pod name (pod gone)"
    if obj is None:
        raise InvalidResult(f"{finding.kind} {namespace}/{finding.name} no longer exists and its owner is unknown")

    while len(chain) < _MAX_CHAIN:
        owner = _controller_owner(obj) if kind in ("Pod", "ReplicaSet", "Job") else None
        if owner is None:
            break
        owner_kind, owner_name = owner
        owner_obj = await reader.get(owner_kind, namespace, owner_name)
        if owner_obj is None:  # an orphan on its way out: stay with what exists
            break
        chain.append(_ref(kind, namespace, obj, name))
        kind, name, obj = owner_kind, owner_name, owner_obj
    if kind == "Pod" and not chain:
        how = "bare pod"
    return _ref(kind, namespace, obj, name), chain, how


async def _symptom_pod(
    kind: str, obj: Mapping[str, Any], namespace: str, reader: ObjectReader
) -> dict[str, Any] | None:
    """For a Service: a selected pod that is not ready. For a PVC: a pod that mounts it. Else None."""
    spec = obj.get("spec") or {}
    if kind == "Service":
        selector = spec.get("selector") or {}
        if not selector:
            return None
        pods = await reader.list("Pod", namespace, selector={"matchLabels": dict(selector)})
        for pod in pods:
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue  # going away (its grace period): not what the Service waits for
            conditions = (pod.get("status") or {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            if not ready and _controller_owner(pod) is not None:
                return pod
        return None
    name = (obj.get("metadata") or {}).get("name")
    for pod in await reader.list("Pod", namespace):
        volumes = (pod.get("spec") or {}).get("volumes") or []
        if any((v.get("persistentVolumeClaim") or {}).get("claimName") == name for v in volumes):
            return pod
    return None


async def _claim_workload(claim: str, namespace: str, reader: ObjectReader) -> dict[str, Any] | None:
    """The Deployment or StatefulSet whose pod template mounts ``claim`` (with its kind set), else None."""
    for kind in ("Deployment", "StatefulSet"):
        for workload in await reader.list(kind, namespace):
            template = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
            volumes = template.get("volumes") or []
            if any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim for v in volumes):
                return {**workload, "kind": kind}
    return None


def incident_base_name(target: models.ObjectRef) -> str:
    """Readable, stable Incident name for a target: ``<kind>-<name>`` within its namespace."""
    base = f"{target.kind.lower()}-{target.name}"
    if len(base) > 240:
        base = base[:223] + "-" + target_digest(target)
    return base
