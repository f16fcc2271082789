"""Failure shapes the emulator never produced and the real control plane does: a rollout that adds a failing
init container (``Init:CrashLoopBackOff`` / ``Init:Error``), a ResourceQuota that stops a ReplicaSet from
creating pods, and pods owned by a Job owned by a CronJob — diagnosed, fixed by a rollback where a bad rollout
caused it, and escalated with what a human should do where no typed fix applies."""

from __future__ import annotations

import copy
import datetime
import types
from typing import Any

from aegis import actions, config, health, k8sgpt, models, rules, shadow
from aegis.kube import evidence as ev
from aegis.rules import remedies
from graph.nodes import propose
from tests import factories
from tests.unit import real_shapes
from tests.unit.test_real_server_evidence import quota_blocked

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="billing", name="invoicer")
MIGRATE = {"name": "migrate", "image": "busybox:1.36", "command": ["sh", "-c", "./migrate"]}


def _history() -> tuple[dict[str, Any], dict[str, Any], actions.Context]:
    """Revision 2 added the ``migrate`` init container; revision 1 ran without it."""
    deploy = real_shapes.revision(factories.deployment("billing", "invoicer", "busybox:1.36", replicas=2), 2)
    good = copy.deepcopy(deploy)
    deploy["spec"]["template"]["spec"]["initContainers"] = [dict(MIGRATE)]
    old = real_shapes.revision(factories.replicaset(good, "6d4cf56db6"), 1)
    new = real_shapes.revision(factories.replicaset(deploy, "7b9c6d5f4f"), 2)
    return deploy, new, actions.Context(replica_sets=(new, old), now=NOW)


def _init_pod(rs: dict[str, Any], state: dict[str, Any], *, restarts: int, last: dict | None = None) -> dict:
    """A pod as the kubelet reports it while its init container fails: the app container waits."""
    pod = factories.pod(rs, "x8k2p", state={"waiting": {"reason": "PodInitializing"}})
    pod["status"]["initContainerStatuses"] = [
        {
            "name": "migrate",
            "image": "docker.io/library/busybox:1.36",
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": restarts,
            "state": state,
            "lastState": last or {},
        }
    ]
    pod["status"]["conditions"].append(
        {
            "type": "Initialized",
            "status": "False",
            "reason": "ContainersNotInitialized",
            "message": "containers with incomplete status: [migrate]",
        }
    )
    return pod


def _evidence(pod: dict[str, Any], logs: list[str]) -> models.Evidence:
    summary = ev.summarize_pod(pod)
    return models.Evidence(
        target=TARGET, pods=[summary], logs={f"{summary.name}/migrate": logs} if logs else {}, collectedAt=NOW
    )


def _looping(rs: dict[str, Any]) -> dict[str, Any]:
    return _init_pod(
        rs,
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=migrate"}},
        restarts=3,
        last={"terminated": {"reason": "Error", "exitCode": 1}},
    )


def test_init_crash_loop_is_an_app_crash_of_the_init_container_fixed_by_a_rollback() -> None:
    deploy, new, ctx = _history()
    logs = [
        "applying migration 0042_add_tax_region",
        'ERROR: column "tax_region" of relation "invoices" already exists',
    ]
    evidence = _evidence(_looping(new), logs)
    diagnosis = rules.diagnose(evidence)
    assert (diagnosis.category, diagnosis.rule) == ("app-crash", "init-container")
    assert diagnosis.summary.startswith("Init container migrate of Deployment billing/invoicer fails (exit code 1")
    assert "PodInitializing" in diagnosis.evidence[0] and "already exists" in " ".join(diagnosis.evidence)
    plans, _ = remedies.propose(diagnosis, evidence, {"Deployment/invoicer": deploy}, ctx)
    assert [p.actions[0].kind for p in plans] == ["rollback"]


def test_init_error_before_any_restart_is_diagnosed_too() -> None:
    _, new, _ = _history()
    pod = _init_pod(new, {"terminated": {"reason": "Error", "exitCode": 2}}, restarts=0)
    diagnosis = rules.diagnose(_evidence(pod, []))
    assert (diagnosis.category, diagnosis.rule) == ("app-crash", "init-container")
    assert "exit code 2" in diagnosis.summary and "logged nothing" in diagnosis.summary


