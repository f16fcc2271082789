"""What the model must answer, and how its answer is checked before anything uses it.

Two shapes per answer: the *strict* schema (the taxonomy and the action vocabulary
as enums, bounded lengths and confidences) is sent to Ollama as ``format`` so the
model is constrained to it; the *lenient* model parses what came back, so one bad
action can be dropped with its reason instead of losing the whole answer. Nothing
the model says reaches the cluster unchecked: every action must be in the vocabulary,
aimed at the incident's own objects, and render against the live object (which also
sets its risk — the model's opinion of risk is ignored).

Called by ``aegis.llm.advisor``.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from aegis import actions, models

MAX_PLANS = 3
MAX_ACTIONS = 3


# --- strict schemas (sent as Ollama's ``format``) -------------------------------------------------


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class DiagnosisSchema(_Strict):
    """The model's diagnosis: a category of the taxonomy, a summary, evidence lines quoted from the input."""

    category: models.Category
    summary: str = pydantic.Field(max_length=600, description="One or two sentences: what is wrong and why.")
    evidence: list[str] = pydantic.Field(
        max_length=6, description="Lines copied verbatim from the EVIDENCE section that show the cause."
    )
    confidence: float = pydantic.Field(ge=0, le=1, description="0 to 1: how sure the diagnosis is.")


class TargetSchema(_Strict):
    kind: str
    name: str
    namespace: str


class ActionSchema(_Strict):
    kind: models.ActionKind
    target: TargetSchema
    params: dict[str, Any] = pydantic.Field(description="Parameters of this action kind, as listed in the vocabulary.")
    rationale: str = pydantic.Field(max_length=300)


class PlanSchema(_Strict):
    actions: list[ActionSchema] = pydantic.Field(min_length=1, max_length=MAX_ACTIONS)
    rationale: str = pydantic.Field(max_length=400)


class ProposalSchema(_Strict):
    plans: list[PlanSchema] = pydantic.Field(max_length=MAX_PLANS, description="Best first; empty if none is safe.")


class ExplanationSchema(_Strict):
    explanation: str = pydantic.Field(max_length=1200, description="Plain language for the on-call engineer.")


SCHEMAS: dict[str, type[pydantic.BaseModel]] = {
    "diagnose": DiagnosisSchema,
    "propose": ProposalSchema,
    "explain": ExplanationSchema,
}
Purpose = Literal["diagnose", "propose", "explain"]


# --- lenient parsing (what actually came back) ----------------------------------------------------


class InvalidAnswer(ValueError):
    """The answer is not JSON, or not the shape asked for."""


class _Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")


class LooseAction(_Loose):
    kind: str
    target: Any = None  # checked per action: a wrong shape drops this plan, not the whole answer
    params: Any = None
    rationale: str = ""


class LoosePlan(_Loose):
    actions: list[LooseAction] = pydantic.Field(default_factory=list)
    rationale: str = ""


class LooseProposal(_Loose):
    plans: list[LoosePlan]


def parse(purpose: Purpose, content: str) -> Any:
    """The answer as a model: strict for diagnose/explain, lenient (per-action checks follow) for propose."""
    model: type[pydantic.BaseModel] = LooseProposal if purpose == "propose" else SCHEMAS[purpose]
    try:
        return model.model_validate_json(content)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        raise InvalidAnswer(problems) from None


def diagnosis(answer: DiagnosisSchema, quoted_from: str) -> models.Diagnosis:
    """The model's diagnosis as ours; evidence lines it did not quote from the input are dropped."""
    quoted = [line.strip()[:300] for line in answer.evidence if line.strip() and line.strip() in quoted_from]
    return models.Diagnosis(
        category=answer.category,
        summary=answer.summary.strip()[:600] or f"{answer.category} (the model gave no summary)",
        evidence=quoted,
        confidence=answer.confidence,
        source="llm",
        rule=None,
    )


