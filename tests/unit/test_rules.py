"""Rules diagnose known signatures from what AEGIS read (pod statuses, events, Services) — not from hints alone."""

from __future__ import annotations

import datetime
from typing import Any

from aegis import models, rules
from aegis.kube import evidence as ev
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


def test_crash_with_error_exit_is_not_oom() -> None:
    pods = web_pods(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        last_state={"terminated": {"reason": "Error", "exitCode": 1}},
        restarts=3,
    )
    diagnosis = rules.diagnose(evidence_for(pods, hints=["the last termination reason is Error container=web pod=x"]))
    assert diagnosis.category == "unknown"
    assert diagnosis.confidence == 0.0
    assert diagnosis.evidence == ["K8sGPT reported: the last termination reason is Error container=web pod=x"]


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
