"""The advisor: asks the local Ollama model to diagnose, propose or explain, and checks what it says.

Every call goes through ``langchain-ollama``'s ``ChatOllama`` with structured output
(the JSON schema of ``aegis.llm.answers`` sent as ``format``), a client timeout and an
overall deadline, on the event loop without blocking it. The prompt carries only
redacted, budgeted evidence inside a per-call delimiter that the evidence cannot
forge. A malformed answer gets one repair attempt; then the call counts as failed.
Failures never raise: they come back as an ``Advice`` with the reason, and the
caller keeps the rules' answer or escalates. Every call (cached or not) is recorded
with its sizes, tokens and latency for the Incident and the demo, and counted in the
operator's Prometheus metrics (``aegis.metrics``: calls, failures by reason, latency,
tokens, calls queued for a slot) when a ``Metrics`` is given.

Built by ``graph.runtime`` (one per operator); called by the ``diagnose`` and ``propose`` nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx
import pydantic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from aegis import actions, config, models, redact
from aegis import metrics as aegis_metrics
from aegis.llm import anonymize, answers, cache, digest, prompts

log = logging.getLogger(__name__)
T = TypeVar("T")
ChatFactory = Callable[[config.Settings, int], BaseChatModel]
ANSWER_TOKENS = {"diagnose": 512, "propose": 1024, "explain": 400}


@dataclasses.dataclass
class Call:
    """One question to the model, as recorded on the Incident (``status.llm.history``)."""

    purpose: str
    model: str
    ok: bool
    cached: bool = False
    error: str = ""
    prompt_chars: int = 0
    answer_chars: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    repaired: bool = False

    def dump(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "model": self.model,
            "ok": self.ok,
            "cached": self.cached,
            "error": self.error,
            "promptChars": self.prompt_chars,
            "answerChars": self.answer_chars,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "latencyMs": self.latency_ms,
            "repaired": self.repaired,
        }


@dataclasses.dataclass
class Advice(Generic[T]):
    """The model's validated answer (``None`` when there is none, with ``error`` saying why)."""

    value: T | None
    calls: list[Call]
    error: str = ""
    dropped: list[str] = dataclasses.field(default_factory=list)


def ollama_chat(settings: config.Settings, answer_tokens: int) -> BaseChatModel:
    """The production chat model: ChatOllama with a timeout (the library has none by default)."""
    from langchain_ollama import ChatOllama  # imported on first use: the operator starts fast without it

    return ChatOllama(
        base_url=str(settings.ollama_url).rstrip("/"),
        model=settings.ollama_model,
        temperature=0,
        num_ctx=settings.llm_num_ctx,
        num_predict=answer_tokens,
        client_kwargs={"timeout": settings.llm_timeout_seconds},
        validate_model_on_init=False,
    )


class Busy(Exception):
    """Every LLM slot stayed taken for too long: the rules' answer stands for this incident."""


def describe_failure(exc: BaseException, settings: config.Settings) -> str:
    """A failed call in words an operator can act on."""
    url = str(settings.ollama_url).rstrip("/")
    if isinstance(exc, Busy):
        return str(exc)
    if isinstance(exc, httpx.ConnectError):
        return f"Ollama is unreachable at {url} (run `aegis doctor`)"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"Ollama gave no answer within {settings.llm_timeout_seconds:g}s"
    status = getattr(exc, "status_code", None)
    if status is not None:
        text = str(getattr(exc, "error", "") or exc)[:200]
        if status == 404:
            return f"Ollama has no model {settings.ollama_model!r} (ollama pull {settings.ollama_model}): {text}"
        return f"Ollama answered HTTP {status}: {text}"
    return f"the LLM call failed: {type(exc).__name__}: {str(exc)[:200]}"


def failure_reason(exc: BaseException) -> str:
    """The class of a failed call, for ``aegis_llm_failures_total{reason}`` (one of ``LLM_FAILURE_REASONS``)."""
    if isinstance(exc, Busy):
        return "busy"
    if isinstance(exc, httpx.ConnectError):
        return "unreachable"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "timeout"
    status = getattr(exc, "status_code", None)
    if status is not None:
        return "no-model" if status == 404 else "http-error"
    return "other"


