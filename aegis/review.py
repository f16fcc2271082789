"""Incidents for people: the rows of ``aegis incidents`` and the review screen of ``aegis show``.

Pure rendering, no I/O: it takes Incident objects as the API returns them (dicts) and,
for the change a fix makes, the live objects its actions target (read by the caller).
The review screen is what a human needs to decide: the diagnosis and its evidence,
the chosen plan as a unified diff of the workload's YAML, the shadow verification,
the policy's verdict and why, the outcome, the timeline, and the exact commands to
approve or reject.

The diff comes from the action results the workflow recorded (``status.actions``,
once applying started) or, before that, from rendering the chosen plan against the
live object with ``aegis.actions.render`` — the same function the apply stage uses,
so the preview is the change that would be made. The patch is applied locally to show
the object before and after (strategic merge for the list shapes AEGIS's actions
produce, JSON merge patch, JSON patch); without the live object, the changed fields'
pre-image is diffed against the patch.

Called by ``aegis.cli`` (incidents, show) and ``aegis.demo`` (the y/N prompt).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jsonpatch
import yaml
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from aegis import actions, approvals, expiry, models

AWAITING = "AwaitingApproval"

PHASE_MEANINGS: dict[str, str] = {
    "Pending": "the incident was opened; its workflow has not started yet",
    "Diagnosing": "AEGIS is gathering evidence and diagnosing the problem",
    "Diagnosed": "diagnosed only: the namespace is in observe mode, nothing will be changed",
    "Verifying": "a candidate fix is being rehearsed in a shadow namespace",
    "AwaitingApproval": "a verified fix is waiting for a human's decision",
    "Applying": "the approved fix is being applied and its effect confirmed",
    "Resolved": "the fix was applied and the workload healed",
    "RolledBack": "the fix was applied, did not heal the workload, and was rolled back",
    "Rejected": "the fix was rejected; nothing was changed",
    "Escalated": "AEGIS could not take a fix forward; a human must act",
    "Expired": "the approval request expired before anyone decided",
    "Failed": "the workflow failed",
}
_PHASE_STYLES: dict[str, str] = {
    "AwaitingApproval": "bold yellow",
    "Resolved": "green",
    "Diagnosed": "cyan",
    "RolledBack": "red",
    "Rejected": "red",
    "Escalated": "red",
    "Expired": "red",
    "Failed": "red",
}
# Metadata that says nothing about what a change does; left out of the before/after YAML.
_NOISY_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")
_NOISY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "aegis.dev/applied")
# Strategic-merge list keys for the lists AEGIS's actions patch (the API's x-kubernetes-patch-merge-key).
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
}


# --- time ----------------------------------------------------------------------------------------


parse_time = expiry.parse_time  # one reader of the API's timestamps


def duration(seconds: float) -> str:
    """A short human duration, as kubectl prints ages: 42s, 5m10s, 3h5m, 2d4h."""
    total = max(int(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 10:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours and days < 7 else f"{days}d"


def _since(at: datetime.datetime | None, now: datetime.datetime) -> str:
    return duration((now - at).total_seconds()) if at else "-"


def _stamp(at: datetime.datetime | None) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def waiting_since(incident: Mapping[str, Any]) -> datetime.datetime | None:
    """When the incident began to wait for a human (None unless it is AwaitingApproval); see ``aegis.expiry``."""
    return expiry.waiting_since(incident)


# --- the table -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One incident in the list."""

    namespace: str
    name: str
    target: str  # Kind/name
    phase: str
    category: str
    waiting_since: datetime.datetime | None
    created: datetime.datetime | None

    def cells(self, now: datetime.datetime) -> tuple[str, ...]:
        """namespace, name, target, phase, category, waiting, age — as printed."""
        waiting = _since(self.waiting_since, now) if self.waiting_since else "-"
        return (self.namespace, self.name, self.target, self.phase, self.category, waiting, _since(self.created, now))


def row(incident: Mapping[str, Any]) -> Row:
    meta = incident.get("metadata") or {}
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    target = spec.get("target") or {}
    return Row(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        target=f"{target.get('kind', '?')}/{target.get('name', '?')}",
        phase=str(status.get("phase") or "Pending"),
        category=str((status.get("diagnosis") or {}).get("category") or "-"),
        waiting_since=waiting_since(incident),
        created=parse_time(meta.get("creationTimestamp")),
    )


