"""The nouns of AEGIS: pydantic models shared by every layer.

Incident (what is broken and who reported it), Evidence (what AEGIS saw),
Diagnosis (why), Action / ActionResult / Plan (what to change), Verification
(shadow run), Decision (gate), Outcome (how it ended), TimelineEntry.

Used by ``aegis.k8sgpt`` (intake), ``aegis.kube`` (reading and recording),
``aegis.rules`` (diagnosis), the graph nodes and the CLI. Graph state keeps
these as plain dicts (``model_dump(mode="json")``) so checkpoints stay portable.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pydantic

API_GROUP = "aegis.dev"
API_VERSION = "v1alpha1"
INCIDENT_PLURAL = "incidents"
INCIDENT_KIND = "Incident"

Category = Literal[
    "image-pull",
    "missing-config",
    "missing-env",
    "app-crash",
    "oom-killed",
    "probe-failure",
    "unschedulable-resources",
    "unschedulable-constraints",
    "service-selector-mismatch",
    "service-port-mismatch",
    "pvc-pending",
    "unknown",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

Phase = Literal[
    "Pending",  # created, workflow not started yet
    "Diagnosing",
    "Diagnosed",  # observe mode: diagnosis recorded, no remediation attempted
    "Verifying",
    "AwaitingApproval",
    "Applying",
    "Resolved",
    "RolledBack",
    "Rejected",
    "Escalated",
    "Expired",
    "Failed",
]
TERMINAL_PHASES: frozenset[str] = frozenset(
    {"Diagnosed", "Resolved", "RolledBack", "Rejected", "Escalated", "Expired", "Failed"}
)

ActionKind = Literal[
    "set-image",
    "rollback",
    "set-env",
    "set-resources",
    "set-probe",
    "scale",
    "restart",
    "patch-service",
    "set-node-selector",
    "recreate-pvc",
]
Risk = Literal["low", "medium", "high"]

# Kinds AEGIS can treat as the target of an incident (the workload, or the Service / PVC itself).
WORKLOAD_KINDS: frozenset[str] = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"})
TARGET_KINDS: frozenset[str] = WORKLOAD_KINDS | {"Pod", "Service", "PersistentVolumeClaim"}
# Targets AEGIS diagnoses but never changes: their incidents end Escalated saying what a human should do
# (aegis.rules.remedies.unsupported_reason). A Job's pod template is immutable and a CronJob's runs fail for
# reasons outside its spec; a DaemonSet's fix would roll out to every node, cannot be rehearsed in a shadow (a
# copy would run a pod on every node) and has no ReplicaSet to roll back from.
UNCHANGED_KINDS: frozenset[str] = frozenset({"Job", "CronJob", "DaemonSet"})


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """JSON-compatible dict with camelCase aliases where defined (for the API and graph state)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectRef(_Model):
    """A Kubernetes object by kind, namespace and name (uid when known)."""

    kind: str
    namespace: str
    name: str
    api_version: str | None = pydantic.Field(default=None, alias="apiVersion")
    uid: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class Mask(_Model):
    """K8sGPT's anonymization pair for one value in a failure text."""

    unmasked: str = ""
    masked: str = ""


class Failure(_Model):
    """One entry of a Result's ``spec.error``: the real text and its masks."""

    text: str
    sensitive: list[Mask] = pydantic.Field(default_factory=list)


class Finding(_Model):
    """A K8sGPT Result, parsed and validated (see ``aegis.k8sgpt.parse_result``)."""

    result_namespace: str
    result_name: str
    result_uid: str | None = None
    kind: str  # the analyzer's kind string (Pod, Deployment, Service, ...)
    namespace: str  # the analyzed object's namespace
    name: str  # the analyzed object's name
    container: str | None = None  # only for the Log analyzer's ns/pod/container names
    failures: list[Failure]
    details: str = ""
    parent_object: str = ""  # "Kind/name" when present (CLI output); "" from the operator
    lifecycle: str = ""
    content_hash: str = ""
    backend: str = ""

    @property
    def result_key(self) -> str:
        return f"{self.result_namespace}/{self.result_name}"

    @property
    def object_ref(self) -> ObjectRef:
        return ObjectRef(kind=self.kind, namespace=self.namespace, name=self.name)

    @property
    def texts(self) -> list[str]:
        return [failure.text for failure in self.failures]


