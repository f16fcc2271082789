"""Rules diagnose known signatures from what AEGIS read (pod statuses, events, Services) — not from hints alone."""

from __future__ import annotations

import datetime
from typing import Any

from aegis import models, rules
from aegis.kube import evidence as ev
from graph.nodes import diagnose as diagnose_node
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)


def evidence_for(
    pods: list[dict[str, Any]],
    *,
    target: models.ObjectRef | None = None,
    events: list[dict] = (),
    hints: list[str] = (),
    service: models.ServiceSummary | None = None,
    namespace_pods: list[dict[str, Any]] = (),
) -> models.Evidence:
    return models.Evidence(
        target=target or models.ObjectRef(kind="Deployment", namespace="shop", name="web"),
        pods=[ev.summarize_pod(p) for p in pods],
        events=[ev.summarize_event(e) for e in events],
        hints=list(hints),
        service=service,
        namespacePods=[ev.summarize_pod(p) for p in namespace_pods],
        collectedAt=NOW,
    )


def web_pods(
    state: dict[str, Any],
    *,
    last_state: dict | None = None,
    restarts: int = 0,
    memory_limit: str | None = None,
    labels: dict[str, str] | None = None,
    phase: str = "Pending",
    ready: bool = False,
) -> list[dict[str, Any]]:
    deploy = factories.deployment("shop", "web", "nginx:1.27", memory_limit=memory_limit, labels=labels)
    rs = factories.replicaset(deploy, "6d4cf56db6")
    return [
        factories.pod(rs, suffix, state=state, last_state=last_state, restarts=restarts, phase=phase, ready=ready)
        for suffix in ("abcde", "fghij")
    ]


def test_image_pull_not_found() -> None:
    pods = web_pods(
        {
            "waiting": {
                "reason": "ErrImagePull",
                "message": (
                    "rpc error: code = NotFound desc = failed to pull and unpack image "
                    '"docker.io/library/nginx:1.277": failed to resolve reference '
                    '"docker.io/library/nginx:1.277": docker.io/library/nginx:1.277: not found'
                ),
            }
        }
    )
    diagnosis = rules.diagnose(evidence_for(pods))
    assert diagnosis.category == "image-pull"
    assert diagnosis.rule == "image-pull"
    assert diagnosis.confidence >= 0.9
    assert "does not exist" in diagnosis.summary
    assert any("ErrImagePull" in line for line in diagnosis.evidence)


def test_image_pull_unauthorized_is_told_apart() -> None:
    pods = web_pods({"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "private/app:1"'}})
    events = [
        factories.event(
            "shop",
            "e1",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="Failed",
            message='Failed to pull image "private/app:1": pull access denied, repository does '
            "not exist or may require authorization: authorization failed",
        )
    ]
    diagnosis = rules.diagnose(evidence_for(pods, events=events))
    assert diagnosis.category == "image-pull"
    assert "credentials" in diagnosis.summary


def test_oom_killed_from_last_state() -> None:
    pods = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=web"}},
        last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restarts=4,
        memory_limit="64Mi",
    )
    diagnosis = rules.diagnose(evidence_for(pods))
    assert diagnosis.category == "oom-killed"
    assert "64Mi" in diagnosis.summary
    assert "exit code 137" in diagnosis.evidence[0]


def test_crash_with_error_exit_is_app_crash_not_oom() -> None:
    pods = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=web"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=3,
    )
    evidence = evidence_for(pods)
    evidence.logs = {"web-6d4cf56db6-abcde/web": ["loading templates", "fatal: template welcome.tmpl is invalid"]}
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.category == "app-crash"
    assert "exits with code 1" in diagnosis.summary
    assert "fatal: template welcome.tmpl is invalid" in diagnosis.summary


def test_unrecognised_failure_is_unknown_with_the_hints() -> None:
    running = web_pods({"running": {}}, phase="Running", ready=True)
    diagnosis = rules.diagnose(evidence_for(running, hints=["Deployment shop/web has 2 replicas but 1 are available"]))
    assert diagnosis.category == "unknown"
    assert diagnosis.confidence == 0.0
    assert diagnosis.evidence == ["K8sGPT reported: Deployment shop/web has 2 replicas but 1 are available"]


