"""The Incident custom resource (``aegis.dev/v1alpha1``): create, find, join sources, record status.

``IncidentStore`` is the only code that writes Incidents. Status is written
through the status subresource with merge patches; the timeline is written
whole each time, so a retried write is idempotent. Used by ``graph.engine`` and ``graph.intake``
(intake, Result deletion) and by the graph nodes (phase, diagnosis, report).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from aegis import k8sgpt, models
from aegis.kube import client

LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_TARGET = "aegis.dev/target"
LABEL_TARGET_KIND = "aegis.dev/target-kind"
LABEL_FINGERPRINT = "aegis.dev/fingerprint"
_CONFLICT_RETRIES = 5
MAX_TIMELINE = 200  # lines kept on an Incident: the first few and the most recent
MAX_INACTIVE_SOURCES = 20  # sources K8sGPT no longer reports, kept for history


def incident_body(incident: models.Incident) -> dict[str, Any]:
    """The Incident object to create for a new problem."""
    return {
        "apiVersion": f"{models.API_GROUP}/{models.API_VERSION}",
        "kind": models.INCIDENT_KIND,
        "metadata": {
            "name": incident.name,
            "namespace": incident.namespace,
            "labels": {
                LABEL_MANAGED: "aegis",
                LABEL_TARGET: k8sgpt.target_digest(incident.target),
                LABEL_TARGET_KIND: incident.target.kind.lower(),
                LABEL_FINGERPRINT: incident.fingerprint,
            },
        },
        "spec": {
            "target": incident.target.dump(),
            "ownerChain": [ref.dump() for ref in incident.owner_chain],
            "fingerprint": incident.fingerprint,
            "signature": list(incident.signature),
            "sources": [source.dump() for source in incident.sources],
            "approval": {"decision": "Pending"},
        },
    }


def incident_from_object(obj: dict[str, Any]) -> models.Incident:
    """Read an Incident object back into the model (unknown spec fields are ignored)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return models.Incident(
        name=meta["name"],
        namespace=meta.get("namespace") or spec["target"]["namespace"],
        uid=meta.get("uid"),
        target=models.ObjectRef.model_validate(spec["target"]),
        ownerChain=[models.ObjectRef.model_validate(ref) for ref in spec.get("ownerChain") or []],
        fingerprint=spec.get("fingerprint", ""),
        signature=list(spec.get("signature") or []),
        sources=[models.Source.model_validate(source) for source in spec.get("sources") or []],
    )


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


