"""Notifications: post to a webhook when a fix waits for approval and when an incident ends.

``build_message`` turns an Incident (the object as the API returns it, or the graph
state's ``incident`` dict) into one message: the incident, its target, phase and
reason, the diagnosis, the plan's actions, a unified diff of the change (from the
rendered patches and their pre-images) and the exact commands to approve or reject
it. ``payload`` shapes that message as AEGIS's generic JSON document or as a Slack
incoming-webhook payload. Every text is redacted (``aegis.redact``) before it leaves.

``Notifier`` delivers in the background: ``notify`` schedules a task and returns at
once, never raises and never blocks the workflow; a delivery is retried with
exponential back-off on connection errors, timeouts, 5xx and 429, and given up on
other 4xx. Webhook URLs are secrets (Slack's path is the credential): only their
scheme and host are ever logged.

Built by ``graph.runtime`` (one per operator, closed at shutdown) and called by the
``gate`` node (a fix waits for approval) and the ``report`` node (the incident ended).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

from aegis import approvals, config, redact, review

log = logging.getLogger(__name__)

Event = Literal["awaiting-approval", "ended"]
EVENTS: tuple[str, ...] = ("awaiting-approval", "ended")
SLACK_SECTION_LIMIT = 3000  # characters of one section block's text
SLACK_HEADER_LIMIT = 150  # characters of a header block's plain text
TRUNCATED = "\n… (truncated)"
_RETRY_STATUSES = frozenset({408, 425, 429})


# --- the message -----------------------------------------------------------------------------------


def _secret_name(name: Any) -> bool:
    """Whether ``name`` (an env var's, say) names a secret, by the redaction rules' own judgement."""
    probe = f"{name}=x"
    return isinstance(name, str) and redact.text(probe) != probe


def _masked(entry: dict[str, Any]) -> dict[str, Any]:
    """A {name, value} pair (an env var, a set-env action's params) with the value hidden when the name is secret."""
    if _secret_name(entry.get("name")) and isinstance(entry.get("value"), str):
        return {**entry, "value": redact.MASK}
    return entry


def _clean(value: Any) -> Any:
    """A patch or undo document as the fields it leaves: deletions (``None``, ``$patch: delete``) are absences;
    the values of secret-looking env vars are masked (a YAML ``value:`` line escapes text redaction)."""
    if isinstance(value, dict):
        value = _masked(value)
        out = {k: _clean(v) for k, v in value.items() if v is not None and not str(k).startswith("$")}
        return {k: v for k, v in out.items() if v != [] or value[k] == []}  # a list of deletions only: absent
    if isinstance(value, list):
        return [_clean(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _document(patch: Any) -> Any:
    """What a patch sets, as a document to diff: JSON patches become {path: value} (tests dropped, removals absent)."""
    if isinstance(patch, list) and all(isinstance(op, dict) and "op" in op for op in patch):
        return {op["path"]: _clean(op.get("value")) for op in patch if op.get("op") in ("add", "replace")}
    return _clean(patch)


def diff(results: list[Mapping[str, Any]]) -> str:
    """Unified diff of what each rendered action changes: its pre-image (``preImage.undo``) against its patch."""
    chunks: list[str] = []
    for result in results:
        action = result.get("action") or {}
        target = action.get("target") or {}
        label = f"{target.get('kind', '?')}/{target.get('name', '?')}"
        before = _document(((result.get("preImage") or result.get("pre_image") or {}) or {}).get("undo"))
        after = _document(result.get("patch"))
        chunks.append(
            review.unified_diff(before, after, f"{label} (live)", f"{label} ({action.get('kind', 'change')})")
        )
    return "\n".join(chunk for chunk in chunks if chunk)


def _describe(action: Mapping[str, Any]) -> str:
    target = action.get("target") or {}
    params = ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(',', ':'))}"
        for k, v in sorted(_masked(dict(action.get("params") or {})).items())
    )
    text = f"{action.get('kind', '?')} on {target.get('kind', '?')}/{target.get('name', '?')}"
    if action.get("risk"):
        text += f" (risk {action['risk']})"
    return text + (f": {params}" if params else "")


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact.text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def build_message(
    incident: Mapping[str, Any],
    event: str,
    *,
    results: list[Mapping[str, Any]] | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The message for ``event`` ("awaiting-approval" or "ended") about ``incident``, redacted.

    ``incident`` is the Incident object (metadata/spec/status) or the graph state's flat incident dict
    (name/namespace/target, optionally status). ``results`` are rendered ``ActionResult`` dumps; without
    them the diff comes from ``status.actions.results`` (what was applied), if any.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r} (expected one of {EVENTS})")
    meta = incident.get("metadata") or {}
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    name = str(meta.get("name") or incident.get("name") or "")
    namespace = str(meta.get("namespace") or incident.get("namespace") or "")
    target_ref = spec.get("target") or incident.get("target") or {}
    target = f"{target_ref.get('kind', '?')} {target_ref.get('namespace', namespace)}/{target_ref.get('name', '?')}"
    diagnosis = status.get("diagnosis") or {}
    plan = (status.get("plan") or {}).get("chosen") or {}
    if results is None:
        results = list((status.get("actions") or {}).get("results") or [])
    planned = [r.get("action") or {} for r in results] or list(plan.get("actions") or [])
    verification = status.get("verification") or {}
    phase = str(status.get("phase") or ("AwaitingApproval" if event == "awaiting-approval" else "Pending"))
    reason = str(status.get("reason") or (status.get("decision") or {}).get("reason") or "")
    if event == "awaiting-approval":
        title = f"A verified fix for {target} waits for approval"
        question = (status.get("decision") or {}).get("question")
        cmds: dict[str, str | None] = dict(approvals.commands(name, namespace, question))
    else:
        title = f"Incident {namespace}/{name} ended: {phase}"
        cmds = {"approve": None, "reject": None, "kubectl": None}
    shadow = ""
    if verification:
        shadow = "passed" if verification.get("passed") else "failed"
        if verification.get("baselineReproduced") is not None:
            shadow += f" (baseline {'reproduced' if verification['baselineReproduced'] else 'did not reproduce'})"
    message = {
        "event": event,
        "title": title,
        "incident": name,
        "namespace": namespace,
        "target": target,
        "phase": phase,
        "reason": reason,
        "category": str(diagnosis.get("category") or ""),
        "summary": str(diagnosis.get("summary") or ""),
        "confidence": diagnosis.get("confidence"),
        "actions": [_describe(a) for a in planned],
        "verification": shadow,
        "diff": diff(results),
        **cmds,
        # until when the fix waits for a decision (then the incident ends Expired); None once it ended
        "expiresAt": (status.get("decision") or {}).get("expiresAt") if event == "awaiting-approval" else None,
        "at": (now or datetime.datetime.now(tz=datetime.UTC)).isoformat(),
    }
    return _redacted(message)


# --- the formats -----------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn and plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so, never inside an ``&...;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(TRUNCATED)]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + TRUNCATED


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_SECTION_LIMIT)}}


