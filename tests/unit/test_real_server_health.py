"""Health is judged on the current revision only: a pod in its grace period (``deletionTimestamp``) after a
rollout is going away, as a real API server keeps it ``Terminating`` for 30 s — in the shadow and in the
production confirm (where judging it once turned a good rollback into a restored broken image)."""

from __future__ import annotations

import copy
import datetime
import types

from aegis import config, health, models, shadow
from graph.nodes import confirm
from tests import factories
from tests.unit import real_shapes

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def _observer(cluster: real_shapes.RealShapedCluster) -> health.Observer:
    settings = config.Settings(shadow_stability_seconds=1, shadow_timeout_seconds=10)
    return health.Observer(cluster, settings)  # type: ignore[arg-type]


async def test_a_terminating_pod_of_the_old_revision_is_not_judged() -> None:
    ns = "aegis-shadow-a1b2c3d4-1-ab12-c"
    deploy, new_pod, old_pod, objects = real_shapes.rolled_out(ns)
    cluster = real_shapes.RealShapedCluster(*objects)
    verdict, restarts, warnings = await _observer(cluster)._health(ns, {"Deployment/web": deploy})
    assert verdict.healthy, verdict.reasons
    assert old_pod["metadata"]["name"] not in str(verdict.reasons)
    assert f"{new_pod['metadata']['name']}/web" in restarts
    assert not any(old_pod["metadata"]["name"] in key for key in restarts)
    assert warnings == {}  # the BackOff warnings are about the pod that is going away


async def test_the_candidate_passes_while_the_old_pod_terminates() -> None:
    ns = "aegis-shadow-a1b2c3d4-1-ab12-c"
    deploy, _, _, objects = real_shapes.rolled_out(ns)
    cluster = real_shapes.RealShapedCluster(*objects)
    verdict = await _observer(cluster).observe(ns, {"Deployment/web": deploy}, expect_healthy=True, limit=10, window=1)
    assert verdict.healthy, verdict.reasons


async def test_a_broken_pod_of_the_current_revision_still_fails() -> None:
    ns = "shop"
    deploy, new_pod, _, objects = real_shapes.rolled_out(ns)
    cluster = real_shapes.RealShapedCluster(*objects)
    broken = copy.deepcopy(new_pod)
    broken["status"]["containerStatuses"][0].update(ready=False, state=real_shapes.crash_loop(), restartCount=2)
    cluster.put(broken)
    verdict, _, _ = await _observer(cluster)._health(ns, {"Deployment/web": deploy})
    assert not verdict.healthy
    assert any(new_pod["metadata"]["name"] in reason and "CrashLoopBackOff" in reason for reason in verdict.reasons)


def test_counts_that_drop_are_no_news_but_rises_are() -> None:
    before = {"web-a/web": 0, "old-pod/web": 4}
    assert not health.grew({"web-a/web": 0}, before)  # the terminating pod went away
    assert health.grew({"web-a/web": 1}, before)
    assert health.grew({"web-a/web": 0, "web-b/web": 1}, {"web-a/web": 0})


def test_rollout_status_like_kubectl() -> None:
    deploy = factories.deployment("shop", "web", "nginx:1.27", replicas=1, ready=1)
    deploy["status"] = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    assert health.rollout_problems(deploy) == ["Deployment web: 0/1 available"]
    deploy["status"]["availableReplicas"] = 1
    assert health.rollout_problems(deploy) == []
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 3},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 3,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "currentRevision": "db-6b7f9c",
            "updateRevision": "db-58d4c7",
        },
    }
    assert "rolling update to db-58d4c7 not finished" in health.rollout_problems(sts)[0]
    old = {"metadata": {"name": "db-0", "labels": {"controller-revision-hash": "db-6b7f9c"}, "ownerReferences": []}}
    old["metadata"]["ownerReferences"] = [{"uid": "uid-sts"}]
    assert not health.current_pod(sts, old, {"uid-sts"})
    old["metadata"]["labels"]["controller-revision-hash"] = "db-58d4c7"
    assert health.current_pod(sts, old, {"uid-sts"})
    assert not health.current_pod(sts, real_shapes.terminating(old), {"uid-sts"})


def test_the_current_replica_set_is_the_deployments_revision() -> None:
    deploy, _, _, objects = real_shapes.rolled_out("shop")
    replica_sets = [o for o in objects if o["kind"] == "ReplicaSet"]
    assert health.current_replica_set(deploy, replica_sets)["metadata"]["name"] == "web-5d8f7c9b6d"
    del deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert health.current_replica_set(deploy, replica_sets)["metadata"]["name"] == "web-5d8f7c9b6d"  # its template


class _Store:
    def __init__(self) -> None:
        self.status: dict = {}

    async def set_status(self, namespace: str, name: str, status: dict, timeline: list | None = None) -> None:
        self.status.update(status)


async def test_confirm_after_a_rollback_judges_the_new_revision_and_keeps_the_fix() -> None:
    _, _, _, objects = real_shapes.rolled_out("shop")  # rolled back: the bad revision's pod terminates
    cluster = real_shapes.RealShapedCluster(*objects)
    settings = config.Settings(confirm_stability_seconds=1, confirm_timeout_seconds=8)
    deps = types.SimpleNamespace(
        settings=settings,
        incidents=_Store(),
        cluster=cluster,
        verifier=shadow.ShadowVerifier(cluster, settings),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    target = models.ObjectRef(kind="Deployment", namespace="shop", name="web")
    incident = models.Incident(name="deployment-web", namespace="shop", uid="u1", target=target, fingerprint="f" * 16)
    action = models.Action(kind="rollback", target=target, risk="low")
    applied = models.ActionResult(
        action=action, patch=[], patchType="json", preImage={"undo": [{"op": "replace"}]}, applied=True, at=NOW
    )
    current = {"incident": incident.dump(), "results": [applied.dump()]}
    update = await confirm.run(current, types.SimpleNamespace(context=deps))  # type: ignore[arg-type]
    assert update["phase"] == "Resolved", update.get("reason")
    assert cluster.patches == []  # the pre-image (the broken image) was not restored
