"""Rules that propose fixes: ranked candidate plans of typed actions for the categories they know.

Each candidate is checked by ``aegis.actions.render`` against the live target
before it is offered; one that does not fit is dropped with its reason (returned
beside the plans, for the Incident and for the next proposer). Categories whose
fix needs a value only a human knows (missing-env, a missing Secret) get no plan:
the incident is escalated. So does a target AEGIS never changes (``models.UNCHANGED_KINDS``:
a Job, a CronJob, a DaemonSet): ``unsupported_reason`` says why and what a human should do,
from the diagnosis where it can (a DaemonSet's image set back to the one its other pods still
run). Called by the propose stage of the workflow.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable
from typing import Any

from aegis import actions, models, quantity, rules
from aegis.rules import init_container, scheduling
from aegis.rules.image_pull import PULL_REASONS

Candidate = tuple[models.Action, str]  # the action and why
Proposer = Callable[[models.Diagnosis, models.Evidence, dict[str, Any], actions.Context], list[Candidate]]


def _action(
    evidence: models.Evidence, kind: str, target: models.ObjectRef | None = None, **params: Any
) -> models.Action:
    return models.Action(kind=kind, target=target or evidence.target, params=params)  # type: ignore[arg-type]


def _previous_template(live: dict[str, Any], ctx: actions.Context) -> dict[str, Any] | None:
    """The pod template of the newest earlier revision that differs from the current one."""
    current = actions._template_without_hash((live.get("spec") or {}).get("template") or {})
    for rs in sorted(ctx.replica_sets, key=actions._revision, reverse=True):
        template = actions._template_without_hash(rs["spec"]["template"])
        if template != current:
            return template
    return None


def _rollback(evidence: models.Evidence, live: dict[str, Any], ctx: actions.Context, why: str) -> list[Candidate]:
    if evidence.target.kind == "Deployment" and _previous_template(live, ctx) is not None:
        return [(_action(evidence, "rollback"), why)]
    return []


def _containers(template: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in ((template or {}).get("spec") or {}).get("containers") or []}


def image_pull(d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[Candidate]:
    plans = _rollback(e, live, ctx, "roll back to the previous revision, whose image could be pulled")
    previous = _containers(_previous_template(live, ctx))
    current = _containers((live.get("spec") or {}).get("template"))
    for name, container in current.items():
        before = previous.get(name, {}).get("image")
        if before and before != container.get("image"):
            plans.append(
                (
                    _action(e, "set-image", container=name, image=before),
                    f"set container {name} back to {before}, the image of the previous revision",
                )
            )
    return plans


def oom_killed(d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[Candidate]:
    plans: list[Candidate] = []
    for pod in e.pods:
        for container in pod.containers:
            if (container.last_reason == "OOMKilled" or container.reason == "OOMKilled") and container.memory_limit:
                limit = quantity.parse(container.memory_limit)
                raised = quantity.format_bytes(int(limit * 2))
                params: dict[str, Any] = {"container": container.name, "limits": {"memory": raised}}
                plans.append(
                    (
                        _action(e, "set-resources", **params),
                        f"double the memory limit of {container.name} ({container.memory_limit} -> {raised})",
                    )
                )
                break
        if plans:
            break
    return plans + _rollback(e, live, ctx, "roll back to the previous revision, which did not run out of memory")


def probe_failure(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    plans: list[Candidate] = []
    for name, container in _containers((live.get("spec") or {}).get("template")).items():
        declared = [p for p in container.get("ports") or [] if p.get("containerPort")]
        for which in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(which) or {}
            handler = probe.get("httpGet") or probe.get("tcpSocket")
            if not handler:
                continue
            port = handler.get("port")
            known = {p.get("containerPort") for p in declared} | {p.get("name") for p in declared}
            if declared and port not in known:
                wanted = declared[0].get("name") or declared[0]["containerPort"]
                plans.append(
                    (
                        _action(e, "set-probe", container=name, probe=which, port=wanted),
                        f"point the {which} of {name} at the port it declares ({wanted}), not {port}",
                    )
                )
            elif "httpGet" in probe and any("statuscode: 404" in line for line in d.evidence):
                plans.append(
                    (
                        _action(e, "set-probe", container=name, probe=which, path="/"),
                        f"probe a path the server answers (/) instead of {probe['httpGet'].get('path')}",
                    )
                )
    return plans + _rollback(e, live, ctx, "roll back to the previous revision, whose probes passed")


def rollback_only(why: str) -> Proposer:
    def propose(d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[Candidate]:
        return _rollback(e, live, ctx, why)

    return propose


def missing_config(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    # Only when a change broke the reference: the previous revision must not reference what is missing.
    previous = _previous_template(live, ctx)
    if previous is None:
        return []
    text = str(previous)
    missing = [line.split('"')[1] for line in d.evidence if '"' in line and "not found" in line]
    if any(name in text for name in missing):
        return []
    return _rollback(e, live, ctx, "roll back to the revision that referenced existing configuration")


def node_selector(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    plans = _rollback(e, live, ctx, "roll back to the previous revision, which could be scheduled")
    previous = _previous_template(live, ctx)
    before = ((previous or {}).get("spec") or {}).get("nodeSelector")
    plans.append(
        (
            _action(e, "set-node-selector", nodeSelector=before),
            "restore the previous placement" if before else "drop the nodeSelector no node satisfies",
        )
    )
    return plans


def service_selector(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    service = e.service
    if service is None:
        return []
    best: dict[str, str] | None = None
    for pod in e.namespace_pods:
        candidate = {key: pod.labels[key] for key in service.selector if key in pod.labels}
        if candidate and (best is None or len(candidate) > len(best)):
            best = candidate
    if not best:
        return []
    return [(_action(e, "patch-service", selector=best), f"select the pods that carry {best}")]


def service_port(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    pods = [pod for pod in e.pods if e.service and pod.name in e.service.matching_pods]
    ports = [port for pod in pods[:1] for c in pod.containers for port in c.ports]
    if len(ports) != 1:
        return []
    wanted = ports[0].get("name") or ports[0]["containerPort"]
    return [(_action(e, "patch-service", targetPort=wanted), f"target the port the pods declare ({wanted})")]


def pvc_pending(d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[Candidate]:
    plans: list[Candidate] = []
    default = ctx.default_storage_class
    for claim in e.claims:
        if claim.phase != "Bound" and claim.storage_class_exists is False and default:
            target = models.ObjectRef(kind="PersistentVolumeClaim", namespace=e.target.namespace, name=claim.name)
            plans.append(
                (
                    _action(e, "recreate-pvc", target, storageClassName=default),
                    f"recreate the unbound claim {claim.name} with the cluster's default class {default}",
                )
            )
    return plans


def _new_init_containers(e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[str]:
    """Failing init containers that the previous revision did not run as they are now (a rollout added or
    changed them): rolling back removes the failure."""
    previous = _previous_template(live, ctx)
    if previous is None:
        return []
    before = {c.get("name"): c for c in (previous.get("spec") or {}).get("initContainers") or []}
    now = {
        c.get("name"): c
        for c in (((live.get("spec") or {}).get("template") or {}).get("spec") or {}).get("initContainers") or []
    }
    names = dict.fromkeys(c.name for _, c in init_container.failing_init(e))
    return [name for name in names if name in now and before.get(name) != now[name]]


def missing_env(d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> list[Candidate]:
    # A value only a human knows — unless a rollout added the init container that asks for it.
    added = _new_init_containers(e, live, ctx)
    if not added:
        return []
    why = f"roll back to the previous revision, before init container {', '.join(added)} was added or changed"
    return _rollback(e, live, ctx, why)


def _per_pod(template: dict[str, Any] | None, resource: str) -> Any:
    """What one pod of ``template`` counts against a quota's ``resource`` (requests.memory, limits.cpu, memory…)."""
    section, _, name = resource.rpartition(".")
    section = section or "requests"  # a quota's bare "memory"/"cpu" are requests
    if section not in ("requests", "limits") or name not in ("memory", "cpu", "ephemeral-storage"):
        return None
    total = quantity.parse("0")
    for container in ((template or {}).get("spec") or {}).get("containers") or []:
        value = ((container.get("resources") or {}).get(section) or {}).get(name)
        if value is not None:
            total += quantity.parse(value)
    return total


