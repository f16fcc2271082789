"""The demo's scenarios, run and reported: apply each, follow its Incident, answer approvals, report.

``run_scenario`` applies a scenario's manifests (then its bad change once they are
healthy) and follows the Incident AEGIS opens for its target to a final phase,
answering approval requests as told (``auto``, ``deny``, or at a terminal the
review screen of ``aegis show`` then y/N). Its ``Report`` records what happened —
detection, diagnosis, plan, verification, decision, outcome, seconds per workflow
stage, LLM use — and checks it against the scenario's ``expected.yaml``.
``drive`` runs every scenario at once (with a live ``table`` at a terminal).

Called by ``aegis.demo``, which composes the cluster and the operator; talks to the
cluster only through its API (``aegis.sim.client``), as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import time
from typing import Any, Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from aegis import models, review
from aegis.sim import client, scenarios

Approve = Literal["auto", "deny", "ask"]
TERMINAL = models.TERMINAL_PHASES


@dataclasses.dataclass
class Report:
    """What happened to one scenario's Incident, and whether that met the scenario's expected.yaml."""

    scenario: str
    namespace: str
    expected: scenarios.Expected
    stage: str = "waiting"
    detected: bool = False
    incident: str | None = None
    phase: str | None = None
    reason: str = ""
    diagnosis: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    verification: dict[str, Any] | None = None
    decision: str | None = None
    applied: bool = False
    healed: bool | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    llm_calls: int = 0
    llm: dict[str, Any] = dataclasses.field(default_factory=dict)  # status.llm totals: tokens, latency, sizes
    extra_incidents: list[str] = dataclasses.field(default_factory=list)
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    spec_at_detection: str | None = None
    workload_changed: bool | None = None
    error: str | None = None

    def checks(self) -> dict[str, Any]:
        category = (self.diagnosis or {}).get("category")
        outcome: bool | str
        if self.phase in ("Resolved",):
            outcome = self.expected.outcome == "heal"
        elif self.phase in ("Escalated",):
            outcome = self.expected.outcome == "escalate"
        elif self.phase == "Diagnosed":
            outcome = "not evaluated: remediation is not enabled (observe mode)"
        else:
            outcome = False
        kinds = {a["kind"] for a in self.actions}
        actions_ok = kinds <= set(self.expected.actions) if self.phase == "Resolved" else not self.applied
        return {
            "detected": self.detected,
            "category": category == self.expected.category,
            "outcome": outcome,
            "actions": actions_ok,
        }

    @property
    def met(self) -> bool:
        checks = self.checks()
        return bool(
            checks["detected"]
            and checks["category"]
            and checks["outcome"] is not False
            and checks["actions"]
            and not self.error
        )

    def as_json(self) -> dict[str, Any]:
        diagnosis = self.diagnosis or {}
        return {
            "scenario": self.scenario,
            "namespace": self.namespace,
            "detected": self.detected,
            "incident": self.incident,
            "phase": self.phase,
            "reason": self.reason,
            "diagnosis": {k: diagnosis.get(k) for k in ("category", "summary", "confidence", "source")}
            if diagnosis
            else None,
            "actions": self.actions,
            "verification": self.verification,
            "decision": self.decision,
            "applied": self.applied,
            "healed": self.healed,
            "timings": self.timings,
            "llm_calls": self.llm_calls,
            "llm": self.llm,
            "expected": dataclasses.asdict(self.expected),
            "checks": self.checks(),
            "met": self.met,
            "extra_incidents": self.extra_incidents,
            "attempts": self.attempts,
            "workload_changed": self.workload_changed,
            "error": self.error,
        }


async def _observe(
    api: client.SimClient, report: Report, approve: Approve, started: float, limit: float, console: Console
) -> None:
    """Follow the target's Incident into ``report`` until a final phase (or ``limit``), answering approvals."""
    expected = report.expected
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        items = await api.list("Incident", report.namespace)
        mine = [
            i
            for i in items
            if (i["spec"].get("target") or {}).get("kind") == expected.target_kind
            and i["spec"]["target"].get("name") == expected.target_name
        ]
        report.extra_incidents = sorted(i["metadata"]["name"] for i in items if i not in mine)
        if mine:
            incident = mine[-1]
            status = incident.get("status") or {}
            if not report.detected:
                report.detected = True
                report.timings["detect"] = round(time.monotonic() - started, 2)
                report.spec_at_detection = await _target_spec(api, incident)
            report.incident = incident["metadata"]["name"]
            report.phase = status.get("phase")
            report.reason = status.get("reason", "")
            report.diagnosis = status.get("diagnosis")
            report.stage = f"incident {report.phase}"
            plan = (status.get("plan") or {}).get("chosen") or {}
            report.actions = [{"kind": a.get("kind"), "target": a.get("target")} for a in plan.get("actions") or []]
            report.verification = status.get("verification")
            report.decision = (status.get("decision") or {}).get("outcome")
            report.applied = bool((status.get("outcome") or {}).get("applied"))
            report.healed = (status.get("outcome") or {}).get("healed")
            report.llm_calls = int((status.get("llm") or {}).get("calls") or 0)
            report.llm = {k: v for k, v in (status.get("llm") or {}).items() if k != "history"}
            history = (status.get("llm") or {}).get("history") or []
            if history:
                report.llm["maxPromptChars"] = max(int(c.get("promptChars") or 0) for c in history)
                report.llm["maxAnswerChars"] = max(int(c.get("answerChars") or 0) for c in history)
            if (
                report.phase == "AwaitingApproval"
                and (incident["spec"].get("approval") or {}).get("decision", "Pending") == "Pending"
            ):
                await _answer(api, incident, approve, console)
            report.attempts = list(status.get("attempts") or [])
            if report.phase in TERMINAL:
                report.workload_changed = (await _target_spec(api, incident)) != report.spec_at_detection
                report.timings.update(_stage_timings(status.get("timeline") or []))
                report.timings["total"] = round(time.monotonic() - started, 2)
                return
        await asyncio.sleep(0.25)
    report.error = f"no final phase within {limit:.0f}s (stage: {report.stage})"