def test_an_init_container_that_needs_a_variable_is_missing_env_and_rolled_back_when_a_rollout_added_it() -> None:
    deploy, new, ctx = _history()
    evidence = _evidence(_looping(new), ["migrate: error: DATABASE_URL must be set"])
    diagnosis = rules.diagnose(evidence)
    assert (diagnosis.category, diagnosis.rule) == ("missing-env", "init-container")
    assert "DATABASE_URL" in diagnosis.summary
    plans, _ = remedies.propose(diagnosis, evidence, {"Deployment/invoicer": deploy}, ctx)
    assert [p.actions[0].kind for p in plans] == ["rollback"]
    # The same init container in every revision: the value is a human's to give.
    same = actions.Context(replica_sets=(new,), now=NOW)
    plans, dropped = remedies.propose(diagnosis, evidence, {"Deployment/invoicer": deploy}, same)
    assert plans == [] and "a human must decide" in dropped[0]


def test_an_init_container_that_cannot_find_its_config_is_missing_config() -> None:
    _, new, _ = _history()
    evidence = _evidence(_looping(new), ['error: configmap "invoicer-migrations" not found'])
    diagnosis = rules.diagnose(evidence)
    assert (diagnosis.category, diagnosis.rule) == ("missing-config", "init-container")
    assert 'configmap "invoicer-migrations"' in diagnosis.summary


def test_a_terminating_pod_with_a_failing_init_container_is_not_judged() -> None:
    _, new, _ = _history()
    evidence = _evidence(real_shapes.terminating(_looping(new)), ["boom"])
    assert rules.diagnose(evidence).category == "unknown"


def test_the_shadow_sees_a_failing_init_container() -> None:
    _, new, _ = _history()
    reasons = health._pod_reasons(_looping(new), {})
    assert "pod invoicer-7b9c6d5f4f-x8k2p init container migrate failed (CrashLoopBackOff)" in reasons


# --- a ResourceQuota stops the ReplicaSet --------------------------------------------------------


def _quota_evidence(objects: list[dict[str, Any]]) -> models.Evidence:
    deploy, rs, event = objects
    summary = ev.summarize_target(deploy)
    summary["replicaSets"] = [ev._replica_set_summary(rs)]
    return models.Evidence(
        target=models.ObjectRef(kind="Deployment", namespace="shop", name="web"),
        targetSummary=summary,
        events=[ev.summarize_event(event)],
        collectedAt=NOW,
    )


def test_a_quota_refusal_without_history_is_escalated_with_what_a_human_decides() -> None:
    objects = quota_blocked()
    evidence = _quota_evidence(objects)
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.category == "unschedulable-resources"
    plans, dropped = remedies.propose(diagnosis, evidence, {"Deployment/web": objects[0]}, actions.Context(now=NOW))
    assert plans == []
    assert "ResourceQuota 'compute'" in dropped[0] and "only a human can raise the quota" in dropped[0]
    assert "kubectl edit resourcequota compute -n shop" in dropped[0]