def quota_rollback(e: models.Evidence, live: dict[str, Any], ctx: actions.Context) -> tuple[list[Candidate], str]:
    """A rollback when a rollout raised the requests past a ResourceQuota and the previous revision fits it;
    else no plan and why a human must decide."""
    refusal = scheduling.quota_refusals(e)[-1]
    human = (
        f"the namespace's {refusal.describe()} refuses the pods: only a human can raise the quota or decide the "
        f"workload's size (its requests or replicas) — e.g. kubectl edit resourcequota {refusal.quota} -n "
        f"{e.target.namespace}"
    )
    previous = _previous_template(live, ctx)
    if e.target.kind != "Deployment" or previous is None:
        return [], human
    current = (live.get("spec") or {}).get("template") or {}
    wanted = int((live.get("spec") or {}).get("replicas", 1))
    for resource in refusal.requested:
        before, now = _per_pod(previous, resource), _per_pod(current, resource)
        if before is None or now is None or before >= now:
            return [], human + "; the previous revision asks for no less, so a rollback would not help"
        try:
            used, limited = quantity.parse(refusal.used[resource]), quantity.parse(refusal.limited[resource])
        except (KeyError, ValueError):
            return [], human
        # What this Deployment's existing pods use now counts for it, not against it.
        mine = quantity.parse("0")
        for rs in ctx.replica_sets:
            amount = _per_pod((rs.get("spec") or {}).get("template"), resource) or 0
            mine += amount * int((rs.get("status") or {}).get("replicas") or 0)
        if before * wanted > limited - max(used - mine, quantity.parse("0")):
            return [], human + f"; the previous revision would not fit either ({resource})"
    why = f"roll back to the previous revision, whose requests fit {refusal.describe()}; the rollout raised them"
    return _rollback(e, live, ctx, why), human