def test_missing_env_from_the_programs_own_error() -> None:
    pods = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=2,
    )
    evidence = evidence_for(pods)
    evidence.logs = {
        "web-6d4cf56db6-abcde/web": [
            "Error: Database is uninitialized and superuser password is not specified.",
            "       You must specify POSTGRES_PASSWORD to a non-empty value for the",
            '       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".',
        ]
    }
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.category == "missing-env"
    assert "POSTGRES_PASSWORD" in diagnosis.summary
    # When the variable is set, the same log does not make it a missing-env problem.
    for pod in evidence.pods:
        pod.containers[0].env_names = ["POSTGRES_PASSWORD"]
    assert rules.diagnose(evidence).category == "app-crash"


def test_missing_configmap_and_secret() -> None:
    pods = web_pods({"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "ledger-db" not found'}})
    diagnosis = rules.diagnose(evidence_for(pods))
    assert diagnosis.category == "missing-config"
    assert "'ledger-db'" in diagnosis.summary and "only a human" in diagnosis.summary
    mount = [
        factories.event(
            "shop",
            "e",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="FailedMount",
            message='MountVolume.SetUp failed for volume "config" : configmap "app-config" not found',
        )
    ]
    creating = web_pods({"waiting": {"reason": "ContainerCreating"}})
    diagnosis = rules.diagnose(evidence_for(creating, events=mount))
    assert diagnosis.category == "missing-config" and "'app-config'" in diagnosis.summary


def test_probe_failure_on_a_port_nothing_listens_on() -> None:
    running = web_pods({"running": {}}, phase="Running")
    for pod in running:
        pod["spec"]["containers"][0]["ports"] = [{"containerPort": 9898, "name": "http"}]
    events = [
        factories.event(
            "shop",
            "u",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="Unhealthy",
            count=6,
            message='Liveness probe failed: Get "http://10.244.1.5:8080/healthz": dial tcp '
            "10.244.1.5:8080: connect: connection refused",
        ),
        factories.event(
            "shop",
            "k",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="Killing",
            type_="Normal",
            message="Container web failed liveness probe, will be restarted",
        ),
    ]
    diagnosis = rules.diagnose(evidence_for(running, events=events))
    assert diagnosis.category == "probe-failure"
    assert "nothing listens on port 8080" in diagnosis.summary and "9898" in diagnosis.summary
    assert "killed and restarted" in diagnosis.summary


def test_readiness_probe_404() -> None:
    running = web_pods({"running": {}}, phase="Running")
    events = [
        factories.event(
            "shop",
            "u",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="Unhealthy",
            message="Readiness probe failed: HTTP probe failed with statuscode: 404",
        )
    ]
    diagnosis = rules.diagnose(evidence_for(running, events=events))
    assert diagnosis.category == "probe-failure" and "404" in diagnosis.summary


def _unschedulable(message: str) -> list[dict[str, Any]]:
    pods = web_pods({"waiting": {"reason": "ContainerCreating"}})
    for pod in pods:
        pod["status"]["containerStatuses"] = []
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ]
    return pods


def test_unschedulable_resources_and_constraints() -> None:
    memory = (
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No "
        "preemption victims found for incoming pod."
    )
    assert rules.diagnose(evidence_for(_unschedulable(memory))).category == "unschedulable-resources"
    selector = (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 "
        "nodes are available: 3 Preemption is not helpful for scheduling."
    )
    diagnosis = rules.diagnose(evidence_for(_unschedulable(selector)))
    assert diagnosis.category == "unschedulable-constraints"


def test_pvc_pending_with_a_missing_storage_class() -> None:
    message = (
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes "
        "are available: 3 Preemption is not helpful for scheduling."
    )
    evidence = evidence_for(_unschedulable(message))
    evidence.claims = [
        models.ClaimSummary(name="cache-data", phase="Pending", storageClass="fast-ssd", storageClassExists=False)
    ]
    diagnosis = rules.diagnose(evidence)
    assert diagnosis.category == "pvc-pending"
    assert "'fast-ssd', which does not exist" in diagnosis.summary


def test_a_scheduler_message_older_than_the_binding_is_not_a_pending_claim() -> None:
    """Seen on the real control plane: the claim was provisioned and bound a moment after the scheduler's first try;
    the pod still says "unbound immediate PersistentVolumeClaims" until the scheduler's back-off ends."""
    message = (
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes "
        "are available: 3 Preemption is not helpful for scheduling."
    )
    evidence = evidence_for(_unschedulable(message))
    evidence.claims = [models.ClaimSummary(name="data-stock-db-0", phase="Bound", storageClass="standard")]
    assert rules.diagnose(evidence).category != "pvc-pending"
    assert diagnose_node.settling(evidence) is True, "the pod is about to be scheduled: look again"
    evidence.claims = [models.ClaimSummary(name="data-stock-db-0", phase="Pending", storageClass="standard")]
    assert rules.diagnose(evidence).category == "pvc-pending"


def test_service_named_target_port_missing() -> None:
    running = web_pods({"running": {}}, phase="Running", ready=True, labels={"app": "echo"})
    for pod in running:
        pod["spec"]["containers"][0]["ports"] = [{"containerPort": 5678, "name": "http"}]
    service = models.ServiceSummary(
        name="echo",
        selector={"app": "echo"},
        ports=[{"port": 80, "targetPort": "web"}],
        matchingPods=[p["metadata"]["name"] for p in running],
    )
    target = models.ObjectRef(kind="Service", namespace="shop", name="echo")
    diagnosis = rules.diagnose(evidence_for(running, target=target, service=service))
    assert diagnosis.category == "service-port-mismatch"
    assert "'web'" in diagnosis.summary and "http" in diagnosis.summary


def test_hint_alone_gives_low_confidence() -> None:
    running = web_pods({"running": {"startedAt": "2026-11-21T09:00:00Z"}}, phase="Running", ready=True)
    diagnosis = rules.diagnose(
        evidence_for(running, hints=["the last termination reason is OOMKilled container=web pod=web-6d4cf56db6-abcde"])
    )
    assert (diagnosis.category, diagnosis.confidence) == ("oom-killed", 0.5)


def _service(selector: dict[str, str], matching: list[str] = (), ready: int = 0) -> models.ServiceSummary:
    return models.ServiceSummary(
        name="checkout",
        selector=selector,
        ports=[{"port": 80, "targetPort": 8080}],
        readyEndpoints=ready,
        matchingPods=list(matching),
    )


def test_service_selector_mismatch_names_the_likely_backend() -> None:
    backends = web_pods({"running": {}}, labels={"app": "checkout-v2", "tier": "web"}, phase="Running", ready=True)
    other = web_pods({"running": {}}, labels={"app": "cart"}, phase="Running", ready=True)[:1]
    service = _service({"app": "checkout", "tier": "web"})
    target = models.ObjectRef(kind="Service", namespace="shop", name="checkout")
    diagnosis = rules.diagnose(evidence_for([], target=target, service=service, namespace_pods=other + backends))
    assert diagnosis.category == "service-selector-mismatch"
    assert diagnosis.confidence == 0.9
    assert "web-6d4cf56db6" in diagnosis.summary
    assert "app=checkout,tier=web" in diagnosis.evidence[0]


def test_service_with_matching_pods_is_not_a_selector_problem() -> None:
    service = _service({"app": "checkout"}, matching=["checkout-1"], ready=0)
    target = models.ObjectRef(kind="Service", namespace="shop", name="checkout")
    assert rules.diagnose(evidence_for([], target=target, service=service)).category == "unknown"


def test_service_in_an_empty_namespace_is_not_a_selector_problem() -> None:
    target = models.ObjectRef(kind="Service", namespace="shop", name="checkout")
    diagnosis = rules.diagnose(evidence_for([], target=target, service=_service({"app": "checkout"})))
    assert diagnosis.category == "unknown"


def test_most_confident_rule_wins() -> None:
    pods = web_pods({"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nginx:bad"'}})
    diagnosis = rules.diagnose(evidence_for(pods, hints=["the last termination reason is OOMKilled container=web"]))
    assert diagnosis.category == "image-pull"


def test_an_old_oomkill_on_a_recovered_pod_does_not_hide_the_new_crash() -> None:
    recovered = web_pods(
        {"running": {"startedAt": "2026-11-20T08:00:00Z"}},  # up for a day, NOW is 2026-11-21T10:00
        last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restarts=1,
        phase="Running",
        ready=True,
    )[:1]
    crashing = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=4,
    )[1:]
    assert rules.diagnose(evidence_for(recovered + crashing)).category == "app-crash"


def test_a_crash_looping_container_caught_running_is_still_oom_killed() -> None:
    between_kills = web_pods(
        {"running": {"startedAt": "2026-11-21T09:59:58Z"}},  # restarted two seconds ago
        last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restarts=3,
        phase="Running",
        ready=True,
        memory_limit="100Mi",
    )
    assert rules.diagnose(evidence_for(between_kills)).category == "oom-killed"


def test_an_old_failed_mount_event_does_not_outlive_the_fix() -> None:
    running = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=2,
    )
    old = [
        factories.event(
            "shop",
            "e",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="FailedMount",
            message='MountVolume.SetUp failed for volume "c" : configmap "app-config" not found',
        )
    ]
    assert rules.diagnose(evidence_for(running, events=old)).category == "app-crash"


def test_missing_env_needs_the_variable_and_the_complaint_on_one_line() -> None:
    pods = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=2,
    )
    evidence = evidence_for(pods)
    evidence.logs = {
        "web-6d4cf56db6-abcde/web": ["config: KAFKA_BROKERS=kafka:9092 GROUP=orders", "fatal: topic orders missing"]
    }
    assert rules.diagnose(evidence).category == "app-crash"