class Source(_Model):
    """One K8sGPT Result that points at an Incident's target (``spec.sources``)."""

    result: str  # "<namespace>/<name>" of the Result object
    kind: str
    object: str  # "<namespace>/<name>" of the analyzed object
    texts: list[str]
    first_seen: datetime.datetime = pydantic.Field(alias="firstSeen")
    last_seen: datetime.datetime = pydantic.Field(alias="lastSeen")
    active: bool = True


class Incident(_Model):
    """One distinct problem on one target: the identity the workflow runs under."""

    name: str
    namespace: str
    uid: str | None = None
    target: ObjectRef
    owner_chain: list[ObjectRef] = pydantic.Field(default_factory=list, alias="ownerChain")
    fingerprint: str
    signature: list[str] = pydantic.Field(default_factory=list)
    sources: list[Source] = pydantic.Field(default_factory=list)

    @property
    def thread_id(self) -> str:
        """The LangGraph thread this incident's workflow runs in (unique per Incident object)."""
        return f"{self.namespace}/{self.name}/{self.uid or 'no-uid'}"


class ContainerState(_Model):
    """One container's status, reduced to what a diagnosis needs."""

    name: str
    image: str = ""
    ready: bool = False
    restart_count: int = pydantic.Field(default=0, alias="restartCount")
    state: str = ""  # waiting | running | terminated | ""
    reason: str = ""
    message: str = ""
    exit_code: int | None = pydantic.Field(default=None, alias="exitCode")
    last_reason: str = pydantic.Field(default="", alias="lastReason")
    last_exit_code: int | None = pydantic.Field(default=None, alias="lastExitCode")
    started_at: datetime.datetime | None = pydantic.Field(default=None, alias="startedAt")  # running since
    memory_limit: str | None = pydantic.Field(default=None, alias="memoryLimit")
    memory_request: str | None = pydantic.Field(default=None, alias="memoryRequest")
    ports: list[dict[str, Any]] = pydantic.Field(default_factory=list)  # declared {name?, containerPort}
    env_names: list[str] = pydantic.Field(default_factory=list, alias="envNames")  # names only, never values
    env_from: list[str] = pydantic.Field(default_factory=list, alias="envFrom")  # "configmap x" / "secret y"
    init: bool = False

    def stable_since(self, now: datetime.datetime, seconds: float = 600) -> bool:
        """Running and Ready for longer than the kubelet's back-off reset window: it has recovered."""
        return (
            self.ready
            and self.state == "running"
            and self.started_at is not None
            and (now - self.started_at).total_seconds() > seconds
        )


class PodSummary(_Model):
    """A pod of the target workload: phase, scheduling condition, containers, labels."""

    name: str
    phase: str = ""
    node: str | None = None
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    scheduled_reason: str = pydantic.Field(default="", alias="scheduledReason")
    scheduled_message: str = pydantic.Field(default="", alias="scheduledMessage")
    containers: list[ContainerState] = pydantic.Field(default_factory=list)
    # Being deleted (metadata.deletionTimestamp): shown in the evidence, never judged — it is going away.
    terminating: bool = False


class ClaimSummary(_Model):
    """A PersistentVolumeClaim the target's pods use (or the target itself)."""

    name: str
    phase: str = ""
    storage_class: str | None = pydantic.Field(default=None, alias="storageClass")
    storage_class_exists: bool | None = pydantic.Field(default=None, alias="storageClassExists")
    size: str | None = None


class EventSummary(_Model):
    """A Kubernetes Event about the target, its owners or its pods."""

    type: str = ""
    reason: str = ""
    message: str = ""
    object: str = ""  # "Kind/name" of the involved object
    count: int = 1
    last_seen: str = pydantic.Field(default="", alias="lastSeen")


class ServiceSummary(_Model):
    """A Service involved in the incident and what backs it."""

    name: str
    selector: dict[str, str] = pydantic.Field(default_factory=dict)
    ports: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    ready_endpoints: int = pydantic.Field(default=0, alias="readyEndpoints")
    not_ready_endpoints: int = pydantic.Field(default=0, alias="notReadyEndpoints")
    matching_pods: list[str] = pydantic.Field(default_factory=list, alias="matchingPods")


