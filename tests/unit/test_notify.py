"""Notification messages (generic JSON and Slack) built from realistic Incidents, and their wiring into the graph."""

from __future__ import annotations

import datetime
import json
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from aegis import actions, config, models, notify
from graph import context, state, targets
from graph.nodes import gate, report
from tests import factories

NOW = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
TARGET = models.ObjectRef(kind="Deployment", namespace="shop", name="web")
CANARY = "hunter2canary"
KUBECTL = (
    "kubectl patch incident deployment-web -n shop --type merge "
    """-p '{"spec":{"approval":{"decision":"Approved"}}}'"""
)
GENERIC_KEYS = {
    "event",
    "incident",
    "namespace",
    "target",
    "phase",
    "reason",
    "summary",
    "diff",
    "approve",
    "reject",
    "kubectl",
    "at",
}


def _set_image(image: str = "nginx:1.27") -> tuple[models.Action, dict[str, Any]]:
    live = factories.deployment("shop", "web", "nginx:1.27-typo")
    action = models.Action(kind="set-image", target=TARGET, params={"image": image, "container": "web"})
    return action, actions.render(action, live).dump()


def _incident(phase: str = "AwaitingApproval", **status: Any) -> dict[str, Any]:
    """An Incident as the API returns it while it waits for approval."""
    action, _ = _set_image()
    return {
        "apiVersion": "aegis.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "deployment-web", "namespace": "shop", "uid": "u1", "resourceVersion": "42"},
        "spec": {
            "target": TARGET.dump(),
            "fingerprint": "f" * 16,
            "approval": {"decision": "Pending"},
        },
        "status": {
            "phase": phase,
            "diagnosis": {
                "category": "image-pull",
                "summary": 'tag "nginx:1.27-typo" does not exist',
                "evidence": ["Failed to pull image"],
                "confidence": 0.95,
                "source": "rules",
            },
            "verification": {"passed": True, "baselineReproduced": True, "candidateHealthy": True},
            "plan": {"chosen": {"actions": [action.dump()], "rank": 1, "source": "rules"}, "candidates": []},
            "decision": {"verdict": "ask", "outcome": "pending", "reason": "namespace shop is in propose mode"},
            **status,
        },
    }


def test_generic_awaiting_approval_has_the_diff_and_the_exact_commands() -> None:
    _, result = _set_image()
    message = notify.build_message(_incident(), "awaiting-approval", results=[result], now=NOW)
    body = notify.payload(message, "generic")
    assert set(body) >= GENERIC_KEYS
    json.dumps(body)  # a JSON document
    assert body["event"] == "awaiting-approval"
    assert (body["incident"], body["namespace"]) == ("deployment-web", "shop")
    assert body["target"] == "Deployment shop/web"
    assert body["phase"] == "AwaitingApproval"
    assert body["reason"] == "namespace shop is in propose mode"
    assert body["category"] == "image-pull" and "does not exist" in body["summary"]
    assert body["actions"] == ["set-image on Deployment/web (risk low): container=web, image=nginx:1.27"]
    assert body["approve"] == "aegis approve deployment-web -n shop"
    assert body["reject"] == 'aegis reject deployment-web -n shop --reason "<why>"'
    assert body["kubectl"] == KUBECTL
    assert body["at"] == NOW.isoformat()
    lines = body["diff"].splitlines()
    assert lines[:2] == ["--- Deployment/web (live)", "+++ Deployment/web (set-image)"]
    assert "-      - image: nginx:1.27-typo" in lines
    assert "+      - image: nginx:1.27" in lines
    assert not [line for line in lines if line.startswith(("+", "-")) and "name: web" in line]  # context only


def test_ended_message_diffs_what_was_applied_and_has_no_commands() -> None:
    _, result = _set_image()
    applied = {**result, "applied": True, "dryRun": "passed"}
    obj = _incident("Resolved", reason="the workload is healthy", actions={"marker": "u1/1", "results": [applied]})
    message = notify.build_message(obj, "ended", now=NOW)
    assert message["phase"] == "Resolved" and message["reason"] == "the workload is healthy"
    assert message["title"] == "Incident shop/deployment-web ended: Resolved"
    assert "+      - image: nginx:1.27" in message["diff"]
    assert (message["approve"], message["reject"], message["kubectl"]) == (None, None, None)
    blocks = notify.slack(message)["blocks"]
    assert not any("aegis approve" in json.dumps(block) for block in blocks)