def test_a_claim_waiting_for_its_pod_to_be_scheduled_is_a_symptom() -> None:
    message = (
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No "
        "preemption victims found for incoming pod."
    )
    evidence = evidence_for(_unschedulable(message))
    evidence.claims = [
        models.ClaimSummary(name="data-pg-0", phase="Pending", storageClass="standard", storageClassExists=True)
    ]
    assert rules.diagnose(evidence).category == "unschedulable-resources"


def test_docker_hub_pull_access_denied_reads_as_a_missing_repository() -> None:
    pods = web_pods(
        {
            "waiting": {
                "reason": "ErrImagePull",
                "message": (
                    "rpc error: code = Unknown desc = failed to pull and unpack image "
                    '"docker.io/library/ngnix:1.27": failed to resolve reference "docker.io/library/ngnix:1.27": '
                    "pull access denied, repository does not exist or may require authorization: server message: "
                    "insufficient_scope: authorization failed"
                ),
            }
        }
    )
    diagnosis = rules.diagnose(evidence_for(pods))
    assert diagnosis.category == "image-pull"
    assert "repository does not exist" in diagnosis.summary


def test_tcp_probe_failure_names_the_port() -> None:
    running = web_pods({"running": {}}, phase="Running")
    events = [
        factories.event(
            "shop",
            "u",
            kind="Pod",
            obj="web-6d4cf56db6-abcde",
            reason="Unhealthy",
            message="Readiness probe failed: dial tcp 10.244.1.5:6380: connect: connection refused",
        )
    ]
    assert "nothing listens on port 6380" in rules.diagnose(evidence_for(running, events=events)).summary


def test_a_rollout_the_controller_has_not_acted_on_yet_is_still_settling() -> None:
    """Seen on the real control plane: a report from the first rollout is taken up just after the bad change was
    applied — the old pods are all ready, the new ReplicaSet has no pod yet. That is not "nothing wrong"."""
    running = web_pods({"running": {"startedAt": "2026-11-21T09:00:00Z"}}, phase="Running", ready=True)
    deploy = factories.deployment("shop", "web", "nginx:1.27", replicas=2, ready=2)
    deploy["metadata"]["generation"] = 3
    evidence = evidence_for(running)
    status = {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    evidence.target_summary = ev.summarize_target({**deploy, "status": status})
    assert diagnose_node.settling(evidence) is True, "the controller has not seen the change yet"
    evidence.target_summary = ev.summarize_target({**deploy, "status": {**status, "observedGeneration": 3}})
    assert diagnose_node.settling(evidence) is False
    rolling = {**status, "observedGeneration": 3, "replicas": 3, "updatedReplicas": 1}
    evidence.target_summary = ev.summarize_target({**deploy, "status": rolling})
    assert diagnose_node.settling(evidence) is True, "new pods not all there, old ones not gone"
