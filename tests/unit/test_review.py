"""aegis.review: the rows of `aegis incidents` and the review screen, from Incident objects as the API returns them."""

from __future__ import annotations

import copy
import datetime
import io
import re
from typing import Any

from rich.console import Console

from aegis import review
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 12, 4, 500000, tzinfo=datetime.UTC)


def live_deployment(image: str = "nginx:1.277") -> dict[str, Any]:
    """Deployment storefront/web as the API returns it (server fields included)."""
    deploy = factories.deployment("storefront", "web", image, labels={"app.kubernetes.io/name": "web"})
    deploy["spec"]["template"]["spec"]["containers"][0]["name"] = "nginx"
    deploy["metadata"] |= {
        "uid": "uid-web",
        "resourceVersion": "812",
        "creationTimestamp": "2026-11-20T08:00:00Z",
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}],
    }
    deploy["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = '{"kind":"Deployment"}'
    return deploy


def text_of(renderable: Any, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


# --- rows ----------------------------------------------------------------------------------------


def test_rows_of_incidents_in_several_phases() -> None:
    waiting = factories.incident("storefront", "web")
    resolved = factories.incident("storefront", "api", phase="Resolved", created="2026-11-19T10:00:00Z")
    observed = factories.incident("lab", "cart", phase="Diagnosed", created="2026-11-21T10:11:30Z")
    bare = {"metadata": {"name": "deployment-new", "namespace": "lab"}, "spec": {"target": {"kind": "StatefulSet"}}}

    rows = review.rows([waiting, resolved, observed, bare])

    assert [(r.namespace, r.name) for r in rows] == [
        ("lab", "deployment-cart"),
        ("lab", "deployment-new"),
        ("storefront", "deployment-api"),
        ("storefront", "deployment-web"),
    ]
    by_name = {r.name: r for r in rows}
    web = by_name["deployment-web"]
    assert (web.target, web.phase, web.category) == ("Deployment/web", "AwaitingApproval", "image-pull")
    # The wait began with the gate's "waiting for approval" line.
    assert web.waiting_since == datetime.datetime(2026, 11, 21, 10, 0, 4, 500000, tzinfo=datetime.UTC)
    assert web.cells(NOW) == (
        "storefront",
        "deployment-web",
        "Deployment/web",
        "AwaitingApproval",
        "image-pull",
        "12m",
        "12m",
    )
    assert by_name["deployment-api"].waiting_since is None
    assert by_name["deployment-api"].cells(NOW)[3:] == ("Resolved", "image-pull", "-", "2d")
    assert by_name["deployment-cart"].cells(NOW)[3:] == ("Diagnosed", "image-pull", "-", "34s")
    assert by_name["deployment-new"].cells(NOW)[2:] == ("StatefulSet/?", "Pending", "-", "-", "-")


def test_waiting_since_falls_back_to_the_pending_decision() -> None:
    incident = factories.incident("storefront", "web")
    incident["status"]["timeline"] = [line for line in incident["status"]["timeline"] if line["stage"] != "gate"]
    assert review.waiting_since(incident) == datetime.datetime(2026, 11, 21, 10, 0, 4, 400000, tzinfo=datetime.UTC)
    incident["status"]["phase"] = "Applying"
    assert review.waiting_since(incident) is None


def test_waiting_since_is_the_latest_wait() -> None:
    """A target that changed during the wait is verified again, and the gate asks again: the new wait counts."""
    incident = factories.incident("storefront", "web")
    incident["status"]["timeline"].append(
        {"at": "2026-11-21T10:09:00Z", "stage": "gate", "message": "waiting for approval (again): aegis approve ..."}
    )
    assert review.waiting_since(incident) == datetime.datetime(2026, 11, 21, 10, 9, tzinfo=datetime.UTC)
    assert review.row(incident).cells(NOW)[5] == "3m4s"


def test_durations_read_like_kubectl_ages() -> None:
    seconds = (0, 59, 60, 61, 599, 600, 3599, 3600, 3660, 86399, 86400, 90000, 8 * 86400)
    assert [review.duration(s) for s in seconds] == [
        "0s",
        "59s",
        "1m",
        "1m1s",
        "9m59s",
        "10m",
        "59m",
        "1h",
        "1h1m",
        "23h59m",
        "1d",
        "1d1h",
        "8d",
    ]
    assert review.parse_time("2026-11-21T10:00:00.10Z") == datetime.datetime(
        2026, 11, 21, 10, 0, 0, 100000, tzinfo=datetime.UTC
    )
    assert review.parse_time("yesterday") is None and review.parse_time(None) is None


def test_table_shows_the_namespace_column_only_across_namespaces() -> None:
    rows = review.rows([factories.incident("storefront", "web"), factories.incident("lab", "cart", phase="Diagnosed")])
    wide = text_of(review.table(rows, NOW))
    assert wide.splitlines()[0].split() == ["NAMESPACE", "NAME", "TARGET", "PHASE", "CATEGORY", "WAITING", "AGE"]
    assert re.search(r"storefront\s+deployment-web\s+Deployment/web\s+AwaitingApproval\s+image-pull\s+12m\s+12m", wide)
    narrow = text_of(review.table(rows[1:], NOW, show_namespace=False))
    assert narrow.splitlines()[0].split()[0] == "NAME"
    assert "storefront" not in narrow.splitlines()[1]


# --- the diff of a fix ---------------------------------------------------------------------------


def test_a_pending_fix_is_previewed_against_the_live_workload() -> None:
    incident = factories.incident("storefront", "web")
    live = live_deployment()

    changes = review.changes(incident, {"Deployment/web": live}, now=NOW)

    assert len(changes) == 1
    change = changes[0]
    assert change.title.startswith("set-image on Deployment storefront/web (risk low)")
    lines = change.diff.splitlines()
    assert lines[:2] == ["--- Deployment/web (live)", "+++ Deployment/web (with the fix)"]
    assert [line for line in lines if line[:1] in "+-" and not line.startswith(("+++", "---"))] == [
        "-      - image: nginx:1.277",
        "+      - image: nginx:1.27",
    ]
    assert "managedFields" not in change.diff and "resourceVersion" not in change.diff
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.277", "the live object is untouched"


def test_a_rollback_is_previewed_with_the_revision_it_returns_to() -> None:
    live = live_deployment()
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "canary"}]
    current = factories.replicaset(live, "7b9c6d5f4")
    current["spec"]["template"] = copy.deepcopy(live["spec"]["template"])
    previous = factories.replicaset(live, "5d4c3b2a1")
    previous["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    previous["spec"]["template"] = copy.deepcopy(live["spec"]["template"])
    previous["spec"]["template"]["spec"]["containers"][0] |= {"image": "nginx:1.27", "env": []}
    incident = factories.incident("storefront", "web")
    incident["status"]["plan"]["chosen"]["actions"][0] |= {"kind": "rollback", "params": {}}

    (change,) = review.changes(incident, {"Deployment/web": live}, replica_sets=[current, previous], now=NOW)

    changed = [line for line in change.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == [
        "-      - env:",
        "-        - name: MODE",
        "-          value: canary",
        "-        image: nginx:1.277",
        "+      - env: []",
        "+        image: nginx:1.27",
    ]


def test_other_actions_are_previewed_with_their_own_patch_types() -> None:
    live = live_deployment()
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "PORT", "value": "80"}]
    container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 80}}
    container["ports"] = [{"name": "http", "containerPort": 80}]
    incident = factories.incident("storefront", "web")
    target = incident["status"]["plan"]["chosen"]["actions"][0]["target"]
    incident["status"]["plan"]["chosen"]["actions"] = [
        {"kind": "set-env", "target": target, "params": {"name": "DB_HOST", "value": "db"}},
        {"kind": "scale", "target": target, "params": {"replicas": 3}},
        {"kind": "set-probe", "target": target, "params": {"probe": "readinessProbe", "path": "/"}},
    ]

    env, scale, probe = review.changes(incident, {"Deployment/web": live}, now=NOW)

    def changed(diff: str) -> list[str]:
        return [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]

    assert changed(env.diff) == ["+        - name: DB_HOST", "+          value: db"]  # merged by name, PORT kept
    assert changed(scale.diff) == ["-  replicas: 2", "+  replicas: 3"]
    assert changed(probe.diff) == ["-            path: /healthz", "+            path: /"]


