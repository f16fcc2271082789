"""Evidence on a real control plane: terminating pods are shown but never judged, a log the kubelet cannot
serve is a gap (never a lost evidence), both logs of a crashed container are read, and a ReplicaSet that a
ResourceQuota stops brings its FailedCreate event and ReplicaFailure condition along."""

from __future__ import annotations

import copy
import datetime

from aegis import config, models, rules
from aegis.kube import client
from aegis.kube import evidence as gathering
from graph.nodes import diagnose
from tests import factories
from tests.unit import real_shapes

NOW = datetime.datetime(2026, 11, 21, 10, 1, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")


def _incident() -> models.Incident:
    return models.Incident(name="deployment-web", namespace="shop", uid="u1", target=TARGET, fingerprint="f" * 16)


async def _gather(cluster: real_shapes.RealShapedCluster) -> models.Evidence:
    gatherer = gathering.EvidenceGatherer(cluster, config.Settings())  # type: ignore[arg-type]
    return await gatherer.gather(_incident(), ["Deployment shop/web has 1 replicas but 0 are available"], NOW)


async def test_terminating_pods_are_listed_last_marked_and_not_judged() -> None:
    _, new_pod, old_pod, objects = real_shapes.rolled_out("shop")
    evidence = await _gather(real_shapes.RealShapedCluster(*objects))
    assert [(p.name, p.terminating) for p in evidence.pods] == [
        (new_pod["metadata"]["name"], False),
        (old_pod["metadata"]["name"], True),
    ]
    assert evidence.logs == {}  # the old revision's crash is not what is judged
    # The rollout healed on its own: nothing is diagnosed from the pod that is going away.
    assert rules.diagnose(evidence).category == "unknown"
    assert diagnose.recovered(evidence)
    assert diagnose.settling(evidence)


async def test_a_failed_log_read_is_a_gap_and_the_rest_of_the_evidence_stays() -> None:
    deploy = real_shapes.revision(factories.deployment("shop", "web", "shop/web:2", replicas=1), 2)
    rs = real_shapes.revision(factories.replicaset(deploy, "6d4cf56db6"), 2)
    crashed = factories.pod(
        rs,
        "abcde",
        state=real_shapes.crash_loop(),
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=3,
        phase="Running",
    )
    waiting = factories.pod(rs, "fghij", state={"waiting": {"reason": "ContainerCreating"}})
    warning = factories.event(
        "shop", "e1", kind="Pod", obj=crashed["metadata"]["name"], reason="BackOff", message="Back-off restarting"
    )
    cluster = real_shapes.RealShapedCluster(deploy, rs, crashed, waiting, warning)
    name = crashed["metadata"]["name"]
    cluster.logs[(name, "web", True)] = client.ClusterError(
        f"log of shop/{name}/web: HTTP 500 Internal Server Error: error trying to reach service", 500
    )
    cluster.logs[(name, "web", False)] = ["starting web 2", "fatal: cannot bind :8080"]
    evidence = await _gather(cluster)
    assert (name, "web", True) in cluster.log_reads and (name, "web", False) in cluster.log_reads
    assert evidence.logs == {f"{name}/web": ["starting web 2", "fatal: cannot bind :8080"]}
    assert any("previous log" in gap and "HTTP 500" in gap for gap in evidence.gaps)
    assert len(evidence.pods) == 2 and [e.reason for e in evidence.events] == ["BackOff"]

    # Every read fails (400 while the container waits, then a timeout): pods and events are all still there.
    cluster.logs[(name, "web", False)] = client.ClusterError(
        f'log of shop/{name}/web: HTTP 400 Bad Request: container "web" in pod "{name}" is waiting to start', 400
    )
    cluster.logs[(name, "web", True)] = TimeoutError("timed out")
    evidence = await _gather(cluster)
    assert evidence.logs == {} and len(evidence.pods) == 2 and len(evidence.events) == 1
    assert len([gap for gap in evidence.gaps if name in gap]) == 2


def quota_blocked() -> list[dict]:
    """A Deployment whose ReplicaSet the namespace quota stops: no pod at all, as the real control plane shows."""
    deploy = real_shapes.revision(factories.deployment("shop", "web", "shop/web:2", replicas=1), 1)
    deploy["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"memory": "512Mi"}}
    failure = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": real_shapes.QUOTA_MESSAGE,
    }
    deploy["status"] = {
        "observedGeneration": 2,
        "unavailableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            copy.deepcopy(failure),
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
        ],
    }
    rs = real_shapes.revision(factories.replicaset(deploy, "7d9c5b8f4"), 1)
    rs["status"] = {"replicas": 0, "observedGeneration": 1, "conditions": [failure]}
    event = factories.event(
        "shop",
        "web-7d9c5b8f4.17b",
        kind="ReplicaSet",
        obj="web-7d9c5b8f4",
        reason="FailedCreate",
        message=f"Error creating: {real_shapes.QUOTA_MESSAGE}",
        count=12,
    )
    return [deploy, rs, event]


async def test_a_replica_set_stopped_by_a_quota_is_in_the_evidence_and_diagnosed() -> None:
    evidence = await _gather(real_shapes.RealShapedCluster(*quota_blocked()))
    assert evidence.pods == []
    [replica_set] = evidence.target_summary["replicaSets"]
    assert replica_set["conditions"][0]["type"] == "ReplicaFailure"
    assert "exceeded quota: compute" in replica_set["conditions"][0]["message"]
    assert [(e.object, e.reason) for e in evidence.events] == [("ReplicaSet/web-7d9c5b8f4", "FailedCreate")]
    diagnosis = rules.diagnose(evidence)
    assert (diagnosis.category, diagnosis.rule) == ("unschedulable-resources", "resource-quota")
    assert "ResourceQuota 'compute'" in diagnosis.summary and "requests.memory requested 512Mi" in diagnosis.summary
    assert "used 1Gi of 1Gi" in diagnosis.summary
    assert diagnosis.confidence >= 0.9