class Advisor:
    """The LLM boundary of the workflow. ``chat_factory`` is injectable; production uses ``ollama_chat``."""

    def __init__(
        self,
        settings: config.Settings,
        chat_factory: ChatFactory = ollama_chat,
        answers_cache: cache.AnswerCache | None = None,
        metrics: aegis_metrics.Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics  # None: nothing is counted
        self.chat_factory = chat_factory
        self.cache = answers_cache or cache.AnswerCache(settings.llm_cache_size, settings.llm_cache_ttl_seconds)
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the loop that uses it
        self._chats: dict[int, BaseChatModel] = {}  # one client per answer size, reused (building one takes ~0.1 s)

    @property
    def mode(self) -> str:
        return self.settings.llm_mode

    # --- the three questions ---

    async def diagnose(self, incident: models.Incident, evidence: models.Evidence) -> Advice[models.Diagnosis]:
        names, nonce, text = self._evidence(evidence)
        human = prompts.render(
            "diagnose",
            target=names.mask(str(incident.target)),
            categories=prompts.categories(),
            evidence=names.mask(text),
            nonce=nonce,
        )
        key = self._key("diagnose", incident, text)
        value, calls, error = await self._ask("diagnose", nonce, human, key, names)
        if value is None:
            return Advice(None, calls, error)
        try:
            answer = answers.DiagnosisSchema.model_validate(value)
        except pydantic.ValidationError as exc:  # the unmasked answer no longer fits (cannot happen unmasked)
            return Advice(None, calls, f"the model's diagnosis is invalid: {exc.errors()[0]['msg']}")
        return Advice(answers.diagnosis(answer, quoted_from=text), calls)

    async def propose(
        self,
        incident: models.Incident,
        evidence: models.Evidence,
        diagnosis: models.Diagnosis,
        related: list[models.ObjectRef],
        live: dict[str, dict[str, Any]],
        ctx: actions.Context,
        feedback: list[str],
    ) -> Advice[list[models.Plan]]:
        names, nonce, text = self._evidence(evidence)
        allowed = sorted({f"{r.kind}/{r.name}" for r in (incident.target, *incident.owner_chain, *related)})
        notes = ""
        if feedback:
            lines = "\n".join(f"- {redact.text(line)[:300]}" for line in feedback[-8:])
            notes = f"Already tried or refused (do not propose these again):\n{lines}\n"
        human = prompts.render(
            "propose",
            max_plans=answers.MAX_PLANS,
            target=names.mask(str(incident.target)),
            category=diagnosis.category,
            summary=names.mask(redact.text(diagnosis.summary)),
            vocabulary=prompts.vocabulary(),
            namespace=names.mask(incident.namespace),
            allowed=names.mask(", ".join(allowed)),
            feedback=names.mask(notes),
            evidence=names.mask(text),
            nonce=nonce,
        )
        extra = hashlib.sha256("\n".join([diagnosis.category, *feedback]).encode()).hexdigest()[:12]
        key = self._key("propose", incident, text, extra)
        value, calls, error = await self._ask("propose", nonce, human, key, names)
        if value is None:
            return Advice(None, calls, error)
        proposal = answers.LooseProposal.model_validate(value)
        plans, dropped = answers.plans(proposal, incident, related, live, ctx)
        return Advice(plans, calls, "" if plans else "the model proposed no acceptable plan", dropped)

    async def explain(
        self, incident: models.Incident, evidence: models.Evidence, diagnosis: models.Diagnosis
    ) -> Advice[str]:
        names, nonce, text = self._evidence(evidence)
        human = prompts.render(
            "explain",
            target=names.mask(str(incident.target)),
            category=diagnosis.category,
            summary=names.mask(redact.text(diagnosis.summary)),
            lines=names.mask("\n".join(redact.text(line) for line in diagnosis.evidence[:6]) or "(none)"),
            evidence=names.mask(text),
            nonce=nonce,
        )
        key = self._key("explain", incident, text, diagnosis.category)
        value, calls, error = await self._ask("explain", nonce, human, key, names)
        if value is None:
            return Advice(None, calls, error)
        return Advice(redact.text(str(value.get("explanation", ""))).strip()[:1200] or None, calls, error)

    # --- plumbing ---

    def _evidence(self, evidence: models.Evidence) -> tuple[anonymize.Anonymizer, str, str]:
        names = anonymize.Anonymizer.for_evidence(evidence) if self.settings.anonymize else anonymize.Anonymizer()
        nonce = secrets.token_hex(6)
        return names, nonce, digest.render(evidence, self.settings.llm_max_prompt_chars, nonce)

    def _key(self, purpose: str, incident: models.Incident, text: str, extra: str = "") -> str:
        return "|".join([purpose, self.settings.ollama_model, incident.fingerprint, digest.key(text), extra])

    async def _ask(
        self, purpose: answers.Purpose, nonce: str, human: str, key: str, names: anonymize.Anonymizer
    ) -> tuple[dict[str, Any] | None, list[Call], str]:
        """The answer as a dict with real names (``None`` and why, on failure), and the calls it took."""
        model = self.settings.ollama_model
        cached = self.cache.get(key)
        if cached is not None:
            if self.metrics is not None:
                self.metrics.llm_cached(purpose)
            return cached, [Call(purpose, model, ok=True, cached=True)], ""
        messages: list[BaseMessage] = [
            SystemMessage(redact.text(prompts.render("system", nonce=nonce))),
            HumanMessage(redact.text(human)),
        ]
        calls: list[Call] = []
        for attempt in (1, 2):
            call = Call(purpose, model, ok=False, prompt_chars=sum(len(str(m.content)) for m in messages))
            calls.append(call)
            started = time.monotonic()
            try:
                raw = await self._invoke(purpose, messages)
            except Exception as exc:  # every failure of the model is data, never a crash
                call.latency_ms = int((time.monotonic() - started) * 1000)
                call.error = describe_failure(exc, self.settings)
                log.warning("LLM %s call failed: %s", purpose, call.error)
                if self.metrics is not None:
                    self.metrics.llm_failed(failure_reason(exc))
                return None, calls, call.error
            call.latency_ms = int((time.monotonic() - started) * 1000)
            content = str(raw.content or "")
            usage = getattr(raw, "usage_metadata", None) or {}
            call.answer_chars = len(content)
            call.input_tokens = int(usage.get("input_tokens") or 0)
            call.output_tokens = int(usage.get("output_tokens") or 0)
            call.repaired = attempt == 2
            if self.metrics is not None:
                self.metrics.llm_answered(call.input_tokens, call.output_tokens)
            try:
                parsed = answers.parse(purpose, content)
            except answers.InvalidAnswer as exc:
                call.error = f"invalid answer: {exc}"
                log.warning("LLM %s answer invalid (attempt %d): %s", purpose, attempt, exc)
                if self.metrics is not None:
                    self.metrics.llm_failed("invalid-answer")
                messages = [
                    *messages[:2],
                    AIMessage(content[:2000]),
                    HumanMessage(prompts.render("repair", problems=str(exc)[:500])),
                ]
                continue
            call.ok = True
            value = names.unmask(parsed.model_dump(mode="json"))
            self.cache.put(key, value)
            return value, calls, ""
        return None, calls, f"the model's answer was invalid twice ({calls[-1].error})"

    async def _invoke(self, purpose: answers.Purpose, messages: list[BaseMessage]) -> AIMessage:
        """One call, once a slot is free: queued calls do not eat each other's timeouts, and do not wait forever."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.llm_concurrency)
        patience = self.settings.llm_timeout_seconds * 2
        if self._slots.locked():  # (a free slot is taken at once, without yielding)
            queued = self.metrics.llm_queued() if self.metrics is not None else contextlib.nullcontext()
            try:
                with queued:  # counted in aegis_llm_queue_depth while it waits
                    await asyncio.wait_for(self._slots.acquire(), timeout=patience)
            except TimeoutError:
                raise Busy(f"the LLM was busy with other incidents for {patience:g}s") from None
        else:
            await self._slots.acquire()
        try:
            return await self._invoke_now(purpose, messages)
        finally:
            self._slots.release()

    async def _invoke_now(self, purpose: answers.Purpose, messages: list[BaseMessage]) -> AIMessage:
        tokens = ANSWER_TOKENS[purpose]
        chat = self._chats.get(tokens)
        if chat is None:  # built off the event loop: it makes HTTP clients and SSL contexts
            chat = self._chats[tokens] = await asyncio.to_thread(self.chat_factory, self.settings, tokens)
        structured = chat.with_structured_output(answers.SCHEMAS[purpose], method="json_schema", include_raw=True)
        deadline = self.settings.llm_timeout_seconds * 2 + 5  # connect + read timeouts, then a hard stop
        started = time.monotonic()
        try:
            out = await asyncio.wait_for(structured.ainvoke(messages), timeout=deadline)
        finally:  # every request sent counts, whatever came of it
            if self.metrics is not None:
                self.metrics.llm_called(purpose, time.monotonic() - started)
        raw = out["raw"] if isinstance(out, dict) else out
        if not isinstance(raw, AIMessage):
            raise TypeError(f"unexpected answer type {type(raw).__name__}")
        return raw


def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """``status.llm`` of an Incident: totals over its recorded calls, and the last few of them."""
    made = [c for c in calls if not c.get("cached")]
    return {
        "calls": len(made),
        "cached": len(calls) - len(made),
        "failed": sum(1 for c in calls if not c.get("ok")),
        "inputTokens": sum(int(c.get("inputTokens") or 0) for c in made),
        "outputTokens": sum(int(c.get("outputTokens") or 0) for c in made),
        "latencyMs": sum(int(c.get("latencyMs") or 0) for c in made),
        "history": calls[-10:],
    }
