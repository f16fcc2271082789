"""The evidence as prompt text: most telling lines first, redacted, within a character budget.

CPU-hosted models are slow on long prompts, and most of a workload's evidence is
noise. Sections come in the order a human would read them (what is failing, the
containers' states, warning events, the log lines that look like errors, then the
rest), each line is cut to a sane width, repeated lines are dropped, and filling
stops at the budget with a note saying what was left out. Every line passes through
``aegis.redact`` on the way (the gatherer already masked the values of the
workload's Secrets). Called by ``aegis.llm.advisor``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aegis import k8sgpt, models, redact

LINE_WIDTH = 300
_VOLATILE = re.compile(r"(restarts=|\(x|status\.readyReplicas: |status\.unavailableReplicas: )\d+")
_ERRORISH = re.compile(
    r"error|exception|fatal|panic|fail|refused|denied|not found|no such|invalid|missing|cannot|can't|unable|"
    r"killed|timeout|timed out|traceback|exit",
    re.I,
)


def _line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= LINE_WIDTH else flat[: LINE_WIDTH - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def sections(evidence: models.Evidence) -> list[tuple[str, list[str]]]:
    """(title, lines) in reading order; the budget later keeps a prefix of each, in this order."""
    out: list[tuple[str, list[str]]] = []
    t = evidence.target
    summary = dict(evidence.target_summary)
    head = [f"{t.kind} {t.namespace}/{t.name}" + ("" if evidence.target_found else " (NOT FOUND)")]
    for key in ("conditions", "status.replicas", "status.readyReplicas", "status.unavailableReplicas", "revision"):
        if key in summary:
            head.append(f"{key}: {_compact(summary.pop(key))}")
    for container in summary.pop("containers", []) or []:
        head.append(f"container spec: {_compact(container)}")
    for key, value in summary.items():
        if key not in ("kind", "name", "generation"):
            head.append(f"{key}: {_compact(value)}")
    out.append(("target", head))

    states: list[str] = []
    for pod in evidence.pods:
        where = f"pod {pod.name} phase={pod.phase or '?'}" + (" TERMINATING (going away, not judged)" * pod.terminating)
        if pod.scheduled_reason:
            states.append(f"{where} not scheduled: {pod.scheduled_reason}: {pod.scheduled_message}")
        for c in pod.containers:
            parts = [f"{where} container {c.name}{' (init)' if c.init else ''} image={c.image}"]
            parts.append(f"state={c.state or '?'}" + (f" reason={c.reason}" if c.reason else ""))
            if c.message:
                parts.append(f"message={c.message}")
            if c.exit_code is not None:
                parts.append(f"exitCode={c.exit_code}")
            parts.append(f"ready={c.ready} restarts={c.restart_count}")
            if c.last_reason:
                parts.append(f"lastTerminated={c.last_reason} exitCode={c.last_exit_code}")
            if c.memory_limit or c.memory_request:
                parts.append(f"memory request={c.memory_request} limit={c.memory_limit}")
            if c.ports:
                parts.append(f"ports={_compact(c.ports)}")
            if c.env_names or c.env_from:
                parts.append(f"env={','.join(c.env_names)}")
                if c.env_from:
                    parts.append(f"envFrom={','.join(c.env_from)}")
            states.append(" ".join(parts))
    out.append(("pods", states))

    events = sorted(evidence.events, key=lambda e: (e.type != "Warning", e.last_seen), reverse=False)
    out.append(("events", [f"{e.type} {e.reason} {e.object} (x{e.count}): {e.message}" for e in events]))

    errors: list[str] = []
    rest: list[str] = []
    for source, lines in evidence.logs.items():
        for line in lines:
            (errors if _ERRORISH.search(line) else rest).append(f"[{source}] {line}")
    out.append(("log lines that look like errors", errors))

    if evidence.service is not None:
        s = evidence.service
        out.append(
            (
                "service",
                [
                    f"Service {s.name} selector={_compact(s.selector)} ports={_compact(s.ports)} "
                    f"readyEndpoints={s.ready_endpoints} notReadyEndpoints={s.not_ready_endpoints} "
                    f"matchingPods={','.join(s.matching_pods) or 'none'}",
                    *[
                        f"pod in namespace: {p.name} labels={_compact(p.labels)} "
                        f"ports={_compact([port for c in p.containers for port in c.ports])}"
                        for p in evidence.namespace_pods
                    ],
                ],
            )
        )
    if evidence.claims:
        out.append(
            (
                "claims",
                [
                    f"PersistentVolumeClaim {c.name} phase={c.phase} storageClass={c.storage_class} "
                    f"storageClassExists={c.storage_class_exists} size={c.size}"
                    for c in evidence.claims
                ],
            )
        )
    out.append(("other log lines (most recent last)", rest[-20:]))
    out.append(("K8sGPT reported (untrusted)", list(evidence.hints)))
    if evidence.gaps:
        out.append(("could not be gathered", list(evidence.gaps)))
    return out


def render(evidence: models.Evidence, budget: int, nonce: str = "") -> str:
    """The evidence as text of at most about ``budget`` characters, every line redacted.

    Each section first gets its first lines round-robin, so a long log cannot crowd
    out the events; what did not fit is counted at the end. ``nonce`` (the prompt's
    delimiter) is removed from the data so the evidence cannot close its own section.
    """
    prepared: list[tuple[str, list[str]]] = []
    for title, lines in sections(evidence):
        seen: set[str] = set()
        kept = []
        for raw in lines:
            line = _line(redact.text(raw))
            if nonce:
                line = line.replace(nonce, "")
            if line and line not in seen:
                seen.add(line)
                kept.append(line)
        if kept:
            prepared.append((title, kept))
    chosen: dict[str, list[str]] = {title: [] for title, _ in prepared}
    used = sum(len(title) + 6 for title, _ in prepared)
    left_out = 0
    depth = 0
    more = True
    while more:
        more = False
        for title, lines in prepared:
            if depth < len(lines):
                more = True
                if used + len(lines[depth]) + 1 <= budget:
                    chosen[title].append(lines[depth])
                    used += len(lines[depth]) + 1
                else:
                    left_out += 1
        depth += 1
    parts = [f"## {title}\n" + "\n".join(chosen[title]) for title, _ in prepared if chosen[title]]
    if left_out:
        parts.append(f"({left_out} more line(s) left out to keep the prompt small)")
    return "\n".join(parts)


def key(evidence_text: str) -> str:
    """A digest of the evidence that ignores what changes between identical failures (pod hashes, times, counts)."""
    normal = "\n".join(_VOLATILE.sub(r"\1<n>", k8sgpt.normalize_text(line)) for line in evidence_text.splitlines())
    return hashlib.sha256(normal.encode()).hexdigest()[:24]