class Evidence(_Model):
    """What AEGIS itself saw in the cluster. K8sGPT's texts are hints, never trusted."""

    target: ObjectRef
    target_found: bool = pydantic.Field(default=True, alias="targetFound")
    target_summary: dict[str, Any] = pydantic.Field(default_factory=dict, alias="targetSummary")
    owner_chain: list[ObjectRef] = pydantic.Field(default_factory=list, alias="ownerChain")
    pods: list[PodSummary] = pydantic.Field(default_factory=list)
    events: list[EventSummary] = pydantic.Field(default_factory=list)
    logs: dict[str, list[str]] = pydantic.Field(default_factory=dict)  # "pod/container" -> last lines
    service: ServiceSummary | None = None
    claims: list[ClaimSummary] = pydantic.Field(default_factory=list)
    namespace_pods: list[PodSummary] = pydantic.Field(default_factory=list, alias="namespacePods")
    hints: list[str] = pydantic.Field(default_factory=list)  # K8sGPT failure texts (untrusted)
    gaps: list[str] = pydantic.Field(default_factory=list)  # what could not be gathered, and why
    collected_at: datetime.datetime = pydantic.Field(alias="collectedAt")


class Diagnosis(_Model):
    """Why the target is broken: a category from the fixed taxonomy and the lines that show it."""

    category: Category
    summary: str = pydantic.Field(max_length=2000)
    evidence: list[str] = pydantic.Field(default_factory=list, max_length=20)
    confidence: float = pydantic.Field(ge=0.0, le=1.0)
    source: Literal["rules", "llm"]
    rule: str | None = None  # which rule answered, for rules diagnoses
    explanation: str = pydantic.Field(default="", max_length=1200)  # the LLM's plain-language account


class Action(_Model):
    """One typed change from the closed vocabulary, pinned to a target."""

    kind: ActionKind
    target: ObjectRef
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    risk: Risk = "medium"
    rationale: str = ""


class ActionResult(_Model):
    """The one record of a cluster-changing action: audit trail, Incident status and LLM feedback."""

    action: Action
    patch: dict[str, Any] | list[dict[str, Any]] | None = None
    patch_type: Literal["strategic", "merge", "json", "recreate"] = pydantic.Field(
        default="strategic", alias="patchType"
    )
    dry_run: Literal["passed", "failed", "skipped"] = pydantic.Field(default="skipped", alias="dryRun")
    dry_run_message: str = pydantic.Field(default="", alias="dryRunMessage")
    pre_image: dict[str, Any] | None = pydantic.Field(default=None, alias="preImage")
    applied: bool = False
    at: datetime.datetime | None = None
    error: str | None = None


class Plan(_Model):
    """A ranked candidate fix: one or more actions, and why."""

    actions: list[Action]
    rationale: str = ""
    rank: int = 0
    source: Literal["rules", "llm"] = "rules"


class Verification(_Model):
    """The shadow run of one plan."""

    passed: bool
    baseline_reproduced: bool | None = pydantic.Field(default=None, alias="baselineReproduced")
    candidate_healthy: bool | None = pydantic.Field(default=None, alias="candidateHealthy")
    shadow_namespace: str | None = pydantic.Field(default=None, alias="shadowNamespace")
    details: list[str] = pydantic.Field(default_factory=list)


class Decision(_Model):
    """What the gate decided, and who (or which policy) decided it."""

    verdict: Literal["auto", "ask", "refuse", "observe"]
    outcome: Literal["approved", "rejected", "expired", "pending", "not-applicable"] = "pending"
    by: str | None = None
    identity_verified: bool = pydantic.Field(default=False, alias="identityVerified")
    reason: str = ""
    at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = pydantic.Field(default=None, alias="expiresAt")  # an unanswered ask ends
    question: str | None = None  # id of this ask: an answer naming another question is not an answer to it


class Outcome(_Model):
    """How an incident ended."""

    phase: Phase
    reason: str = ""
    applied: bool = False
    healed: bool | None = None
    rolled_back: bool = pydantic.Field(default=False, alias="rolledBack")


class TimelineEntry(_Model):
    """One line of an Incident's history."""

    at: datetime.datetime
    stage: str
    message: str
