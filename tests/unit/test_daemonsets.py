"""DaemonSet targets: diagnosed, never changed, escalated with what a human should do — and the emulator's
DaemonSet controller's node rules.

A pod owned by a DaemonSet resolves to it (one GET of the DaemonSet: what RBAC grants); its evidence is the
DaemonSet's pods; no fix is proposed (not by the rules, not by the model), the shadow never rehearses one, the
gate refuses any action on it, and the escalation is counted as ``unsupported-target``. Shapes as kube-apiserver
and kube-controller-manager v1.28.4 write them (labels, ownerReferences, the node affinity and tolerations the
DaemonSet controller gives every daemon pod).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import types
from typing import Any

import pytest

from aegis import actions, config, k8sgpt, models, policy, rules, shadow
from aegis.kube import evidence as ev
from aegis.rules import remedies
from aegis.sim import analyzer, daemonsets
from graph import intake, metering
from graph.nodes import propose
from tests import factories
from tests.unit import real_shapes

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
NS = "node-agents"
GOOD, BAD = "fluent/fluent-bit:3.1.9", "fluent/fluent-bit:3.19"
PULL_MESSAGE = f'Back-off pulling image "{BAD}"'


def log_agent(image: str = BAD, *, desired: int = 3, ready: int = 2) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "log-agent"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "log-agent",
            "namespace": NS,
            "uid": "uid-ds",
            "generation": 2,
            "annotations": {"deprecated.daemonset.template.generation": "2"},
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "fluent-bit", "image": image, "resources": {"limits": {"memory": "64Mi"}}}]
                },
            },
        },
        "status": {
            "observedGeneration": 2,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "updatedNumberScheduled": 1,
            "numberAvailable": ready,
            "numberUnavailable": desired - ready,
        },
    }


def daemon_pod(suffix: str, node: str, image: str, state: dict[str, Any], *, ready: bool) -> dict[str, Any]:
    """A daemon pod as the real controller creates it and a kubelet reports it (status image: the resolved one)."""
    revision = "d75886987" if image == GOOD else "6999767b88"
    container = {"name": "fluent-bit", "image": image, "resources": {"limits": {"memory": "64Mi"}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"log-agent-{suffix}",
            "namespace": NS,
            "uid": f"uid-{suffix}",
            "labels": {
                "app.kubernetes.io/name": "log-agent",
                "controller-revision-hash": revision,
                "pod-template-generation": "1" if image == GOOD else "2",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "log-agent",
                    "uid": "uid-ds",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                        ]
                    }
                }
            },
            "containers": [container],
            "nodeName": node,
            "tolerations": [dict(t) for t in daemonsets.AUTO_TOLERATIONS],
        },
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": str(ready)}],
            "containerStatuses": [
                {
                    "name": "fluent-bit",
                    "image": f"docker.io/{image}" if ready else image,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": ready,
                    "state": state,
                    "lastState": {},
                }
            ],
        },
    }


def stalled_rollout() -> list[dict[str, Any]]:
    """The rolling update after the bad tag: two nodes keep the old pod, the third's new pod cannot pull."""
    return [
        log_agent(),
        daemon_pod("7fmzm", "sim-worker-1", GOOD, real_shapes.running(), ready=True),
        daemon_pod("wxvb6", "sim-worker-3", GOOD, real_shapes.running(), ready=True),
        daemon_pod(
            "f8tm7",
            "sim-worker-2",
            BAD,
            {"waiting": {"reason": "ImagePullBackOff", "message": PULL_MESSAGE}},
            ready=False,
        ),
    ]