def unschedulable_resources(
    d: models.Diagnosis, e: models.Evidence, live: dict[str, Any], ctx: actions.Context
) -> list[Candidate]:
    if scheduling.quota_refusals(e):
        return quota_rollback(e, live, ctx)[0]
    return _rollback(e, live, ctx, "roll back to the previous revision, whose requests fit the nodes")


DAEMONSET_WHY = (
    "AEGIS does not change DaemonSets: a fix would roll out to every node at once, it cannot be rehearsed in a "
    "shadow namespace (a copy would run a pod on every node) and there is no ReplicaSet to roll back from"
)


def _as_written(image: str, like: str) -> str:
    """``image`` as the workload's manifest writes references: without the ``docker.io/`` (and ``library/``) a
    container runtime adds, when ``like`` (the reference in the workload) has none."""
    if like.startswith("docker.io/") or not image.startswith("docker.io/"):
        return image
    short = image.removeprefix("docker.io/")
    return short.removeprefix("library/") if "/" not in like.split("@")[0].split(":")[0] else short


def _image_still_running(evidence: models.Evidence, container: str, failing: str) -> tuple[str, int] | None:
    """The image the workload's other pods still run in ``container`` (not ``failing``), and how many run it."""
    seen: collections.Counter[str] = collections.Counter()
    for pod in evidence.pods:
        for state in pod.containers:
            if (
                not pod.terminating
                and state.name == container
                and state.state == "running"
                and state.ready
                and state.image
                and _as_written(state.image, failing) != failing
            ):
                seen[_as_written(state.image, failing)] += 1
    return seen.most_common(1)[0] if seen else None


def daemonset_reason(
    target: models.ObjectRef, diagnosis: models.Diagnosis | None = None, evidence: models.Evidence | None = None
) -> str:
    """Why AEGIS leaves a DaemonSet to a human, and what the human should do, as concrete as the diagnosis allows."""
    ref, ns = f"daemonset/{target.name}", target.namespace
    watch = f"then watch kubectl rollout status {ref} -n {ns}"
    undo = f"kubectl rollout undo {ref} -n {ns}"
    category = diagnosis.category if diagnosis is not None else "unknown"
    pods = [pod for pod in (evidence.pods if evidence is not None else []) if not pod.terminating]
    if category == "image-pull":
        failing = dict.fromkeys(
            (c.name, c.image)
            for pod in pods
            for c in pod.containers
            if c.state == "waiting" and c.reason in PULL_REASONS and c.image
        )
        known = {
            name: found
            for name, image in failing
            if evidence is not None and (found := _image_still_running(evidence, name, image))
        }
        if failing and len(known) == len(failing):
            sets = " ".join(f"{name}={image}" for name, (image, _) in known.items())
            still = ", ".join(f"{n} {'pod still runs' if n == 1 else 'pods still run'} {i}" for i, n in known.values())
            return (
                f"{DAEMONSET_WHY}. A human must set the image back to the one the other nodes still run ({still}; "
                f"the rolling update stopped there): kubectl set image {ref} {sets} -n {ns} (or {undo}), {watch}"
            )
        if failing:
            names = ", ".join(f"{name} ({image!r} cannot be pulled)" for name, image in failing)
            first = next(iter(failing))[0]
            return (
                f"{DAEMONSET_WHY}. A human must correct the image of container {names}: kubectl set image {ref} "
                f"{first}=<an image that exists> -n {ns}, or return to the previous revision with {undo}; {watch}"
            )
    if category == "oom-killed":
        for pod in pods:
            for c in pod.containers:
                if "OOMKilled" in (c.reason, c.last_reason) and c.memory_limit:
                    raised = quantity.format_bytes(int(quantity.parse(c.memory_limit) * 2))
                    return (
                        f"{DAEMONSET_WHY}. A human must give container {c.name} more memory than its limit "
                        f"{c.memory_limit}: e.g. kubectl set resources {ref} -c {c.name} --limits=memory={raised} "
                        f"-n {ns}, or return to the previous revision with {undo}; {watch}"
                    )
    return (
        f"{DAEMONSET_WHY}. A human must correct {target} where it is defined (kubectl edit {ref} -n {ns}), or, if a "
        f"rollout caused it, return to the previous revision with {undo}; {watch}"
    )