def _raised_requests(old_memory: str, old_pods: int, used: str, limited: str) -> tuple[dict, models.Evidence, Any]:
    """Revision 2 raised the request to 768Mi; revision 1's pods (``old_memory`` each) still run."""
    deploy = real_shapes.revision(factories.deployment("shop", "web", "shop/web:2", replicas=2), 2)
    old_template = copy.deepcopy(deploy)
    old_template["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"memory": old_memory}}
    deploy["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"memory": "768Mi"}}
    old = real_shapes.revision(factories.replicaset(old_template, "6d4cf56db6"), 1)
    old["status"] = {"replicas": old_pods, "readyReplicas": old_pods}
    new = real_shapes.revision(factories.replicaset(deploy, "7d9c5b8f4"), 2)
    new["status"] = {"replicas": 0}
    message = (
        'pods "web-7d9c5b8f4-xyz12" is forbidden: exceeded quota: compute, requested: requests.memory=768Mi, '
        f"used: requests.memory={used}, limited: requests.memory={limited}"
    )
    event = factories.event(
        "shop", "e", kind="ReplicaSet", obj="web-7d9c5b8f4", reason="FailedCreate", message=f"Error creating: {message}"
    )
    evidence = models.Evidence(
        target=models.ObjectRef(kind="Deployment", namespace="shop", name="web"),
        events=[ev.summarize_event(event)],
        collectedAt=NOW,
    )
    return deploy, evidence, actions.Context(replica_sets=(new, old), now=NOW)


def test_a_rollout_that_raised_requests_past_the_quota_is_rolled_back_when_the_old_revision_fits() -> None:
    deploy, evidence, ctx = _raised_requests("256Mi", 2, used="512Mi", limited="1Gi")
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.rule == "resource-quota"
    plans, _ = remedies.propose(diagnosis, evidence, {"Deployment/web": deploy}, ctx)
    assert [p.actions[0].kind for p in plans] == ["rollback"]
    assert "fit ResourceQuota 'compute'" in plans[0].rationale


def test_no_rollback_when_the_old_revision_would_not_fit_the_quota_either() -> None:
    # Others use 768Mi of the 1Gi: two pods of 256Mi would not fit.
    deploy, evidence, ctx = _raised_requests("256Mi", 1, used="1Gi", limited="1Gi")
    diagnosis = rules.diagnose(evidence)
    plans, dropped = remedies.propose(diagnosis, evidence, {"Deployment/web": deploy}, ctx)
    assert plans == [] and "would not fit either" in dropped[0]


def test_the_shadow_leaves_the_room_production_quota_leaves() -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "shop", "uid": "q"},
        "spec": {"hard": {"requests.memory": "1Gi", "limits.memory": "2Gi", "pods": "10"}},
        "status": {
            "hard": {"requests.memory": "1Gi", "limits.memory": "2Gi", "pods": "10"},
            "used": {"requests.memory": "512Mi", "limits.memory": "1Gi", "pods": "2"},
        },
    }
    room = shadow.quota_room(quota, "aegis-shadow-x-1-ab12-b")
    assert room["metadata"] == {"name": "aegis-room-compute", "namespace": "aegis-shadow-x-1-ab12-b"}
    assert room["spec"]["hard"] == {"requests.memory": str(512 * 2**20), "limits.memory": str(2**30)}


# --- Jobs and CronJobs ---------------------------------------------------------------------------


def _cron_chain() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop", "uid": "uid-cron"},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "report", "image": "r:1"}]}}}},
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "report-29123455",
            "namespace": "shop",
            "uid": "uid-job",
            "labels": {"batch.kubernetes.io/job-name": "report-29123455", "job-name": "report-29123455"},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": "uid-cron", "controller": True}
            ],
        },
        "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "uid-job"}}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "report-29123455-7xk2p",
            "namespace": "shop",
            "uid": "uid-pod",
            "labels": {"batch.kubernetes.io/controller-uid": "uid-job", "job-name": "report-29123455"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "report-29123455",
                    "uid": "uid-job",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "report", "image": "r:1"}], "restartPolicy": "Never"},
        "status": {"phase": "Failed"},
    }
    return cron, job, pod


async def test_a_job_pod_resolves_to_its_cron_job_or_to_the_job_alone() -> None:
    cron, job, pod = _cron_chain()
    finding = k8sgpt.parse_result(factories.result("shop", "report-29123455-7xk2p", ["the job failed"]))
    target, chain, _ = await k8sgpt.resolve_target(finding, real_shapes.RealShapedCluster(cron, job, pod))
    assert (target.kind, target.name, target.uid) == ("CronJob", "report", "uid-cron")
    assert [(r.kind, r.name) for r in chain] == [("Pod", "report-29123455-7xk2p"), ("Job", "report-29123455")]
    # A Job nobody schedules (or whose CronJob is gone) is the target itself.
    target, chain, _ = await k8sgpt.resolve_target(finding, real_shapes.RealShapedCluster(job, pod))
    assert (target.kind, target.name) == ("Job", "report-29123455")
    bare = copy.deepcopy(job)
    bare["metadata"].pop("ownerReferences")
    target, _, _ = await k8sgpt.resolve_target(finding, real_shapes.RealShapedCluster(bare, pod))
    assert (target.kind, target.name) == ("Job", "report-29123455")