async def _target_spec(api: client.SimClient, incident: dict[str, Any]) -> str | None:
    """The target's spec, to tell whether AEGIS changed the workload (a rejected fix must change nothing)."""
    target = incident["spec"]["target"]
    obj = await api.get(target["kind"], target["namespace"], target["name"])
    return json.dumps((obj or {}).get("spec"), sort_keys=True) if obj else None


def _stage_timings(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each workflow stage, from the Incident's timeline."""
    stamps = []
    for line in timeline:
        if line.get("stage") == "k8sgpt":
            continue  # notes about K8sGPT's reports, written beside the workflow: not a stage of it
        with contextlib.suppress(KeyError, ValueError):
            stamps.append((line["stage"], datetime.datetime.fromisoformat(line["at"].replace("Z", "+00:00"))))
    out: dict[str, float] = {}
    for (_, before), (stage, at) in itertools.pairwise(stamps):  # a node writes its line when it ends
        out[stage] = round(out.get(stage, 0.0) + (at - before).total_seconds(), 3)
    return out


async def _review_objects(
    api: client.SimClient, incident: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The live objects the fix changes ("Kind/name" -> object) and a Deployment's ReplicaSets, for the review."""
    objects: dict[str, dict[str, Any]] = {}
    replica_sets: list[dict[str, Any]] = []
    for kind, namespace, name in review.related_targets(incident):
        live = await api.get(kind, namespace, name)
        if live is None:
            continue
        objects[f"{kind}/{name}"] = live
        if kind == "Deployment":
            uid = live["metadata"].get("uid")
            replica_sets += [
                rs
                for rs in await api.list("ReplicaSet", namespace)
                if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])
            ]
    return objects, replica_sets