def rows(incidents: Iterable[Mapping[str, Any]]) -> list[Row]:
    """The rows of ``aegis incidents``, by namespace and name."""
    return sorted((row(i) for i in incidents), key=lambda r: (r.namespace, r.name))


def table(items: Sequence[Row], now: datetime.datetime, *, show_namespace: bool = True) -> Table:
    """The incidents as a kubectl-like table (the namespace column only when listing several namespaces)."""
    out = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAMESPACE", "NAME", "TARGET", "PHASE", "CATEGORY", "WAITING", "AGE"]
    first = 0 if show_namespace else 1
    for column in columns[first:]:
        out.add_column(column, no_wrap=True)
    for item in items:
        cells = [Text(cell) for cell in item.cells(now)]
        cells[3].stylize(_PHASE_STYLES.get(item.phase, ""))
        out.add_row(*cells[first:])
    return out


# --- the change a fix makes ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    """One action of the plan: what it is, and the unified diff of its target (or why there is none)."""

    title: str
    diff: str = ""
    note: str = ""


def related_targets(incident: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the objects the plan changes: what a caller should read for ``changes``."""
    status = incident.get("status") or {}
    recorded = (status.get("actions") or {}).get("results") or []
    listed = [r.get("action") or {} for r in recorded] or list(
        (((status.get("plan") or {}).get("chosen") or {}).get("actions")) or []
    )
    out: list[tuple[str, str, str]] = []
    for action in listed:
        target = action.get("target") or {}
        key = (str(target.get("kind")), str(target.get("namespace")), str(target.get("name")))
        if None not in target.values() and key not in out:
            out.append(key)
    return out


def strategic_merge(target: Any, patch: Any) -> Any:
    """A strategic merge patch, for previews: dicts merge, null deletes, the known lists merge on their keys
    (with ``$patch: delete`` items); other lists are replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            out[key] = _merge_list(key, out.get(key), value)
        else:
            out[key] = strategic_merge(out.get(key), value)
    return out


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    keys = _MERGE_KEYS.get(field, ())
    key = next((k for k in keys if all(isinstance(i, dict) and k in i for i in patch)), None)
    if key is None or not isinstance(current, list):
        return [strategic_merge({}, item) if isinstance(item, dict) else copy.deepcopy(item) for item in patch]
    out = copy.deepcopy(current)
    for item in patch:
        index = next((n for n, e in enumerate(out) if isinstance(e, dict) and e.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(strategic_merge({}, item))
        else:
            out[index] = strategic_merge(out[index], item)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def apply_patch(obj: dict[str, Any], patch: Any, patch_type: str) -> dict[str, Any]:
    """``obj`` as it would be after ``patch`` (a local preview; raises ValueError when the patch does not fit)."""
    if patch_type == "strategic":
        return strategic_merge(obj, patch)
    if patch_type == "merge":
        return merge_patch(obj, patch)
    if patch_type == "json":
        try:
            return jsonpatch.apply_patch(copy.deepcopy(obj), patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ValueError(f"the JSON patch does not fit the object: {exc}") from exc
    if patch_type == "recreate":
        return {**copy.deepcopy(obj), "spec": copy.deepcopy((patch or {}).get("spec"))}
    raise ValueError(f"unknown patch type {patch_type!r}")


def clean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as a reviewer reads it: no status, no server bookkeeping in metadata."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k not in _NOISY_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOISY_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if meta:
        out["metadata"] = meta
    return out


def _yaml_lines(obj: Any) -> list[str]:
    if obj is None or obj == {}:
        return []  # nothing there: every line of the other side is an addition (or a removal)
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1000, allow_unicode=True).splitlines()


def unified_diff(before: Any, after: Any, before_label: str, after_label: str) -> str:
    """A unified diff of two objects' YAML (keys sorted, as ``kubectl get -o yaml`` prints them)."""
    lines = difflib.unified_diff(
        _yaml_lines(before), _yaml_lines(after), fromfile=before_label, tofile=after_label, lineterm=""
    )
    return "\n".join(lines)


def preview_results(
    incident: Mapping[str, Any],
    objects: Mapping[str, Mapping[str, Any]],
    *,
    replica_sets: Sequence[dict[str, Any]] = (),
    now: datetime.datetime | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The chosen plan rendered against the live objects ("Kind/name" -> object), as the apply stage would.

    Returns (ActionResult dicts, notes for the actions that could not be rendered).
    """
    chosen = (((incident.get("status") or {}).get("plan") or {}).get("chosen")) or {}
    context = actions.Context(replica_sets=tuple(replica_sets), now=now or datetime.datetime.now(tz=datetime.UTC))
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    for raw in chosen.get("actions") or []:
        try:
            action = models.Action.model_validate(raw)
        except ValueError as exc:
            notes.append(f"{raw.get('kind')}: not a valid action ({exc})")
            continue
        live = objects.get(f"{action.target.kind}/{action.target.name}")
        if live is None:
            notes.append(f"{action.kind}: {action.target} could not be read, so its change cannot be shown")
            continue
        try:
            results.append(actions.render(action, dict(live), context).dump())
        except actions.ActionError as exc:
            notes.append(f"{action.kind} no longer fits {action.target}: {exc}")
    return results, notes


def changes(
    incident: Mapping[str, Any],
    objects: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    replica_sets: Sequence[dict[str, Any]] = (),
    now: datetime.datetime | None = None,
) -> list[Change]:
    """Each action of the plan with the unified diff of what it changes on its target.

    ``objects`` maps "Kind/name" to the live objects of ``related_targets(incident)``. Recorded action
    results (``status.actions``) are used when present; otherwise the chosen plan is rendered against
    the live objects. An applied change (not rolled back) is shown from its pre-image to the live object.
    """
    objects = objects or {}
    status = incident.get("status") or {}
    recorded = list((status.get("actions") or {}).get("results") or [])
    notes: list[str] = []
    if recorded:
        results = recorded
    else:
        results, notes = preview_results(incident, objects, replica_sets=replica_sets, now=now)
    rolled_back = status.get("phase") == "RolledBack" or bool((status.get("outcome") or {}).get("rolledBack"))
    out = [_change(r, objects, applied=bool(r.get("applied")) and not rolled_back) for r in results]
    return out + [Change(title="", note=note) for note in notes]


def _change(result: Mapping[str, Any], objects: Mapping[str, Mapping[str, Any]], *, applied: bool) -> Change:
    action = result.get("action") or {}
    target = action.get("target") or {}
    label = f"{target.get('kind')}/{target.get('name')}"
    params = action.get("params") or {}
    title = f"{action.get('kind')} on {target.get('kind')} {target.get('namespace')}/{target.get('name')}"
    title += f" (risk {action.get('risk', '?')})" + (f" {_params(params)}" if params else "")
    patch_type = str(result.get("patchType") or "strategic")
    undo = (result.get("preImage") or {}).get("undo")
    live = objects.get(label)
    if live is not None:
        try:
            if applied:
                before, after = apply_patch(dict(live), undo, patch_type), dict(live)
                labels = (f"{label} (before the fix)", f"{label} (now, with the fix)")
            else:
                before, after = dict(live), apply_patch(dict(live), result.get("patch"), patch_type)
                labels = (f"{label} (live)", f"{label} (with the fix)")
            diff = unified_diff(clean(before), clean(after), *labels)
            return Change(title=title, diff=diff, note="" if diff else "no difference to the live object")
        except (ValueError, TypeError) as exc:
            note = f"the patch could not be previewed on the live object ({exc}); showing the fields it changes"
    else:
        note = "the live object was not available; showing the fields the fix changes"
    diff = unified_diff(undo, result.get("patch"), f"{label} (pre-image of the changed fields)", f"{label} (patch)")
    return Change(title=title, diff=diff, note=note)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


# --- the review screen ---------------------------------------------------------------------------


def commands(incident: Mapping[str, Any]) -> list[str]:
    """The exact commands that approve or reject this incident's fix."""
    meta = incident.get("metadata") or {}
    question = ((incident.get("status") or {}).get("decision") or {}).get("question")
    return list(approvals.commands(str(meta.get("name")), str(meta.get("namespace")), question).values())


def _heading(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _field(label: str, value: str | Text) -> Padding:
    text = Text(f"{label}: ", style="bold")
    text.append(value if isinstance(value, Text) else Text(str(value)))
    return Padding(text, (0, 0, 0, 2), expand=False)


def _bullets(lines: Iterable[Any]) -> list[Padding]:
    return [Padding(Text(f"- {line}"), (0, 0, 0, 4), expand=False) for line in lines]


def _yes_no(value: Any) -> Text:
    if value is None:
        return Text("not known", style="dim")
    return Text("yes", style="green") if value else Text("no", style="red")


def diff_text(diff: str) -> Text:
    """A unified diff, coloured line by line (plain text when the output is not a terminal)."""
    out = Text()
    for line in diff.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        out.append("    " + line + "\n", style=style)
    out.rstrip()
    return out


def screen(
    incident: Mapping[str, Any],
    objects: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    replica_sets: Sequence[dict[str, Any]] = (),
    now: datetime.datetime | None = None,
) -> Group:
    """The review screen of one incident (for ``aegis show`` and the demo's approval prompt)."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    meta = incident.get("metadata") or {}
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    target = spec.get("target") or {}
    parts: list[RenderableType] = []

    title = Text(f"Incident {meta.get('namespace')}/{meta.get('name')}", style="bold")
    parts.append(title)
    parts.append(_field("target", f"{target.get('kind')} {target.get('namespace')}/{target.get('name')}"))
    phase_text = Text(phase, style=_PHASE_STYLES.get(phase, "bold"))
    phase_text.append(f" — {PHASE_MEANINGS.get(phase, 'unknown phase')}", style="")
    parts.append(_field("phase", phase_text))
    if status.get("reason"):
        parts.append(_field("reason", str(status["reason"])))
    created = parse_time(meta.get("creationTimestamp"))
    parts.append(_field("opened", f"{_stamp(created)} ({_since(created, now)} ago)"))
    waiting = waiting_since(incident)
    if waiting:
        parts.append(_field("waiting for a decision since", f"{_stamp(waiting)} ({_since(waiting, now)})"))
    approval = spec.get("approval") or {}
    if approval.get("decision") and approval.get("decision") != "Pending":
        answer = str(approval["decision"]) + (f": {approval['reason']}" if approval.get("reason") else "")
        parts.append(_field("answer in spec.approval", answer))

    parts += _diagnosis(status)
    parts += _plan(incident, objects, replica_sets=replica_sets, now=now)
    parts += _verification(status)
    parts += _decision(status, now)
    parts += _outcome(status)
    parts += _timeline(status)
    if phase == AWAITING:
        parts.append(_heading("Decide"))
        parts += [Text(f"  {line}", style="bold") for line in commands(incident)]
        parts.append(
            Text("  identity: recorded by the API server (or 'unverified' where no admission webhook runs)", "dim")
        )
    return Group(*parts)


def _diagnosis(status: Mapping[str, Any]) -> list[RenderableType]:
    diagnosis = status.get("diagnosis") or {}
    out: list[RenderableType] = [_heading("Diagnosis")]
    if not diagnosis:
        return [*out, Text("  not diagnosed yet", style="dim")]
    how = f"confidence {diagnosis.get('confidence', '?')}, from {diagnosis.get('source', '?')}"
    if diagnosis.get("rule"):
        how += f": {diagnosis['rule']}"
    out.append(_field("category", f"{diagnosis.get('category', 'unknown')} ({how})"))
    out.append(_field("summary", str(diagnosis.get("summary", ""))))
    if diagnosis.get("explanation"):
        out.append(_field("explained", str(diagnosis["explanation"])))
    evidence = diagnosis.get("evidence") or []
    if evidence:
        out.append(Text("  evidence:", style="bold"))
        out += _bullets(evidence)
    return out


def _plan(
    incident: Mapping[str, Any],
    objects: Mapping[str, Mapping[str, Any]] | None,
    *,
    replica_sets: Sequence[dict[str, Any]],
    now: datetime.datetime,
) -> list[RenderableType]:
    status = incident.get("status") or {}
    plan = status.get("plan") or {}
    chosen = plan.get("chosen") or {}
    out: list[RenderableType] = [_heading("Fix")]
    recorded = (status.get("actions") or {}).get("results")
    if not chosen and not recorded:
        out.append(Text("  no verified fix", style="dim"))
    else:
        if chosen:
            label = f"plan #{chosen.get('rank', '?')} ({chosen.get('source', 'rules')})"
            out.append(_field(label, str(chosen.get("rationale", ""))))
        for change in changes(incident, objects, replica_sets=replica_sets, now=now):
            if change.title:
                out.append(Text(f"  {change.title}", style="bold"))
            if change.note:
                out.append(Text(f"    {change.note}", style="dim"))
            if change.diff:
                out.append(diff_text(change.diff))
    others = plan.get("candidates") or []
    if others:
        out.append(Text("  other candidates (not verified):", style="bold"))
        out += _bullets(
            f"#{c.get('rank', '?')} {', '.join(str(a.get('kind')) for a in c.get('actions') or [])}: "
            f"{c.get('rationale', '')}"
            for c in others
        )
    dropped = plan.get("dropped") or []
    if dropped:
        out.append(Text("  dropped:", style="bold"))
        out += _bullets(d if isinstance(d, str) else (d.get("reason") or str(d)) for d in dropped)
    return out


def _verification(status: Mapping[str, Any]) -> list[RenderableType]:
    verification = status.get("verification") or {}
    out: list[RenderableType] = [_heading("Shadow verification")]
    if not verification:
        return [*out, Text("  not verified", style="dim")]
    passed = Text("passed", style="green") if verification.get("passed") else Text("failed", style="red")
    out.append(_field("result", passed))
    out.append(_field("baseline reproduced the failure", _yes_no(verification.get("baselineReproduced"))))
    out.append(_field("candidate healthy over the stability window", _yes_no(verification.get("candidateHealthy"))))
    if verification.get("shadowNamespace"):
        out.append(_field("shadow namespace", str(verification["shadowNamespace"])))
    details = verification.get("details") or []
    if details:
        out.append(Text("  details:", style="bold"))
        out += _bullets(details)
    attempts = status.get("attempts") or []
    if len(attempts) > 1:
        out.append(Text("  attempts:", style="bold"))
        out += _bullets(
            f"#{a.get('rank', '?')} {', '.join(map(str, a.get('actions') or []))}: "
            f"{'passed' if a.get('passed') else 'failed'}"
            for a in attempts
        )
    return out


_VERDICTS = {
    "auto": "auto — policy approves without asking",
    "ask": "ask — a human decides",
    "refuse": "refuse — policy does not allow this fix",
    "observe": "observe — diagnose only",
}


def _decision(status: Mapping[str, Any], now: datetime.datetime) -> list[RenderableType]:
    decision = status.get("decision") or {}
    out: list[RenderableType] = [_heading("Policy")]
    if not decision:
        return [*out, Text("  no verdict yet", style="dim")]
    verdict = str(decision.get("verdict", "?"))
    out.append(_field("verdict", _VERDICTS.get(verdict, verdict)))
    out.append(_field("why", str(decision.get("reason") or "-")))
    outcome = str(decision.get("outcome", "pending"))
    if decision.get("by"):
        verified = "identity verified" if decision.get("identityVerified") else "identity unverified"
        outcome += f" by {decision['by']} ({verified})"
    at = parse_time(decision.get("at"))
    out.append(_field("decision", outcome + (f" at {_stamp(at)}" if at else "")))
    expires = parse_time(decision.get("expiresAt"))
    if expires and decision.get("outcome", "pending") == "pending":
        left = f"in {duration((expires - now).total_seconds())}" if expires > now else "now"
        out.append(_field("expires at", f"{_stamp(expires)} ({left}; unanswered, it ends Expired, nothing applied)"))
    return out


def _outcome(status: Mapping[str, Any]) -> list[RenderableType]:
    outcome = status.get("outcome") or {}
    if not outcome:
        return []
    out: list[RenderableType] = [_heading("Outcome")]
    out.append(_field("applied", _yes_no(outcome.get("applied"))))
    if outcome.get("applied"):
        out.append(_field("healed", _yes_no(outcome.get("healed"))))
        out.append(_field("rolled back", _yes_no(outcome.get("rolledBack"))))
    if outcome.get("reason"):
        out.append(_field("reason", str(outcome["reason"])))
    return out


def _timeline(status: Mapping[str, Any]) -> list[RenderableType]:
    lines = status.get("timeline") or []
    out: list[RenderableType] = [_heading("Timeline")]
    if not lines:
        return [*out, Text("  empty", style="dim")]
    grid = Table.grid(padding=(0, 2), pad_edge=True)
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for line in lines:
        at = parse_time(line.get("at"))
        grid.add_row(
            Text(at.strftime("%H:%M:%S") if at else "-"),
            Text(str(line.get("stage", ""))),
            Text(str(line.get("message", ""))),
        )
    out.append(grid)
    return out