def test_graph_state_incident_and_json_patch_diff() -> None:
    """The flat incident of the graph state works too; a JSON patch (rollback) diffs as the values it sets."""
    deploy = factories.deployment("shop", "web", "nginx:bad")
    old = factories.replicaset(factories.deployment("shop", "web", "nginx:1.27"), "aaa")
    old["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    action = models.Action(kind="rollback", target=TARGET)
    result = actions.render(action, deploy, actions.Context(replica_sets=(old,))).dump()
    flat = models.Incident(name="deployment-web", namespace="shop", target=TARGET, fingerprint="f").dump()
    message = notify.build_message(flat, "awaiting-approval", results=[result], now=NOW)
    assert message["target"] == "Deployment shop/web"
    assert message["approve"] == "aegis approve deployment-web -n shop"
    assert "-    - image: nginx:bad" in message["diff"]
    assert "+    - image: nginx:1.27" in message["diff"]
    assert "op:" not in message["diff"]  # the values it sets, not a list of JSON patch operations


def test_slack_payload_sections_and_code_blocks() -> None:
    _, result = _set_image()
    body = notify.payload(notify.build_message(_incident(), "awaiting-approval", results=[result]), "slack")
    assert set(body) == {"text", "blocks"}
    assert "waits for approval" in body["text"] and "aegis approve deployment-web -n shop" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    assert all(b["text"]["type"] == "mrkdwn" for b in body["blocks"] if b["type"] == "section")
    diff = next(text for text in sections if text.startswith("```"))
    assert diff.endswith("```") and "+      - image: nginx:1.27" in diff
    commands = sections[-1]
    assert "`aegis approve deployment-web -n shop`" in commands
    assert "--reason &quot;" not in commands and "&lt;why&gt;" in commands  # Slack's escaping of < and >
    assert KUBECTL in commands
    assert "*Diagnosis (image-pull):*" in "\n".join(sections)


def test_slack_diff_is_truncated_to_the_section_limit() -> None:
    live = factories.deployment("shop", "web", "nginx:1.27")
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": f"VAR_{i}", "value": "x" * 40} for i in range(200)]
    live["spec"]["template"]["metadata"]["annotations"] = {f"a{i}": "<&>" * 30 for i in range(100)}
    new = factories.deployment("shop", "web", "nginx:1.28")
    result = {
        "action": {"kind": "rollback", "target": TARGET.dump()},
        "patch": [{"op": "replace", "path": "/spec/template", "value": new["spec"]["template"]}],
        "patchType": "json",
        "preImage": {"undo": [{"op": "replace", "path": "/spec/template", "value": live["spec"]["template"]}]},
    }
    message = notify.build_message(_incident(), "awaiting-approval", results=[result])
    assert len(message["diff"]) > 10_000  # the generic document keeps the whole diff
    body = notify.slack(message)
    for block in body["blocks"]:
        limit = notify.SLACK_HEADER_LIMIT if block["type"] == "header" else notify.SLACK_SECTION_LIMIT
        assert len(block["text"]["text"]) <= limit
    diff = next(b["text"]["text"] for b in body["blocks"] if b["text"]["text"].startswith("```"))
    assert diff.endswith("(truncated)\n```")
    assert len(diff) > 2900
    assert "&amp;" in diff and "<" not in diff  # escaped, and never cut inside an entity
    head = diff.removesuffix(notify.TRUNCATED + "\n```")
    assert ";" in head[head.rfind("&") :]


def test_secrets_are_redacted_in_both_formats() -> None:
    live = factories.deployment("shop", "web", "nginx:1.27")
    action = models.Action(kind="set-env", target=TARGET, params={"name": "DB_PASSWORD", "value": CANARY})
    result = actions.render(action, live).dump()
    obj = _incident(reason=f"probe failed: password={CANARY}")
    obj["status"]["diagnosis"]["summary"] = f"the app logs 'connecting with password={CANARY}'"
    obj["status"]["plan"]["chosen"]["actions"] = [action.dump()]
    for fmt in ("generic", "slack"):
        body = notify.payload(notify.build_message(obj, "awaiting-approval", results=[result]), fmt)
        text = json.dumps(body)
        assert CANARY not in text, fmt
        assert "password=****" in text
        assert "DB_PASSWORD" in text  # the key is kept: a human sees which secret was involved


def test_unknown_event_and_format_are_refused() -> None:
    for call in (
        lambda: notify.build_message(_incident(), "started"),
        lambda: notify.payload({}, "teams"),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError("accepted")


def test_only_scheme_and_host_of_a_webhook_are_shown() -> None:
    assert notify.safe_url("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com"
    assert notify.safe_url("http://user:pw@127.0.0.1:8080/hook?token=abc") == "http://127.0.0.1:8080"
    settings = config.Settings(notify_url="https://hooks.slack.com/services/T0/B0/SECRET", notify_format="slack")
    notifier = notify.Notifier(settings)
    assert "SECRET" not in repr(notifier) and notifier.where == "https://hooks.slack.com"
    scrubbed = notifier._scrub(OSError("cannot reach https://hooks.slack.com/services/T0/B0/SECRET"))
    assert "SECRET" not in scrubbed and "/services" not in scrubbed


def test_notify_without_url_or_loop_is_a_quiet_no_op() -> None:
    assert notify.Notifier(config.Settings()).notify(_incident(), "ended") is None
    assert not notify.Notifier(config.Settings()).enabled
    notifier = notify.Notifier(config.Settings(notify_url="http://127.0.0.1:9/hook"))
    assert notifier.notify(_incident(), "ended") is None  # no running loop: logged, not raised
    assert notifier.notify(_incident(), "bogus-event") is None


# --- wiring: the gate notifies once per question, the report once per ending ----------------------


class FakeNotifier:
    enabled = True

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str, Any]] = []

    def notify(self, incident: dict[str, Any], event: str, *, results: Any = None) -> None:
        self.calls.append((incident, event, results))


class FakeStore:
    def __init__(self, exists: bool = True) -> None:
        self.obj: dict[str, Any] | None = (
            {
                "metadata": {"name": "deployment-web", "namespace": "shop"},
                "spec": {"target": TARGET.dump()},
                "status": {},
            }
            if exists
            else None
        )

    async def set_status(self, namespace: str, name: str, status: dict[str, Any], timeline: Any = None) -> None:
        if self.obj is not None:
            self.obj["status"].update(status)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self.obj] if self.obj else []

    async def update_spec(self, namespace: str, name: str, mutate: Any) -> None:
        return None