async def _answer(api: client.SimClient, incident: dict[str, Any], approve: Approve, console: Console) -> None:
    name = incident["metadata"]["name"]
    if approve == "ask":
        objects, replica_sets = await _review_objects(api, incident)
        console.print()
        # The screen of `aegis show`, wrapped to the terminal (this console does not wrap by default).
        console.print(review.screen(incident, objects, replica_sets=replica_sets), soft_wrap=False)
        question = f"Approve the fix for {incident['metadata']['namespace']}/{name}? \\[y/N] "
        answer = await asyncio.get_running_loop().run_in_executor(None, lambda: console.input(question))
        decision = "Approved" if answer.strip().lower() in ("y", "yes") else "Rejected"
    else:
        decision = "Approved" if approve == "auto" else "Rejected"
    await api.patch(
        "Incident",
        incident["metadata"]["namespace"],
        name,
        {"spec": {"approval": {"decision": decision, "reason": f"aegis demo --approve {approve}"}}},
    )


async def run_scenario(
    api: client.SimClient,
    scenario: scenarios.Scenario,
    report: Report,
    *,
    approve: Approve,
    limit: float,
    console: Console,
) -> None:
    """Apply the scenario (then its change once healthy) and follow it into ``report``; errors end up there too."""
    try:
        report.stage = "applying manifests"
        began = time.monotonic()
        await scenarios.apply(api, scenario.manifests, scenario.namespace)
        started = time.monotonic()
        if scenario.change:
            report.stage = "waiting until healthy"
            workloads = [d for d in scenario.manifests if d["kind"] in scenarios.WORKLOAD_KINDS]
            deadline = time.monotonic() + limit
            while True:
                states = [await api.get(d["kind"], scenario.namespace, d["metadata"]["name"]) for d in workloads]
                if all(scenarios.healthy(s) for s in states):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the manifests never became healthy, so the change was not applied")
                await asyncio.sleep(0.2)
            report.timings["healthy"] = round(time.monotonic() - began, 2)
            report.stage = "applying the change"
            await scenarios.apply(api, scenario.change, scenario.namespace)
            started = time.monotonic()
        report.stage = "waiting for K8sGPT and AEGIS"
        await _observe(api, report, approve, started, limit, console)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        report.stage = "error"


def table(reports: list[Report], final: bool) -> Table:
    """One row per scenario: its stage while running; at the end (``final``) whether it met its expected.yaml."""
    grid = Table(title="AEGIS demo" + (" — results" if final else ""), expand=False)
    for column in ("scenario", "namespace", "incident", "category (expected)", "phase"):
        grid.add_column(column, no_wrap=True)
    grid.add_column("result" if final else "stage")
    for report in reports:
        category = (report.diagnosis or {}).get("category") or "-"
        shown = category if category == report.expected.category else f"{category} ({report.expected.category})"
        if final:
            checks = report.checks()
            result = "[green]met[/green]" if report.met else f"[red]not met[/red] {report.error or ''}"
            if report.met and checks["outcome"] is not True:
                result = "[green]met[/green] (outcome pending)"
        else:
            result = report.stage
        grid.add_row(report.scenario, report.namespace, report.incident or "-", shown, report.phase or "-", result)
    return grid


async def drive(
    api: client.SimClient,
    loaded: list[scenarios.Scenario],
    reports: list[Report],
    *,
    approve: Approve,
    limit: float,
    console: Console,
    live: bool,
) -> None:
    """Run every scenario at once; ``live``: a table that updates in place, else one line as each ends."""
    tasks = [
        run_scenario(api, s, r, approve=approve, limit=limit, console=console)
        for s, r in zip(loaded, reports, strict=True)
    ]
    if not live:
        done = 0

        async def tracked(coro: Any, report: Report) -> None:
            nonlocal done
            await coro
            done += 1
            state = report.phase or report.error or report.stage
            console.print(f"[{done}/{len(reports)}] {report.scenario}: {state}")

        await asyncio.gather(*(tracked(t, r) for t, r in zip(tasks, reports, strict=True)))
        return
    with Live(table(reports, final=False), console=console, refresh_per_second=4, transient=True) as view:
        gathered = asyncio.gather(*tasks)
        while not gathered.done():
            view.update(table(reports, final=False))
            await asyncio.sleep(0.25)
        await gathered
        view.update(table(reports, final=False))
