"""Known Secret values are masked in the evidence's free text only (plain data, no cluster)."""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

from aegis import config, models
from aegis.kube import evidence as gathering

NOW = datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC)


def evidence(ns: str = "shop", app: str = "web") -> models.Evidence:
    pod = f"{app}-6f7d9c5b8-x8k2p"
    return models.Evidence(
        target=models.ObjectRef(kind="Deployment", namespace=ns, name=app, uid="u1"),
        targetSummary={
            "kind": "Deployment",
            "name": app,
            "conditions": [{"type": "Available", "status": "False", "message": f"{app} has no ready replica"}],
        },
        ownerChain=[models.ObjectRef(kind="ReplicaSet", namespace=ns, name=f"{app}-6f7d9c5b8")],
        pods=[
            models.PodSummary(
                name=pod,
                phase="Pending",
                labels={"app": app},
                scheduledMessage=f"0/1 nodes are available for {app}",
                containers=[
                    models.ContainerState(
                        name=app,
                        image=f"registry.example/{app}:1.0",
                        state="waiting",
                        reason="CrashLoopBackOff",
                        message=f"back-off restarting {app}",
                        envFrom=[f"secret {app}-db"],
                    )
                ],
            )
        ],
        events=[models.EventSummary(type="Warning", reason="BackOff", object=f"Pod/{pod}", message=f"restart {app}")],
        logs={f"{pod}/{app}": [f"starting {app}", "login failed for target"]},
        hints=[f"the {app} container keeps crashing"],
        gaps=[f"read Secret {ns}/{app}-db: forbidden"],
        collectedAt=NOW,
    )


def test_a_unicode_secret_is_masked_in_every_free_text_field() -> None:
    secret = "pässwörd-canary"
    ev = evidence()
    ev.logs["web-6f7d9c5b8-x8k2p/web"].append(f"db login with {secret} refused")
    ev.pods[0].containers[0].message = f"exit: {secret}"
    ev.pods[0].scheduled_message = f"{secret} node"
    ev.events[0].message = f"probe said {secret}"
    ev.hints.append(f"log: {secret}")
    ev.gaps.append(f"error {secret}")
    ev.target_summary["conditions"][0]["message"] = f"because {secret}"
    masked = gathering.mask_known(ev, {secret})
    assert secret not in masked.model_dump_json() and secret not in str(masked.model_dump())
    assert masked.logs["web-6f7d9c5b8-x8k2p/web"][-1] == "db login with **** refused"
    assert masked.events[0].message == "probe said ****"
    assert secret in ev.logs["web-6f7d9c5b8-x8k2p/web"][-1]  # the input is left as it was


def test_names_keys_images_and_the_target_are_never_rewritten() -> None:
    ev = evidence(ns="checkout", app="postgres")
    masked = gathering.mask_known(ev, {"checkout", "postgres", "registry.example/postgres:1.0", "postgres-db"})
    assert masked.target == ev.target and masked.owner_chain == ev.owner_chain
    assert [p.name for p in masked.pods] == ["postgres-6f7d9c5b8-x8k2p"]
    assert masked.pods[0].labels == {"app": "postgres"}
    assert masked.pods[0].containers[0].image == "registry.example/postgres:1.0"
    assert masked.pods[0].containers[0].env_from == ["secret postgres-db"]
    assert list(masked.logs) == ["postgres-6f7d9c5b8-x8k2p/postgres"]
    # A value equal to a name the evidence shows anyway is no secret worth garbling the text for.
    assert masked.logs["postgres-6f7d9c5b8-x8k2p/postgres"][0] == "starting postgres"
    assert masked.events[0].message == "restart postgres"
    # A real secret that merely contains a name is still masked in free text.
    assert masked.gaps == ["read Secret checkout/****: forbidden"]


def test_a_secret_equal_to_a_json_key_does_not_break_the_evidence() -> None:
    ev = evidence()
    masked = gathering.mask_known(ev, {"target", "namespace", "message", "collectedAt"})
    assert masked.target == ev.target
    assert masked.logs["web-6f7d9c5b8-x8k2p/web"] == ["starting web", "login failed for ****"]
    assert masked.collected_at == NOW


def test_no_secrets_leave_the_evidence_as_it_is() -> None:
    ev = evidence()
    assert gathering.mask_known(ev, set()) is ev
    assert gathering.mask_known(ev, {"web"}) is ev  # a public name: nothing to mask


def test_secret_names_include_init_containers_and_projected_volumes() -> None:
    pod = {
        "kind": "Pod",
        "spec": {
            "initContainers": [
                {"name": "migrate", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}
            ],
            "containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "api"}}]}],
            "volumes": [
                {
                    "name": "all",
                    "projected": {
                        "sources": [
                            {"secret": {"name": "tls"}},
                            {"configMap": {"name": "cfg"}},
                            {"serviceAccountToken": {}},
                        ]
                    },
                },
                {"name": "key", "secret": {"secretName": "signing"}},
            ],
        },
    }
    assert gathering.secret_names(pod) == {"db", "api", "tls", "signing"}


class _Secrets:
    """A cluster that holds Secrets ``s0``..``sN`` and counts the reads."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.reads = values, 0

    async def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        assert kind == "Secret"
        self.reads += 1
        value = self.values.get(name)
        return None if value is None else {"data": {"v": base64.b64encode(value.encode()).decode()}}


def test_the_gatherer_reads_up_to_max_secrets_and_decodes_utf8() -> None:
    values = {f"s{i:02d}": f"value-{i:02d}-pässwörd" for i in range(30)}
    cluster = _Secrets(values)
    gatherer = gathering.EvidenceGatherer(cluster, config.Settings())  # type: ignore[arg-type]
    pod = {
        "kind": "Pod",
        "spec": {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": n}} for n in values]}]},
    }

    async def attempt(what: str, coro: Any, default: Any) -> Any:
        return await coro

    known = asyncio.run(gatherer._secret_values([pod], "shop", attempt))
    assert cluster.reads == gathering.MAX_SECRETS == 25
    assert "value-00-pässwörd" in known and "value-24-pässwörd" in known and "value-25-pässwörd" not in known