class FakeCluster:
    def __init__(self, live: dict[str, Any]) -> None:
        self.live = live

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.live if (kind, name) == ("Deployment", "web") else None

    async def list(self, kind: str, namespace: str, selector: Any = None) -> list[dict[str, Any]]:
        return []

    async def event(self, *args: Any) -> None:
        return None


def _gate_state(live: dict[str, Any]) -> dict[str, Any]:
    action, _ = _set_image()
    incident = models.Incident(name="deployment-web", namespace="shop", uid="u1", target=TARGET, fingerprint="f")
    return {
        "incident": incident.dump(),
        "evidence": models.Evidence(target=TARGET, collectedAt=NOW).dump(),
        "diagnosis": _incident()["status"]["diagnosis"],
        "verification": {"passed": True, "baselineReproduced": True},
        "chosen": models.Plan(actions=[action.model_copy(update={"risk": "low"})], rank=1).dump(),
        # As the verify node leaves it: the identity verified, and the exact rendered patches and pre-images.
        "verified": {**targets.identity(live), "results": [actions.render(action, live).dump()]},
        "timeline": [],
    }


async def test_gate_notifies_once_with_the_diff_and_not_again_on_resume() -> None:
    live = factories.deployment("shop", "web", "nginx:1.27-typo")
    store, notifier = FakeStore(), FakeNotifier()
    deps = context.Deps(
        settings=config.Settings(mode="propose"),
        incidents=store,
        gatherer=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
        cluster=FakeCluster(live),
        notifier=notifier,
    )
    builder = StateGraph(state.IncidentState, context_schema=context.Deps)
    builder.add_node("gate", gate.run)
    builder.add_edge(START, "gate")
    builder.add_edge("gate", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(_gate_state(live), cfg, context=deps)
    assert store.obj is not None and store.obj["status"]["phase"] == "AwaitingApproval"
    [(obj, event, results)] = notifier.calls
    assert event == "awaiting-approval" and obj is store.obj
    message = notify.build_message(obj, event, results=results)
    assert "+      - image: nginx:1.27" in message["diff"]
    final = await graph.ainvoke(Command(resume={"decision": "Approved", "by": "alice"}), cfg, context=deps)
    assert final["decision"]["outcome"] == "approved"
    assert len(notifier.calls) == 1


async def test_report_notifies_the_end_and_tolerates_missing_notifier_or_incident() -> None:
    current: Any = {"incident": _gate_state(factories.deployment("shop", "web", "x"))["incident"], "timeline": []}
    current |= {"evidence": {}, "phase": "Resolved", "reason": "healed"}

    class Runtime:
        def __init__(self, deps: context.Deps) -> None:
            self.context = deps

    store, notifier = FakeStore(), FakeNotifier()
    deps = context.Deps(settings=config.Settings(), incidents=store, gatherer=None, notifier=notifier)  # type: ignore[arg-type]
    update = await report.run(current, Runtime(deps))  # type: ignore[arg-type]
    assert update["phase"] == "Resolved"
    [(obj, event, _)] = notifier.calls
    assert event == "ended" and obj["status"]["phase"] == "Resolved"

    gone = context.Deps(settings=config.Settings(), incidents=FakeStore(exists=False), gatherer=None, notifier=notifier)  # type: ignore[arg-type]
    await report.run(current, Runtime(gone))  # type: ignore[arg-type]
    assert len(notifier.calls) == 1
    none = context.Deps(settings=config.Settings(), incidents=FakeStore(), gatherer=None)  # type: ignore[arg-type]
    assert (await report.run(current, Runtime(none)))["phase"] == "Resolved"
