"""The pure decisions of intake and the engine: when a report opens a new incident, when a Service report
still holds, and which Incidents AEGIS refuses to run."""

from __future__ import annotations

import datetime

from aegis import config, k8sgpt, models
from aegis.kube import incidents
from graph import engine, intake
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")
PULL = 'Back-off pulling image "nginx:1.277"'
OOM = "the last termination reason is OOMKilled container=web pod=web-6d4cf56db6-zz9bq"


def incident(*sources: tuple[str, str, list[str], bool]) -> models.Incident:
    return models.Incident(
        name="deployment-web",
        namespace="shop",
        target=TARGET,
        fingerprint="f",
        sources=[
            models.Source(
                result=f"k8sgpt/{obj.replace('-', '')}",
                kind=kind,
                object=f"shop/{obj}",
                texts=texts,
                active=active,
                firstSeen=NOW,
                lastSeen=NOW,
            )
            for kind, obj, texts, active in sources
        ],
    )


def finding(name: str, texts: list[str], kind: str = "Pod") -> tuple[models.Finding, list[str]]:
    parsed = k8sgpt.parse_result(factories.result("shop", name, texts, kind=kind))
    return parsed, k8sgpt.signature(parsed)


def test_an_open_incident_always_absorbs_new_reports() -> None:
    known = incident(("Pod", "web-6d4cf56db6-abcde", [PULL], True))
    new, signature = finding("web-6d4cf56db6-zz9bq", [OOM])
    assert intake.recurrence("Diagnosing", known, new, signature) is False


def test_the_same_problem_on_new_pods_joins_the_finished_incident() -> None:
    known = incident(("Pod", "web-6d4cf56db6-abcde", [PULL], True))
    same, signature = finding("web-6d4cf56db6-zz9bq", [PULL])
    assert intake.recurrence("Diagnosed", known, same, signature) is False
    symptom, signature = finding("web", ["Deployment shop/web has 2 replicas but 0 are available"], kind="Deployment")
    assert intake.recurrence("Diagnosed", known, symptom, signature) is False


def test_a_new_pod_failure_or_a_return_after_silence_opens_a_new_incident() -> None:
    known = incident(("Pod", "web-6d4cf56db6-abcde", [PULL], True))
    other, signature = finding("web-6d4cf56db6-zz9bq", [OOM])
    assert intake.recurrence("Diagnosed", known, other, signature) is True
    silent = incident(("Pod", "web-6d4cf56db6-abcde", [PULL], False))
    back, signature = finding("web-6d4cf56db6-zz9bq", [PULL])
    assert intake.recurrence("Diagnosed", silent, back, signature) is True
    assert intake.recurrence("Resolved", known, back, signature) is True


def test_foreign_or_cross_namespace_incidents_are_refused() -> None:
    settings = config.Settings()
    own = incidents.incident_body(
        models.Incident(name="deployment-web", namespace="shop", target=TARGET, fingerprint="f")
    )
    assert engine.refuse(own, settings) is None
    foreign = {**own, "metadata": {**own["metadata"], "labels": {}}}
    assert engine.refuse(foreign, settings) == "not created by AEGIS"
    sneaky = {**own, "metadata": {**own["metadata"], "namespace": "team-a"}}
    assert "not in the Incident's own" in (engine.refuse(sneaky, settings) or "")
    system = incidents.incident_body(
        models.Incident(
            name="deployment-dns",
            namespace="kube-system",
            target=models.ObjectRef(kind="Deployment", namespace="kube-system", name="coredns"),
            fingerprint="f",
        )
    )
    assert "not watched" in (engine.refuse(system, settings) or "")