async def test_a_cron_job_target_gathers_evidence_and_is_escalated_with_what_to_do() -> None:
    cron, job, pod = _cron_chain()
    target = models.ObjectRef(kind="CronJob", namespace="shop", name="report")
    incident = models.Incident(name="cronjob-report", namespace="shop", target=target, fingerprint="f" * 16)
    gatherer = ev.EvidenceGatherer(real_shapes.RealShapedCluster(cron, job, pod), config.Settings())  # type: ignore[arg-type]
    evidence = await gatherer.gather(incident, [], NOW)
    assert [p.name for p in evidence.pods] == ["report-29123455-7xk2p"]
    diagnosis = models.Diagnosis(category="app-crash", summary="s", confidence=0.8, source="rules")
    plans, dropped = remedies.propose(diagnosis, evidence, {"CronJob/report": cron}, actions.Context(now=NOW))
    assert plans == [] and "kubectl edit cronjob report -n shop" in dropped[0]
    job_target = models.ObjectRef(kind="Job", namespace="shop", name="report-29123455")
    assert "kubectl delete job report-29123455 -n shop" in str(remedies.batch_reason(job_target))


async def test_a_cron_job_is_never_rehearsed_in_a_shadow_namespace() -> None:
    cron, _, _ = _cron_chain()
    cluster = real_shapes.RealShapedCluster(cron)
    target = models.ObjectRef(kind="CronJob", namespace="shop", name="report")
    incident = models.Incident(name="cronjob-report", namespace="shop", target=target, fingerprint="f" * 16)
    plan = models.Plan(actions=[models.Action(kind="set-image", target=target, params={"image": "r:2"})])
    verifier = shadow.ShadowVerifier(cluster, config.Settings())  # type: ignore[arg-type]
    verification = await verifier.verify(incident, plan, [], {"CronJob/report": cron}, 1, NOW)
    assert not verification.passed and "CronJob cannot be rehearsed" in verification.details[0]
    assert cluster.namespaces == [] and cluster.created == []


class _NoAdvisor:
    """An LLM advisor that must not be asked: no typed fix applies to a CronJob, the model's neither."""

    async def propose(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was asked for a CronJob fix")


class _Store:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def set_status(self, namespace: str, name: str, status: dict, timeline: list | None = None) -> None:
        self.status.update(status)


async def test_the_propose_node_escalates_a_cron_job_naming_what_a_human_should_do() -> None:
    cron, job, pod = _cron_chain()
    cluster = real_shapes.RealShapedCluster(cron, job, pod)
    target = models.ObjectRef(kind="CronJob", namespace="shop", name="report")
    incident = models.Incident(name="cronjob-report", namespace="shop", target=target, fingerprint="f" * 16)
    evidence = models.Evidence(target=target, collectedAt=NOW)
    diagnosis = models.Diagnosis(category="app-crash", summary="s", confidence=0.9, source="llm")
    store = _Store()
    deps = types.SimpleNamespace(
        settings=config.Settings(llm_mode="fallback"),
        incidents=store,
        cluster=cluster,
        advisor=_NoAdvisor(),
        clock=lambda: NOW,
    )
    current = {"incident": incident.dump(), "evidence": evidence.dump(), "diagnosis": diagnosis.dump()}
    update = await propose.run(current, types.SimpleNamespace(context=deps))  # type: ignore[arg-type]
    assert update["phase"] == "Escalated"
    assert "kubectl edit cronjob report -n shop" in update["reason"]
    assert "kubectl edit cronjob report -n shop" in store.status["plan"]["dropped"][0]


async def test_a_service_whose_only_unready_backend_is_terminating_stays_its_own_target() -> None:
    deploy, new_pod, old_pod, objects = real_shapes.rolled_out("shop")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    finding = k8sgpt.parse_result(factories.result("shop", "web", ["Service has not ready endpoints"], kind="Service"))
    target, _, _ = await k8sgpt.resolve_target(finding, real_shapes.RealShapedCluster(service, *objects))
    assert (target.kind, target.name) == ("Service", "web")  # the old pod is going away: no workload symptom
    broken = copy.deepcopy(new_pod)
    broken["status"]["conditions"][-1]["status"] = "False"
    target, _, _ = await k8sgpt.resolve_target(finding, real_shapes.RealShapedCluster(service, *objects, broken))
    assert (target.kind, target.name) == ("Deployment", deploy["metadata"]["name"])
    assert old_pod["metadata"]["deletionTimestamp"]