class IncidentStore:
    """Incidents through the Kubernetes API."""

    def __init__(self, cluster: client.Cluster) -> None:
        self.cluster = cluster

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.cluster.get_custom(
            models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL, namespace, name
        )

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self.cluster.list_custom(
            models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL, namespace, labels={LABEL_MANAGED: "aegis"}
        )

    async def for_target(self, target: models.ObjectRef) -> list[dict[str, Any]]:
        """Incidents about ``target``, oldest first."""
        items = await self.cluster.list_custom(
            models.API_GROUP,
            models.API_VERSION,
            models.INCIDENT_PLURAL,
            target.namespace,
            labels={LABEL_TARGET: k8sgpt.target_digest(target)},
        )
        mine = []
        for item in items:
            spec_target = (item.get("spec") or {}).get("target") or {}
            if (spec_target.get("kind"), spec_target.get("name")) == (target.kind, target.name):
                mine.append(item)
        base = k8sgpt.incident_base_name(target)
        return sorted(mine, key=lambda item: (ordinal(item["metadata"]["name"], base), item["metadata"]["name"]))

    async def create(self, incident: models.Incident) -> tuple[dict[str, Any], bool]:
        """Create the Incident; when one of that name already exists, return it. -> (object, created)."""
        try:
            obj = await self.cluster.create_custom(
                models.API_GROUP,
                models.API_VERSION,
                models.INCIDENT_PLURAL,
                incident.namespace,
                incident_body(incident),
            )
            return obj, True
        except client.ClusterError as exc:
            if exc.status != 409:
                raise
        existing = await self.get(incident.namespace, incident.name)
        if existing is None:
            raise client.ClusterError(f"Incident {incident.namespace}/{incident.name} conflicted but cannot be read")
        return existing, False

    async def update_spec(
        self, namespace: str, name: str, mutate: Callable[[models.Incident], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read-modify-write of the Incident's spec: ``mutate`` returns the spec fields to change (or None).

        Returns the updated object, or None when the Incident is gone or nothing had to change.

        The write carries the resourceVersion it was computed from and is retried on 409, so two
        concurrent updates (a Result deleted while another is created) never lose each other's change.
        """
        for _attempt in range(_CONFLICT_RETRIES):
            obj = await self.get(namespace, name)
            if obj is None:
                return None
            changes = mutate(incident_from_object(obj))
            if not changes:
                return None
            if "sources" in changes:
                changes["sources"] = [s.dump() for s in trim_sources(changes["sources"])]
            patch: dict[str, Any] = {"spec": changes}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                patch["metadata"] = {"resourceVersion": version}
            try:
                return await self.cluster.patch_custom(
                    models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL, namespace, name, patch
                )
            except client.ClusterError as exc:
                if exc.status != 409:
                    raise
        raise client.ClusterError(f"Incident {namespace}/{name}: spec kept changing under us; gave up", 409)

    async def set_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        timeline: list[models.TimelineEntry] | None = None,
    ) -> dict[str, Any] | None:
        """Merge ``status`` into the Incident's status and append ``timeline`` lines to its timeline.

        Read-modify-write with the object's resourceVersion as precondition (retried on
        409), so lines appended by concurrent writers are never lost.
        """
        for _attempt in range(_CONFLICT_RETRIES):
            obj = await self.get(namespace, name)
            if obj is None:
                return None
            patch: dict[str, Any] = {"status": dict(status)}
            if timeline:
                existing = list((obj.get("status") or {}).get("timeline") or [])
                patch["status"]["timeline"] = trim_timeline(existing + [line.dump() for line in timeline])
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                patch["metadata"] = {"resourceVersion": version}
            try:
                return await self.cluster.patch_custom(
                    models.API_GROUP, models.API_VERSION, models.INCIDENT_PLURAL, namespace, name, patch, status=True
                )
            except client.ClusterError as exc:
                if exc.status != 409:
                    raise
        raise client.ClusterError(f"Incident {namespace}/{name}: status kept changing under us; gave up", 409)

    async def note(self, namespace: str, name: str, entry: models.TimelineEntry) -> None:
        """Append one timeline line (e.g. a Result was deleted) without touching anything else."""
        await self.set_status(namespace, name, {}, [entry])


def trim_timeline(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_TIMELINE lines: how it started and how it is going."""
    if len(lines) <= MAX_TIMELINE:
        return lines
    head = 10
    return lines[:head] + lines[-(MAX_TIMELINE - head) :]


def trim_sources(sources: list[models.Source]) -> list[models.Source]:
    """Every active source, and the most recent inactive ones."""
    inactive = sorted((s for s in sources if not s.active), key=lambda s: s.last_seen)
    dropped = {id(s) for s in inactive[: max(len(inactive) - MAX_INACTIVE_SOURCES, 0)]}
    return [s for s in sources if id(s) not in dropped]


def next_name(base: str, existing: list[dict[str, Any]]) -> str:
    """``base`` for the first incident of a target, then ``base-2``, ``base-3``... for recurrences."""
    if not existing:
        return base
    highest = max(ordinal(item["metadata"]["name"], base) for item in existing)
    return f"{base}-{highest + 1}"


def ordinal(name: str, base: str) -> int:
    """1 for ``base`` itself, N for ``base-N``; 0 for names of another pattern."""
    if name == base:
        return 1
    suffix = name.removeprefix(base + "-")
    return int(suffix) if suffix != name and suffix.isdigit() else 0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)