class ReadCluster(real_shapes.RealShapedCluster):
    """Also records every read as (verb, kind): what the operator's ServiceAccount must be allowed."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        super().__init__(*objects)
        self.reads: list[tuple[str, str]] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", kind))
        return await super().get(kind, namespace, name)

    async def list(self, kind: str, namespace: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.reads.append(("list", kind))
        return await super().list(kind, namespace, **kwargs)


TARGET = models.ObjectRef(kind="DaemonSet", namespace=NS, name="log-agent")
INCIDENT = models.Incident(name="daemonset-log-agent", namespace=NS, target=TARGET, fingerprint="f" * 16)


async def gathered(*objects: dict[str, Any]) -> tuple[models.Evidence, ReadCluster]:
    cluster = ReadCluster(*objects)
    gatherer = ev.EvidenceGatherer(cluster, config.Settings())  # type: ignore[arg-type]
    return await gatherer.gather(INCIDENT, [PULL_MESSAGE], NOW), cluster


# --- the operator ----------------------------------------------------------------------------------------


async def test_a_daemon_pod_resolves_to_its_daemonset_read_by_name() -> None:
    cluster = ReadCluster(*stalled_rollout())
    finding = k8sgpt.parse_result(factories.result(NS, "log-agent-f8tm7", [PULL_MESSAGE]))
    target, chain, how = await k8sgpt.resolve_target(finding, cluster)
    assert (target.kind, target.name, target.uid) == ("DaemonSet", "log-agent", "uid-ds")
    assert [(r.kind, r.name) for r in chain] == [("Pod", "log-agent-f8tm7")] and how == "live object"
    assert cluster.reads == [("get", "Pod"), ("get", "DaemonSet")]  # daemonsets: get, nothing else
    text = "DaemonSet node-agents/log-agent has 2 ready replicas out of 3 scheduled"
    reported = k8sgpt.parse_result(factories.result(NS, "log-agent", [text], kind="DaemonSet"))
    target, chain, _ = await k8sgpt.resolve_target(reported, cluster)
    assert (target.kind, target.name, chain) == ("DaemonSet", "log-agent", [])


async def test_its_evidence_is_its_pods_and_the_image_pull_is_diagnosed() -> None:
    evidence, cluster = await gathered(*stalled_rollout())
    assert sorted(p.name for p in evidence.pods) == ["log-agent-7fmzm", "log-agent-f8tm7", "log-agent-wxvb6"]
    assert ("get", "DaemonSet") in cluster.reads
    assert ("list", "DaemonSet") not in cluster.reads
    summary = evidence.target_summary
    assert (summary["status.numberReady"], summary["status.desiredNumberScheduled"]) == (2, 3)
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.category == "image-pull" and diagnosis.confidence >= 0.9
    assert "DaemonSet node-agents/log-agent" in diagnosis.summary and BAD in diagnosis.summary


async def test_no_fix_is_proposed_and_the_human_is_told_the_image_the_other_nodes_run() -> None:
    objects = stalled_rollout()
    evidence, _ = await gathered(*objects)
    diagnosis = rules.diagnose(evidence)
    plans, dropped = remedies.propose(diagnosis, evidence, {"DaemonSet/log-agent": objects[0]}, actions.Context())
    assert plans == []
    assert len(dropped) == 1 and dropped[0].startswith("AEGIS does not change DaemonSets")
    assert "kubectl set image daemonset/log-agent fluent-bit=fluent/fluent-bit:3.1.9 -n node-agents" in dropped[0]
    assert "2 pods still run fluent/fluent-bit:3.1.9" in dropped[0]
    assert "kubectl rollout undo daemonset/log-agent -n node-agents" in dropped[0]
    assert "kubectl rollout status daemonset/log-agent -n node-agents" in dropped[0]


async def test_on_one_node_there_is_no_old_pod_to_copy_the_image_from() -> None:
    objects = stalled_rollout()[:1] + stalled_rollout()[3:]
    evidence, _ = await gathered(*objects)
    reason = remedies.unsupported_reason(TARGET, rules.diagnose(evidence), evidence)
    assert reason is not None and "set the image back" not in reason
    assert f"container fluent-bit ({BAD!r} cannot be pulled)" in reason
    assert "kubectl set image daemonset/log-agent fluent-bit=<an image that exists> -n node-agents" in reason
    assert "kubectl rollout undo daemonset/log-agent -n node-agents" in reason


def test_other_causes_get_the_matching_human_action() -> None:
    oom = models.Evidence(
        target=TARGET,
        collectedAt=NOW,
        pods=[
            models.PodSummary(
                name="log-agent-7fmzm",
                containers=[
                    models.ContainerState(
                        name="fluent-bit",
                        state="waiting",
                        reason="CrashLoopBackOff",
                        lastReason="OOMKilled",
                        memoryLimit="64Mi",
                    )
                ],
            )
        ],
    )
    diagnosis = models.Diagnosis(category="oom-killed", summary="s", confidence=0.9, source="rules")
    reason = remedies.daemonset_reason(TARGET, diagnosis, oom)
    assert "kubectl set resources daemonset/log-agent -c fluent-bit --limits=memory=128Mi -n node-agents" in reason
    crash = models.Diagnosis(category="app-crash", summary="s", confidence=0.9, source="rules")
    reason = remedies.daemonset_reason(TARGET, crash, oom)
    assert "kubectl edit daemonset/log-agent -n node-agents" in reason and "rollout undo" in reason
    # Jobs and CronJobs keep their own reasons.
    cron = models.ObjectRef(kind="CronJob", namespace="ops", name="db-backup")
    assert remedies.unsupported_reason(cron) == remedies.batch_reason(cron)
    assert remedies.unsupported_reason(models.ObjectRef(kind="Deployment", namespace="ops", name="web")) is None


class _NoAdvisor:
    """An LLM advisor that must not be asked: no typed fix applies to a DaemonSet, the model's neither."""

    async def propose(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was asked for a DaemonSet fix")


class _Store:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def set_status(self, namespace: str, name: str, status: dict, timeline: list | None = None) -> None:
        self.status.update(status)


@pytest.mark.parametrize("llm_mode", ["fallback", "only"])
async def test_the_propose_node_escalates_without_asking_the_model(llm_mode: str) -> None:
    objects = stalled_rollout()
    evidence, _ = await gathered(*objects)
    diagnosis = rules.diagnose(evidence).model_copy(update={"source": "llm"})  # as if the model had diagnosed it
    store = _Store()
    deps = types.SimpleNamespace(
        settings=config.Settings(llm_mode=llm_mode),
        incidents=store,
        cluster=ReadCluster(*objects),
        advisor=_NoAdvisor(),
        clock=lambda: NOW,
    )
    current = {"incident": INCIDENT.dump(), "evidence": evidence.dump(), "diagnosis": diagnosis.dump()}
    update = await propose.run(current, types.SimpleNamespace(context=deps))  # type: ignore[arg-type]
    assert update["phase"] == "Escalated" and update["plans"] == []
    assert "kubectl set image daemonset/log-agent fluent-bit=fluent/fluent-bit:3.1.9" in update["reason"]
    assert store.status["plan"] == {"candidates": [], "dropped": update["dropped"]}
    assert deps.cluster.reads == [("get", "DaemonSet")]
    escalated = {**current, "timeline": [{"stage": "propose"}], "phase": "Escalated"}
    assert metering.escalation_class(escalated) == "unsupported-target"  # type: ignore[arg-type]


async def test_the_shadow_never_rehearses_a_daemonset() -> None:
    ds = log_agent()
    cluster = ReadCluster(ds)
    plan = models.Plan(actions=[models.Action(kind="set-image", target=TARGET, params={"image": GOOD})])
    verifier = shadow.ShadowVerifier(cluster, config.Settings())  # type: ignore[arg-type]
    verification = await verifier.verify(INCIDENT, plan, [], {"DaemonSet/log-agent": ds}, 1, NOW)
    assert not verification.passed
    assert (
        "DaemonSet cannot be rehearsed in a shadow namespace (a copy would run a pod on every node"
        in (verification.details[0])
    )
    assert cluster.namespaces == [] and cluster.created == []
    assert set(shadow._NOT_REHEARSED) == models.UNCHANGED_KINDS


@pytest.mark.parametrize("kind", sorted(models.UNCHANGED_KINDS))
def test_the_gate_refuses_any_action_on_a_kind_aegis_never_changes(kind: str) -> None:
    target = models.ObjectRef(kind=kind, namespace=NS, name="log-agent")
    facts = policy.Facts(
        namespace=NS,
        actions=(models.Action(kind="set-image", target=target, risk="low", params={"image": GOOD}),),
        confidence=0.95,
        baseline_reproduced=True,
        candidate_passed=True,
        target_unchanged=True,
        now=NOW,
    )
    judgement = policy.judge(policy.Policy(default_mode="auto"), facts)
    assert judgement.verdict == "refuse" and f"AEGIS never changes a {kind}" in judgement.reason
    deployment = dataclasses.replace(
        facts,
        actions=(facts.actions[0].model_copy(update={"target": TARGET.model_copy(update={"kind": "Deployment"})}),),
    )
    assert policy.judge(policy.Policy(default_mode="auto"), deployment).verdict == "auto"


def test_intake_knows_when_a_reported_daemonset_has_rolled_out() -> None:
    ds = log_agent(GOOD, desired=3, ready=3)
    ds["status"].update(updatedNumberScheduled=3, numberUnavailable=None)
    assert intake.workload_ready(ds)
    assert not intake.workload_ready(log_agent())  # 2/3 ready, 1 updated
    behind = copy.deepcopy(ds)
    behind["metadata"]["generation"] = 3  # a template change the controller has not seen yet
    assert not intake.workload_ready(behind)
    assert "DaemonSet" in intake.READY_KINDS


# --- the emulator ----------------------------------------------------------------------------------------


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[dict] | None = None, **spec: Any) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], **spec},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_which_nodes_run_a_daemon_pod() -> None:
    ds = log_agent(GOOD)
    assert daemonsets.should_run(ds, node("plain")) == (True, True)
    assert daemonsets.should_run(ds, node("cordoned", unschedulable=True)) == (True, True)  # tolerated
    dedicated = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert daemonsets.should_run(ds, node("gpu", taints=dedicated)) == (False, True)  # no new pod; one may stay
    evicting = [{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]
    assert daemonsets.should_run(ds, node("gpu", taints=evicting)) == (False, False)
    not_ready = node("down")
    not_ready["status"]["conditions"][0]["status"] = "False"
    assert daemonsets.should_run(ds, not_ready) == (False, True)  # the lifecycle controller's not-ready taint
    tolerant = copy.deepcopy(ds)
    tolerant["spec"]["template"]["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    assert daemonsets.should_run(tolerant, node("gpu", taints=dedicated)) == (True, True)
    picky = copy.deepcopy(ds)
    picky["spec"]["template"]["spec"]["nodeSelector"] = {"role": "edge"}
    assert daemonsets.should_run(picky, node("plain")) == (False, False)
    assert daemonsets.should_run(picky, node("edge-1", labels={"role": "edge"})) == (True, True)


def test_a_daemon_pod_is_pinned_to_its_node_and_tolerates_node_problems() -> None:
    ds = log_agent(GOOD)
    ds["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    ]
    pod = daemonsets.DaemonSetController._pod(ds, "sim-worker-2", "fcqrm7pxj9", "2")
    assert pod["metadata"]["generateName"] == "log-agent-"
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "log-agent",
        "controller-revision-hash": "fcqrm7pxj9",
        "pod-template-generation": "2",
    }
    assert pod["metadata"]["ownerReferences"][0] | {"uid": ""} == {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": "log-agent",
        "uid": "",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert daemonsets.target_node(pod) == "sim-worker-2" and "nodeName" not in pod["spec"]
    keys = [t["key"] for t in pod["spec"]["tolerations"]]
    assert keys[0] == "node-role.kubernetes.io/control-plane" and keys[1:] == [
        t["key"] for t in daemonsets.AUTO_TOLERATIONS
    ]
    assert "tolerations" not in ds["spec"]["template"]["spec"]["containers"][0]  # the template is left alone


def test_the_analyzer_reports_a_daemonset_as_k8sgpt_does() -> None:
    fake = types.SimpleNamespace(inf={"Secret": types.SimpleNamespace(get=lambda ns, name: None)})
    ds = log_agent()
    ds["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "registry"}]
    errors = analyzer.Analyzer.daemonset(fake, ds)  # type: ignore[arg-type]
    assert [e["text"] for e in errors] == [
        "DaemonSet node-agents/log-agent has 2 ready replicas out of 3 scheduled",
        "DaemonSet node-agents/log-agent references non-existent ImagePullSecret registry",
    ]
    assert [s["unmasked"] for s in errors[1]["sensitive"]] == [NS, "log-agent", "registry"]
    healthy = log_agent(GOOD, ready=3)
    assert analyzer.Analyzer.daemonset(fake, healthy) == []  # type: ignore[arg-type]