def test_an_applied_fix_is_shown_from_its_pre_image_to_the_live_object() -> None:
    incident = factories.incident("storefront", "web", phase="Resolved")
    live = live_deployment("nginx:1.27")
    live["metadata"]["annotations"]["aegis.dev/applied"] = "uid-incident-web/1"

    (change,) = review.changes(incident, {"Deployment/web": live})

    lines = change.diff.splitlines()
    assert lines[:2] == ["--- Deployment/web (before the fix)", "+++ Deployment/web (now, with the fix)"]
    assert "-      - image: nginx:1.277" in lines and "+      - image: nginx:1.27" in lines
    assert "aegis.dev/applied" not in change.diff


def test_without_the_live_object_the_changed_fields_are_diffed() -> None:
    (change,) = review.changes(factories.incident("storefront", "web", phase="Resolved"), {})
    assert "not available" in change.note
    assert "-      - image: nginx:1.277" in change.diff.splitlines()
    assert "+      - image: nginx:1.27" in change.diff.splitlines()
    assert review.related_targets(factories.incident("storefront", "web")) == [("Deployment", "storefront", "web")]


def test_a_plan_that_no_longer_fits_says_why() -> None:
    incident = factories.incident("storefront", "web")
    live = live_deployment("nginx:1.27")  # someone fixed it by hand meanwhile
    (change,) = review.changes(incident, {"Deployment/web": live}, now=NOW)
    assert change.diff == ""
    assert "set-image no longer fits Deployment storefront/web" in change.note
    assert "already runs nginx:1.27" in change.note