def test_a_service_finding_holds_until_every_endpoint_is_ready() -> None:
    """K8sGPT saw the Service while its pods were starting; by intake they are ready: no incident for that."""
    address = {"ip": "10.244.1.5", "targetRef": {"kind": "Pod", "name": "web-6d4cf56db6-abcde"}}
    assert intake.all_endpoints_ready({"subsets": [{"addresses": [address]}]}) is True
    # Still failing: nothing selected, a port that matches nothing, or a backend not ready.
    assert intake.all_endpoints_ready(None) is False
    assert intake.all_endpoints_ready({"subsets": []}) is False
    assert intake.all_endpoints_ready({"subsets": [{"notReadyAddresses": [address]}]}) is False
    assert intake.all_endpoints_ready({"subsets": [{"addresses": [address], "notReadyAddresses": [address]}]}) is False


def _pod_at(age: float, state: dict, *, restarts: int = 0, scheduled: str = "True", ready: str = "False") -> dict:
    created = (NOW - datetime.timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"name": "echo-6b7f9c8d4-k2x9q", "creationTimestamp": created},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": scheduled}, {"type": "Ready", "status": ready}],
            "containerStatuses": [{"name": "echo", "restartCount": restarts, "state": state}],
        },
    }


def test_a_service_report_waits_while_its_pods_are_only_starting() -> None:
    creating = {"waiting": {"reason": "ContainerCreating"}}
    running = {"running": {"startedAt": "2026-11-21T09:59:58Z"}}
    assert intake.backends_starting([_pod_at(2, creating)], NOW, 10) is True
    assert intake.backends_starting([_pod_at(3, running), _pod_at(40, running, ready="True")], NOW, 10) is True
    # Decide now: every pod ready, no pod yet, a pod too old to be starting, or one failing already.
    assert intake.backends_starting([_pod_at(3, running, ready="True")], NOW, 10) is False
    assert intake.backends_starting([], NOW, 10) is False
    assert intake.backends_starting([_pod_at(30, running)], NOW, 10) is False
    assert intake.backends_starting([_pod_at(2, {"waiting": {"reason": "ImagePullBackOff"}})], NOW, 10) is False
    assert intake.backends_starting([_pod_at(2, running, restarts=1)], NOW, 10) is False
    assert (
        intake.backends_starting([_pod_at(2, {"waiting": {"reason": "ContainerCreating"}}, scheduled="False")], NOW, 10)
        is False
    )


def test_a_service_report_waits_while_its_only_pod_is_being_replaced() -> None:
    """A StatefulSet deletes its pod before it creates the new one (seen on the real controller-manager while a
    fix rolled out): a Service reported in that window is not a problem of its own yet."""
    crashing = {"waiting": {"reason": "CrashLoopBackOff"}}
    going = _pod_at(40, crashing, restarts=3)
    going["metadata"]["deletionTimestamp"] = "2026-11-21T10:00:00Z"
    assert intake.backends_starting([going], NOW, 10) is True
    # A ready pod on its way out leaves nothing to wait for; a failing pod beside it decides now.
    leaving_ready = _pod_at(40, {"running": {}}, ready="True")
    leaving_ready["metadata"]["deletionTimestamp"] = "2026-11-21T10:00:00Z"
    assert intake.backends_starting([leaving_ready], NOW, 10) is False
    assert intake.backends_starting([going, _pod_at(30, crashing, restarts=2)], NOW, 10) is False


def test_a_workload_report_no_longer_holds_once_fully_rolled_out() -> None:
    deploy = factories.deployment("shop", "web", "nginx:1.27", replicas=2)
    deploy["metadata"]["generation"] = 3
    done = {"observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    assert intake.workload_ready({**deploy, "status": done}) is True
    # Still rolling: an old replica left, one not ready, a spec the controller has not seen yet.
    assert intake.workload_ready({**deploy, "status": {**done, "replicas": 3}}) is False
    assert intake.workload_ready({**deploy, "status": {**done, "readyReplicas": 1}}) is False
    assert intake.workload_ready({**deploy, "status": {**done, "observedGeneration": 2}}) is False
    sts = {"spec": {"replicas": 1}, "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    assert intake.workload_ready(sts) is True
    assert (
        intake.workload_ready({**sts, "status": {**sts["status"], "currentRevision": "a", "updateRevision": "b"}})
        is False
    )
