"""Every AEGIS knob, read from the environment with the prefix ``AEGIS_``.

Called once at operator start-up (``handlers.lifecycle``), by the CLI, and by
tests that build their own settings. Invalid values fail at start-up with a
message naming the environment variable (``SettingsError``).
"""

from __future__ import annotations

import fnmatch
import json
import pathlib
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings

ENV_PREFIX = "AEGIS_"


class SettingsError(ValueError):
    """Raised when the environment holds an invalid setting; the message names the variable."""


class Settings(pydantic_settings.BaseSettings):
    """Operator settings. Lists are given as JSON (``'["a","b"]'``) or comma-separated text."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
    )

    # --- LLM (Ollama) ---
    ollama_url: pydantic.AnyHttpUrl = pydantic.Field(
        default=pydantic.AnyHttpUrl("http://127.0.0.1:11434"),
        description="Base URL of the Ollama server.",
    )
    ollama_model: str = pydantic.Field(default="llama3.2", min_length=1, description="Ollama model name.")
    llm_timeout_seconds: float = pydantic.Field(default=60.0, gt=0, le=3600, description="Timeout of one LLM call.")
    llm_mode: Literal["off", "fallback", "explain", "only"] = pydantic.Field(
        default="fallback",
        description=(
            "off: rules only; fallback: ask the LLM when no rule is sure; explain: fallback, and the LLM "
            "also explains rules diagnoses in plain language; only: the LLM diagnoses and proposes alone "
            "(to evaluate a model against the scenarios)."
        ),
    )
    llm_min_confidence: float = pydantic.Field(
        default=0.6, ge=0, le=1, description="Rules diagnoses below this confidence are sent to the LLM."
    )
    llm_max_prompt_chars: int = pydantic.Field(
        default=6000, ge=1000, le=200_000, description="Budget of the evidence section of a prompt (characters)."
    )
    llm_concurrency: int = pydantic.Field(
        default=1, ge=1, le=32, description="LLM calls in flight at once (a CPU-hosted Ollama answers one at a time)."
    )
    llm_num_ctx: int = pydantic.Field(default=4096, ge=512, le=131072, description="Ollama context window (tokens).")
    llm_cache_size: int = pydantic.Field(default=256, ge=0, le=100_000, description="Answers kept (0: no cache).")
    llm_cache_ttl_seconds: float = pydantic.Field(default=3600.0, ge=0, description="How long an answer is reused.")
    llm_auto_apply: bool = pydantic.Field(
        default=False, description="In auto mode, may plans written by the LLM be applied without a human?"
    )
    anonymize: bool = pydantic.Field(
        default=False, description="Replace object and namespace names in prompts with placeholders (mapped back)."
    )

    # --- Namespaces ---
    watch_namespaces: Annotated[list[str], pydantic_settings.NoDecode] = pydantic.Field(
        default_factory=list,
        description="Target namespaces to act on (glob patterns). Empty: all namespaces.",
    )
    ignore_namespaces: Annotated[list[str], pydantic_settings.NoDecode] = pydantic.Field(
        default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease", "aegis-shadow-*"],
        description="Target namespaces never acted on (glob patterns); wins over watch_namespaces.",
    )
    own_namespace: str = pydantic.Field(
        default="aegis-system",
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "The namespace AEGIS is installed in (deploy/aegis sets it from the downward API). Never a target, "
            "whatever the lists above say: AEGIS opens no incidents about itself (empty: no such namespace)."
        ),
    )

    # --- Runtime ---
    state_db: pathlib.Path = pydantic.Field(
        default=pathlib.Path("aegis-state.sqlite"),
        description="SQLite file of the LangGraph checkpointer (on a volume in the cluster).",
    )
    max_concurrent_incidents: int = pydantic.Field(default=4, ge=1, le=256)
    kube_workers: int = pydantic.Field(default=8, ge=1, le=128, description="Threads for blocking API calls.")
    kube_timeout_seconds: float = pydantic.Field(default=15.0, gt=0, le=600, description="Timeout of one API call.")
    workflow_timeout_seconds: float = pydantic.Field(
        default=1800.0, gt=0, description="Longest one workflow run may take before it is failed."
    )

    # --- High availability (aegis.kube.leader: one replica, the holder of a Lease, works; the others stand by) ---
    leader_election: bool = pydantic.Field(
        default=False,
        description="Compete for a coordination.k8s.io Lease; only its holder works on incidents (2+ replicas).",
    )
    leader_election_namespace: str = pydantic.Field(
        default="aegis-system",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the Lease (the operator's own: deploy/aegis sets it from the downward API).",
    )
    leader_election_name: str = pydantic.Field(
        default="aegis", pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", description="Name of the Lease."
    )
    pod_name: str = pydantic.Field(
        default="", description="This replica's identity in the Lease (downward API); empty: host name + suffix."
    )
    leader_lease_seconds: int = pydantic.Field(
        default=15, ge=1, le=3600, description="How long a standby waits, after the Lease last changed, to take over."
    )
    leader_renew_deadline_seconds: float = pydantic.Field(
        default=10.0, gt=0, description="A leader that could not renew for this long stops leading (< the lease)."
    )
    leader_retry_seconds: float = pydantic.Field(
        default=2.0, gt=0, description="How often the leader renews and a standby tries (< the renew deadline)."
    )

    # --- Remediation ---
    mode: Literal["observe", "propose", "auto"] = pydantic.Field(
        default="propose", description="Default gate mode: observe (diagnose only), propose (ask), auto."
    )
    namespace_modes: Annotated[dict[str, str], pydantic_settings.NoDecode] = pydantic.Field(
        default_factory=dict, description="Per-namespace modes, e.g. 'shop=auto,lab-*=observe' (globs)."
    )
    settle_seconds: float = pydantic.Field(
        default=10.0, ge=0, le=600, description="Pause before looking again at a workload that is still settling."
    )
    max_candidates: int = pydantic.Field(default=3, ge=1, le=10, description="Plans tried in the shadow per incident.")
    shadow_timeout_seconds: float = pydantic.Field(default=120.0, gt=0, le=3600)
    shadow_stability_seconds: float = pydantic.Field(default=20.0, ge=0, le=3600)
    shadow_ttl_seconds: float = pydantic.Field(default=1800.0, gt=0, description="Expiry of a shadow namespace.")
    shadow_network_isolation: bool = True
    shadow_copy_secrets: bool = pydantic.Field(default=False, description="Copy Secret values into shadows.")
    confirm_timeout_seconds: float = pydantic.Field(
        default=300.0, gt=0, le=3600, description="How long an applied fix has to heal the workload."
    )
    confirm_stability_seconds: float = pydantic.Field(
        default=60.0, ge=0, le=3600, description="How long production must stay healthy (longer than the shadow)."
    )
    cooldown_seconds: float = pydantic.Field(default=600.0, ge=0)
    approval_timeout_seconds: float = pydantic.Field(
        default=3600.0, gt=0, description="How long a verified fix waits for a human before the incident is Expired."
    )

    # --- Notifications ---
    notify_url: pydantic.AnyHttpUrl | None = pydantic.Field(
        default=None, description="Webhook that receives a message when a fix waits for approval and when it ends."
    )
    notify_format: Literal["generic", "slack"] = pydantic.Field(
        default="generic", description="generic: AEGIS's JSON document; slack: Slack incoming-webhook format."
    )
    notify_retries: int = pydantic.Field(default=3, ge=0, le=10, description="Retries of a failed delivery.")
    notify_timeout_seconds: float = pydantic.Field(default=5.0, gt=0, le=120)
    max_applies_per_hour: int = pydantic.Field(default=10, ge=0)

    # --- Admission webhook (who approved, as the API server saw it) ---
    admission_webhook: bool = pydantic.Field(
        default=False,
        description=(
            "Run Kopf's admission webhook server and keep a MutatingWebhookConfiguration up to date: every "
            "approval of an Incident is then stamped with the requesting user from the API server's view. Off: "
            "approvals are recorded as 'unverified' (the emulated cluster runs no webhooks)."
        ),
    )
    admission_addr: str = pydantic.Field(default="0.0.0.0", description="Address the webhook server listens on.")
    admission_port: int = pydantic.Field(default=9443, ge=1, le=65535, description="Port of the webhook server.")
    admission_host: str | None = pydantic.Field(
        default=None,
        description="Host the API server reaches the webhook at (URL mode; also named in a self-signed certificate).",
    )
    admission_service: str = pydantic.Field(
        default="",
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[0-9]{1,5})?$",
        description=(
            "'<namespace>/<name>[:port]' of the Service in front of the operator: the webhook configuration then "
            "points at the Service (port 443 unless given) instead of a URL. Empty: URL mode."
        ),
    )
    admission_cert_file: pathlib.Path | None = pydantic.Field(
        default=None, description="Server certificate (PEM, e.g. a cert-manager Secret). Unset: self-signed."
    )
    admission_key_file: pathlib.Path | None = pydantic.Field(
        default=None, validate_default=True, description="Its private key (PEM)."
    )
    admission_ca_file: pathlib.Path | None = pydantic.Field(
        default=None, description="CA bundle put into the webhook configuration (default: the certificate itself)."
    )
    admission_insecure: bool = pydantic.Field(
        default=False, description="Serve plain HTTP (local testing only: an API server requires HTTPS)."
    )
    admission_configuration: str = pydantic.Field(
        default="aegis.dev",
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Name of the MutatingWebhookConfiguration AEGIS manages (empty: configured by hand).",
    )

    # --- Metrics ---
    metrics_port: int = pydantic.Field(
        default=9090, ge=0, le=65535, description="Port of GET /metrics (Prometheus) and GET /readyz; 0: off."
    )
    metrics_addr: str = pydantic.Field(default="0.0.0.0", description="Address the metrics server listens on.")

    # --- Evidence ---
    evidence_max_events: int = pydantic.Field(default=20, ge=1, le=500)
    evidence_max_pods: int = pydantic.Field(default=10, ge=1, le=200)
    evidence_log_lines: int = pydantic.Field(default=20, ge=0, le=1000)

    @pydantic.field_validator("leader_renew_deadline_seconds")
    @classmethod
    def _deadline_within_lease(cls, value: float, info: pydantic.ValidationInfo) -> float:
        lease = info.data.get("leader_lease_seconds")
        if lease is not None and value >= lease:
            raise ValueError(f"must be shorter than {ENV_PREFIX}LEADER_LEASE_SECONDS ({lease})")
        return value

    @pydantic.field_validator("leader_retry_seconds")
    @classmethod
    def _retry_within_deadline(cls, value: float, info: pydantic.ValidationInfo) -> float:
        deadline = info.data.get("leader_renew_deadline_seconds")
        if deadline is not None and value >= deadline:
            raise ValueError(f"must be shorter than {ENV_PREFIX}LEADER_RENEW_DEADLINE_SECONDS ({deadline})")
        return value

    @pydantic.field_validator("admission_key_file")
    @classmethod
    def _key_with_cert(cls, value: pathlib.Path | None, info: pydantic.ValidationInfo) -> pathlib.Path | None:
        if (value is None) != (info.data.get("admission_cert_file") is None):
            raise ValueError(f"{ENV_PREFIX}ADMISSION_CERT_FILE and {ENV_PREFIX}ADMISSION_KEY_FILE go together")
        return value

    @pydantic.field_validator("admission_insecure")
    @classmethod
    def _insecure_without_cert(cls, value: bool, info: pydantic.ValidationInfo) -> bool:
        if value and info.data.get("admission_cert_file") is not None:
            raise ValueError(f"plain HTTP takes no certificate ({ENV_PREFIX}ADMISSION_CERT_FILE is set)")
        return value

    @pydantic.field_validator("namespace_modes", mode="before")
    @classmethod
    def _modes(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("{"):
                return json.loads(value)
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            return {key.strip(): mode.strip() for key, mode in pairs}
        return value

    @pydantic.field_validator("namespace_modes")
    @classmethod
    def _known_modes(cls, value: dict[str, str]) -> dict[str, str]:
        wrong = {k: v for k, v in value.items() if v not in ("observe", "propose", "auto")}
        if wrong:
            raise ValueError(f"modes must be observe, propose or auto: {wrong}")
        return value

    @pydantic.field_validator("watch_namespaces", "ignore_namespaces", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def namespace_allowed(self, namespace: str) -> bool:
        """Whether AEGIS may act on a target in ``namespace``."""
        if self.own_namespace and namespace == self.own_namespace:
            return False
        if any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.ignore_namespaces):
            return False
        if not self.watch_namespaces:
            return True
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.watch_namespaces)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus explicit overrides).

    Raises ``SettingsError`` whose message names each offending ``AEGIS_*`` variable.
    """
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid AEGIS settings:\n  " + "\n  ".join(problems)) from None