def _code(text: str, limit: int = SLACK_SECTION_LIMIT) -> str:
    """``text`` in a ``` block whose whole length stays within ``limit``."""
    fence = "```"
    body = _escape(text)
    budget = limit - 2 * len(fence) - 2
    return f"{fence}\n{_clip(body, budget)}\n{fence}"


def slack(message: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook payload: a ``text`` fallback and ``blocks`` of mrkdwn sections."""
    e = _escape
    facts = [
        f"*Incident:* `{e(message['namespace'])}/{e(message['incident'])}`",
        f"*Target:* {e(message['target'])}",
        f"*Phase:* {e(message['phase'])}",
    ]
    if message.get("reason"):
        facts.append(f"*Reason:* {e(message['reason'])}")
    if message.get("verification"):
        facts.append(f"*Shadow verification:* {e(message['verification'])}")
    if message.get("expiresAt"):
        facts.append(f"*Decide by:* {e(str(message['expiresAt']))} (unanswered, the incident ends Expired)")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(message["title"], SLACK_HEADER_LIMIT)}},
        _section("\n".join(facts)),
    ]
    if message.get("category") or message.get("summary"):
        blocks.append(_section(f"*Diagnosis ({e(message.get('category') or 'unknown')}):* {e(message['summary'])}"))
    if message.get("actions"):
        blocks.append(_section("*Plan:*\n" + "\n".join(f"• {e(a)}" for a in message["actions"])))
    if message.get("diff"):
        blocks.append(_section(_code(message["diff"])))
    if message.get("approve"):
        blocks.append(
            _section(
                f"*Approve:* `{e(message['approve'])}`\n*Reject:* `{e(message['reject'])}`\n"
                f"*or with kubectl:*\n{_code(message['kubectl'])}"
            )
        )
    fallback = message["title"] + (f" — approve with: {message['approve']}" if message.get("approve") else "")
    if message.get("reason"):
        fallback += f" ({message['reason']})"
    return {"text": _clip(e(fallback), SLACK_SECTION_LIMIT), "blocks": blocks}


def generic(message: Mapping[str, Any]) -> dict[str, Any]:
    """AEGIS's JSON document: the message with its stable keys."""
    return dict(message)


def payload(message: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        return slack(message)
    if fmt == "generic":
        return generic(message)
    raise ValueError(f"unknown notification format {fmt!r}")


# --- delivery --------------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """Only the scheme and host (and port) of a webhook URL: its path, query and user info can be credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class Notifier:
    """Posts messages to ``settings.notify_url`` in the background; a no-op when no URL is configured."""

    def __init__(self, settings: config.Settings, *, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        self._url = str(settings.notify_url) if settings.notify_url else None
        self.format = settings.notify_format
        self.retries = settings.notify_retries
        self.timeout = settings.notify_timeout_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[bool]] = set()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        where = safe_url(self._url) if self._url else "off"
        return f"<Notifier {self.format} {where}>"

    @property
    def enabled(self) -> bool:
        return self._url is not None

    @property
    def where(self) -> str:
        """The webhook as it may be logged (scheme and host only)."""
        return safe_url(self._url) if self._url else "nowhere"

    def notify(
        self, incident: Mapping[str, Any], event: str, *, results: list[Mapping[str, Any]] | None = None
    ) -> asyncio.Task[bool] | None:
        """Schedule delivery of the message for ``event`` and return at once (the task, or None if nothing was sent).

        Never raises: a message that cannot be built or scheduled is logged and dropped.
        """
        if self._url is None:
            return None
        label = "?"
        try:
            message = build_message(incident, event, results=results)
            label = f"{event} {message['namespace']}/{message['incident']}"
            body = payload(message, self.format)
            task = asyncio.get_running_loop().create_task(self._deliver(body, label), name=f"aegis:notify:{label}")
        except Exception as exc:
            log.warning("notification %s not sent: %s", label, self._scrub(exc))
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (a grace period, not a deadline)
        """Wait (up to ``timeout`` seconds) for pending deliveries; True when none is left."""
        tasks = set(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not any(not task.done() for task in tasks)

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Give pending deliveries ``timeout`` seconds, cancel what is left, close the HTTP session."""
        if not await self.drain(timeout):
            left = [task for task in self._tasks if not task.done()]
            log.warning("%d notification(s) to %s still pending at shutdown: dropped", len(left), self.where)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"User-Agent": "aegis-operator"}
            )
        return self._session

    def _scrub(self, exc: BaseException) -> str:
        """An exception as loggable text: the URL's secret parts and anything secret-looking removed."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._url:
            parts = urllib.parse.urlsplit(self._url)
            text = text.replace(self._url, self.where)
            for secret in (parts.path, parts.query, parts.username, parts.password):
                if secret and secret != "/":
                    text = text.replace(secret, "…")
        return redact.text(text)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2**attempt)
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, float(retry_after.strip()))
        return min(delay, self.max_backoff)

    async def _deliver(self, body: dict[str, Any], label: str) -> bool:
        """POST ``body``; retry transient failures with exponential back-off. True when delivered; never raises."""
        if self._url is None:
            return False
        attempts = self.retries + 1
        for attempt in range(attempts):
            retry_after: str | None = None
            try:
                async with self._client().post(self._url, json=body) as response:
                    await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem, retry = self._scrub(exc), True
            except Exception as exc:  # a bug or an unexpected library error: give up, never raise
                problem, retry = self._scrub(exc), False
            else:
                if status < 300:
                    self.delivered += 1
                    if attempt:
                        log.info("notification %s delivered to %s after %d attempts", label, self.where, attempt + 1)
                    return True
                problem = f"HTTP {status}"
                retry = status >= 500 or status in _RETRY_STATUSES
            last = attempt == attempts - 1 or not retry
            log.warning(
                "notification %s to %s failed (attempt %d/%d): %s%s",
                label,
                self.where,
                attempt + 1,
                attempts,
                problem,
                "; giving up" if last else "; retrying",
            )
            if last:
                break
            await asyncio.sleep(self._delay(attempt, retry_after))
        self.failed += 1
        return False