def unsupported_reason(
    target: models.ObjectRef, diagnosis: models.Diagnosis | None = None, evidence: models.Evidence | None = None
) -> str | None:
    """Why AEGIS's typed fixes do not apply to this target (``models.UNCHANGED_KINDS``) and what a human should do,
    else None."""
    if target.kind == "DaemonSet":
        return daemonset_reason(target, diagnosis, evidence)
    return batch_reason(target)


def batch_reason(target: models.ObjectRef) -> str | None:
    """Why AEGIS's typed fixes do not apply to a Job or CronJob target (what a human should do), else None."""
    if target.kind == "CronJob":
        return (
            f"AEGIS's typed fixes do not change CronJobs: a human must remove the cause of the failed runs of "
            f"{target} (the diagnosis above) — outside the workload, or in its job template (kubectl edit cronjob "
            f"{target.name} -n {target.namespace}) — then check one run by hand (kubectl create job --from=cronjob/"
            f"{target.name} {target.name}-manual -n {target.namespace}); failed Jobs it left can then be deleted"
        )
    if target.kind == "Job":
        return (
            f"a Job's pod template cannot be changed and AEGIS's typed fixes do not apply to Jobs: a human must "
            f"correct {target} where it is defined and re-create it (kubectl delete job {target.name} -n "
            f"{target.namespace}, then apply the corrected Job)"
        )
    return None


PROPOSERS: dict[str, Proposer] = {
    "image-pull": image_pull,
    "oom-killed": oom_killed,
    "probe-failure": probe_failure,
    "app-crash": rollback_only("roll back to the previous revision, which ran"),
    "unschedulable-resources": unschedulable_resources,
    "missing-env": missing_env,
    "unschedulable-constraints": node_selector,
    "missing-config": missing_config,
    "service-selector-mismatch": service_selector,
    "service-port-mismatch": service_port,
    "pvc-pending": pvc_pending,
}


def propose(
    diagnosis: models.Diagnosis,
    evidence: models.Evidence,
    live: dict[str, dict[str, Any]],
    ctx: actions.Context,
) -> tuple[list[models.Plan], list[str]]:
    """Ranked plans for this diagnosis, and the reasons candidates were dropped.

    ``live`` maps "Kind/name" to the live objects the actions may target (the workload, its Service, claims).
    """
    unsupported = unsupported_reason(evidence.target, diagnosis, evidence)
    if unsupported:
        return [], [unsupported]
    proposer = PROPOSERS.get(diagnosis.category)
    if proposer is None:
        return [], [f"no rule proposes a fix for {diagnosis.category}: a human must decide"]
    evidence = rules.judged(evidence)  # pods being deleted are going away: never a reason for a fix
    workload = live.get(f"{evidence.target.kind}/{evidence.target.name}") or {}
    plans: list[models.Plan] = []
    dropped: list[str] = []
    candidates = proposer(diagnosis, evidence, copy.deepcopy(workload), ctx)
    if not candidates and diagnosis.category == "unschedulable-resources" and scheduling.quota_refusals(evidence):
        dropped.append(quota_rollback(evidence, copy.deepcopy(workload), ctx)[1])
    elif not candidates and diagnosis.category == "missing-env":  # a value only a human knows
        dropped.append(f"no rule proposes a fix for {diagnosis.category}: a human must decide")
    for action, why in candidates:
        target = live.get(f"{action.target.kind}/{action.target.name}")
        if target is None:
            dropped.append(f"{action.kind} on {action.target}: the object does not exist")
            continue
        try:
            rendered = actions.render(action, target, ctx)
        except actions.ActionError as exc:
            dropped.append(f"{action.kind} on {action.target}: {exc}")
            continue
        plans.append(
            models.Plan(
                actions=[rendered.action.model_copy(update={"rationale": why})],
                rationale=why,
                rank=len(plans) + 1,
                source="rules",
            )
        )
    return plans, dropped