def test_strategic_merge_preview_follows_merge_keys_and_delete_directives() -> None:
    service = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}
    patched = review.apply_patch(service, {"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}, "strategic")
    assert patched["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"port": 443, "targetPort": 8443},
    ]
    pod_spec = {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}
    undo = {"containers": [{"name": "a", "env": [{"name": "Y", "$patch": "delete"}]}]}
    assert review.apply_patch(pod_spec, undo, "strategic") == {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]
    }
    assert review.apply_patch({"spec": {"nodeSelector": {"a": "b"}}}, {"spec": {"nodeSelector": None}}, "merge") == {
        "spec": {}
    }


# --- the review screen ---------------------------------------------------------------------------


def test_review_screen_of_an_incident_waiting_for_approval() -> None:
    incident = factories.incident("storefront", "web")

    text = text_of(review.screen(incident, {"Deployment/web": live_deployment()}, now=NOW))

    assert "Incident storefront/deployment-web" in text
    assert "phase: AwaitingApproval — a verified fix is waiting for a human's decision" in text
    assert "waiting for a decision since: 2026-11-21 10:00:04Z (12m)" in text
    # The diagnosis and its evidence, printed literally (K8sGPT's "[Pod/...]" is not markup).
    assert "category: image-pull (confidence 0.95, from rules: image-pull)" in text
    assert "cannot be pulled — the image or tag does not exist in the registry." in text
    assert "- k8sgpt: Service has not ready endpoints, pods: [Pod/web-7b9c6d5f4-x8k2p], expected 1" in text
    # The fix as a diff of the workload.
    assert "plan #1 (rules): set container nginx back to nginx:1.27" in text
    assert re.search(r"^\s+--- Deployment/web \(live\)$", text, re.M)
    assert re.search(r"^\s+-      - image: nginx:1\.277$", text, re.M)
    assert re.search(r"^\s+\+      - image: nginx:1\.27$", text, re.M)
    # The shadow run and the policy.
    assert "result: passed" in text
    assert "baseline reproduced the failure: yes" in text
    assert "candidate healthy over the stability window: yes" in text
    assert "shadow namespace: aegis-shadow-a10974df-1-5e3d-c" in text
    assert "verdict: ask — a human decides" in text
    assert "why: namespace storefront is in propose mode: a human decides" in text
    assert "decision: pending at 2026-11-21 10:00:04Z" in text
    # The timeline, and how to decide.
    assert re.search(r"10:00:04\s+verify\s+plan #1 \(set-image\) passed in the shadow", text)
    assert "aegis approve deployment-web -n storefront" in text
    assert 'aegis reject deployment-web -n storefront --reason "<why>"' in text
    assert "identity: recorded by the API server" in text


def test_review_screen_of_a_resolved_incident() -> None:
    text = text_of(review.screen(factories.incident("storefront", "web", phase="Resolved"), now=NOW))
    assert "phase: Resolved — the fix was applied and the workload healed" in text
    assert "decision: approved by jane@example.com (identity verified) at 2026-11-21 10:07:00Z" in text
    assert "answer in spec.approval: Approved: checked the tag" in text
    assert "healed: yes" in text and "rolled back: no" in text
    assert "--reason" not in text  # nothing to decide any more
    assert "waiting for a decision" not in text


def test_review_screen_of_a_diagnosed_incident() -> None:
    text = text_of(review.screen(factories.incident("lab", "cart", phase="Diagnosed"), now=NOW))
    assert "reason: diagnosed as image-pull; the namespace is in observe mode" in text
    assert "no verified fix" in text and "not verified" in text and "no verdict yet" in text