def plans(
    answer: LooseProposal,
    incident: models.Incident,
    related: list[models.ObjectRef],
    live: dict[str, dict[str, Any]],
    ctx: actions.Context,
) -> tuple[list[models.Plan], list[str]]:
    """The model's plans that survive validation, ranked, and why each dropped action was dropped.

    A plan with one bad action is dropped whole: half a fix is not the fix that would be verified.
    """
    vocabulary = set(models.ActionKind.__args__)  # type: ignore[attr-defined]
    kept: list[models.Plan] = []
    dropped: list[str] = []
    for index, plan in enumerate(answer.plans[:MAX_PLANS], start=1):
        rendered: list[models.Action] = []
        reason = ""
        if not plan.actions:
            reason = "it has no action"
        for loose in plan.actions[:MAX_ACTIONS]:
            reason = _check(loose, vocabulary, incident, related, live, ctx, rendered)
            if reason:
                break
        if len(plan.actions) > MAX_ACTIONS:
            reason = reason or f"it has {len(plan.actions)} actions (at most {MAX_ACTIONS})"
        if reason:
            dropped.append(f"LLM plan {index} dropped: {reason}")
            continue
        kept.append(
            models.Plan(actions=rendered, rationale=plan.rationale.strip()[:400], rank=len(kept) + 1, source="llm")
        )
    return kept, dropped


def repository(image: str) -> str:
    """``registry/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _foreign_image(action: models.Action, live: dict[str, Any], ctx: actions.Context) -> str:
    """Why a set-image is refused: the model may change a tag, never bring in another image repository."""
    if action.kind != "set-image":
        return ""
    known = {
        repository(str(c.get("image") or ""))
        for obj in (live, *ctx.replica_sets)
        for c in ((obj.get("spec") or {}).get("template") or obj.get("spec") or {}).get("spec", {}).get("containers")
        or []
    }
    wanted = str(action.params.get("image") or "")
    if repository(wanted) not in known:
        return (
            f"set-image to {wanted!r}: an LLM plan may change the tag of an image the workload uses "
            f"({', '.join(sorted(known)) or 'none'}), not bring in another one"
        )
    return ""


def _check(
    loose: LooseAction,
    vocabulary: set[str],
    incident: models.Incident,
    related: list[models.ObjectRef],
    live: dict[str, dict[str, Any]],
    ctx: actions.Context,
    rendered: list[models.Action],
) -> str:
    """Empty when the action is acceptable (and appended to ``rendered``), else why not."""
    kind = str(loose.kind)[:60]
    if kind not in vocabulary:
        return f"{kind!r} is not in the action vocabulary"
    target = loose.target or {}
    params = loose.params if loose.params is not None else {}
    if not isinstance(target, dict) or not isinstance(params, dict):
        return f"{kind}: target and params must be objects"
    try:
        ref = models.ObjectRef(
            kind=str(target.get("kind") or incident.target.kind),
            name=str(target.get("name") or ""),
            namespace=str(target.get("namespace") or incident.namespace),
        )
    except pydantic.ValidationError:
        return f"{kind} names no valid target"
    if ref.namespace != incident.namespace:
        return f"{kind} aims at namespace {ref.namespace!r}, outside the incident's namespace {incident.namespace!r}"
    action = models.Action(kind=kind, target=ref, params=params, rationale=loose.rationale.strip()[:300])  # type: ignore[arg-type]
    try:
        actions.check_target(action, incident, related)
        obj = live.get(f"{ref.kind}/{ref.name}")
        if obj is None:
            return f"{kind} on {ref}: the object is not one AEGIS read for this incident"
        foreign = _foreign_image(action, obj, ctx)
        if foreign:
            return foreign
        result = actions.render(action, obj, ctx)
    except actions.ActionError as exc:
        return f"{kind} on {ref}: {exc}"
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # parameters of the wrong type
        return f"{kind} on {ref}: invalid parameters ({type(exc).__name__}: {exc})"
    known = next((r for r in (incident.target, *incident.owner_chain, *related) if r.key == ref.key), ref)
    rendered.append(result.action.model_copy(update={"target": known}))
    return ""
