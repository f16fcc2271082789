"""The ``aegis`` command (typer + rich).

``aegis run`` runs the operator (the same handlers as ``kopf run -m handlers``)
with AEGIS's settings. Later commands (demo, sim serve, doctor, incidents,
show, approve, reject) live here too. Entry point: ``[project.scripts] aegis``.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console

from aegis import config

app = typer.Typer(
    name="aegis",
    help="AEGIS: turns K8sGPT findings into diagnosed, verified, approved Kubernetes fixes.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


@app.command()
def run(
    namespace: list[str] = typer.Option(  # noqa: B008
        None, "--namespace", "-n", help="Watch K8sGPT Results only in these namespaces (repeatable)."
    ),
    all_namespaces: bool = typer.Option(True, "--all-namespaces/--no-all-namespaces", "-A", help="Watch cluster-wide."),
    standalone: bool = typer.Option(True, help="Run without Kopf peering (one replica)."),
    liveness: str | None = typer.Option(None, help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the AEGIS operator against the current kubeconfig context (or in-cluster config)."""
    import kopf  # imported here: `aegis --help` stays fast

    try:
        config.load_settings()  # fail before connecting when a setting is wrong
    except config.SettingsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    import handlers  # noqa: F401  (registers the Kopf handlers)

    kopf.configure(verbose=verbose)
    kopf.run(
        standalone=standalone,
        clusterwide=all_namespaces and not namespace,
        namespaces=namespace or (),
        liveness_endpoint=liveness,
    )


@app.command()
def demo(
    incident: list[pathlib.Path] = typer.Option(  # noqa: B008
        None,
        "--incident",
        "-i",
        help="Scenario folder to run (repeatable). Default: every examples/incidents/*.",
        exists=True,
        file_okay=False,
    ),
    approve: str | None = typer.Option(
        None,
        help="Answer approval requests: auto (approve) or deny. Default: ask at the terminal, else deny.",
    ),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per scenario on stdout."),
    speed: float = typer.Option(10.0, min=1.0, max=100.0, help="Cluster seconds per wall-clock second."),
    timeout: float = typer.Option(120.0, min=10.0, help="Wall seconds each scenario may take."),
    kubeconfig: pathlib.Path | None = typer.Option(  # noqa: B008
        None,
        "--kubeconfig",
        help="Run on an existing cluster (kind, minikube, a bare control plane) instead of the emulated one. "
        "The scenario namespaces are created and removed; they must not exist yet.",
        exists=True,
        dir_okay=False,
    ),
    sim_nodes: bool = typer.Option(
        False, "--sim-nodes", help="With --kubeconfig: attach emulated nodes + kubelet stand-in (a bare control plane)."
    ),
    real: pathlib.Path | None = typer.Option(  # noqa: B008
        None,
        "--real",
        help="Start a throwaway real control plane from this folder of binaries (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) with emulated nodes, and run there.",
        exists=True,
        file_okay=False,
    ),
    analyzer: bool = typer.Option(
        True,
        "--analyzer/--no-analyzer",
        help="With --kubeconfig: run the K8sGPT-compatible analyzer (off where K8sGPT's operator is installed).",
    ),
    operator_kubeconfig: pathlib.Path | None = typer.Option(  # noqa: B008
        None,
        "--operator-kubeconfig",
        help="With --kubeconfig: the operator logs in with this one instead (e.g. a token of deploy/aegis's "
        "ServiceAccount from `kubectl create token aegis -n aegis-system`, to run it with exactly its RBAC).",
        exists=True,
        dir_okay=False,
    ),
) -> None:
    """Run the scenarios with the real operator and report: offline on the emulated cluster, or on a real one."""
    from aegis import demo as demo_run
    from aegis.sim import scenarios

    if approve not in (None, "auto", "deny"):
        err.print("[red]--approve must be auto or deny[/red]")
        raise typer.Exit(2)
    if sim_nodes and kubeconfig is None:
        err.print("[red]--sim-nodes attaches emulated nodes to the cluster given with --kubeconfig[/red]")
        raise typer.Exit(2)
    if real is not None and kubeconfig is not None:
        err.print("[red]--real starts its own control plane: do not pass --kubeconfig with it[/red]")
        raise typer.Exit(2)
    if operator_kubeconfig is not None and kubeconfig is None:
        err.print("[red]--operator-kubeconfig goes with --kubeconfig (the cluster it belongs to)[/red]")
        raise typer.Exit(2)
    paths = list(incident or [])
    if not paths:
        root = _examples_root()
        if root is None:
            err.print("[red]no examples/incidents folder here; pass --incident DIR[/red]")
            raise typer.Exit(2)
        paths = scenarios.discover(root)
    mode = approve or ("ask" if sys.stdin.isatty() and not json_output else "deny")
    code = demo_run.run(
        paths,
        approve=mode,  # type: ignore[arg-type]
        as_json=json_output,
        speed=speed,
        timeout=timeout,
        kubeconfig=kubeconfig.resolve() if kubeconfig else None,
        sim_nodes=sim_nodes,
        real=real.resolve() if real else None,
        analyzer=analyzer,
        operator_kubeconfig=operator_kubeconfig.resolve() if operator_kubeconfig else None,
    )
    raise typer.Exit(code)


sim_app = typer.Typer(help="The emulated cluster on its own.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


@sim_app.command("serve")
def sim_serve(
    kubeconfig: pathlib.Path = typer.Option(..., help="Where to write the kubeconfig that points at it."),  # noqa: B008
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0: any free port; emulated cluster only)."),
    speed: float = typer.Option(10.0, min=1.0, max=100.0, help="Cluster seconds per wall-clock second."),
    analyzer_interval: float = typer.Option(30.0, min=1.0, help="K8sGPT analysis interval, in cluster seconds."),
    images: list[pathlib.Path] = typer.Option(  # noqa: B008
        None, "--images", help="Extra image catalog (a scenario's images.yaml); repeatable.", exists=True
    ),
    real: pathlib.Path | None = typer.Option(  # noqa: B008
        None,
        "--real",
        help="Serve a real control plane started from this folder of binaries (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) with the emulated node side, instead of the emulated API.",
        exists=True,
        file_okay=False,
    ),
) -> None:
    """Serve a cluster until Ctrl-C: the emulated one, or (--real) a real control plane with emulated nodes."""
    import asyncio
    import shutil
    import signal

    from aegis.sim import cluster

    kubeconfig = kubeconfig.resolve()

    def hints(url: str) -> None:
        err.print(f"  export KUBECONFIG={kubeconfig}")
        err.print("  kubectl apply -f examples/incidents/bad-image-tag/manifests.yaml")
        err.print("  kopf run -m handlers --all-namespaces     # or: aegis run")
        err.print("Ctrl-C stops it.")

    if real is not None:
        from aegis.sim import controlplane, nodes

        try:
            with controlplane.ControlPlane(controlplane.ControlPlaneOptions(assets=real)) as plane:
                shutil.copyfile(plane.kubeconfig, kubeconfig)
                kubeconfig.chmod(0o600)
                options = nodes.NodeSideOptions(
                    speed=speed, analyzer_interval=analyzer_interval, images=list(images or [])
                )
                with nodes.NodeSide(plane.kubeconfig, options):
                    err.print(f"Real control plane (v1.28 binaries in {plane.assets}) at {plane.url}, emulated nodes")
                    _apply_crds(plane.kubeconfig)
                    hints(plane.url)
                    _wait_for_signal()
        except controlplane.ControlPlaneError as exc:
            _fail(str(exc), 2)
        return

    options = cluster.ClusterOptions(speed=speed, analyzer_interval=analyzer_interval, images=list(images or []))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with cluster.run_cluster(kubeconfig, options, port=port or None) as running:
            err.print(f"Emulated cluster serving at {running.url}")
            hints(running.url)
            await stop.wait()

    asyncio.run(serve())


@sim_app.command("nodes")
def sim_nodes(
    kubeconfig: pathlib.Path = typer.Option(  # noqa: B008
        ..., help="The cluster to attach to (any API server; needs only API access).", exists=True, dir_okay=False
    ),
    count: int = typer.Option(3, "--nodes", min=1, max=50, help="How many emulated nodes."),
    speed: float = typer.Option(10.0, min=1.0, max=100.0, help="Node-side seconds per wall-clock second."),
    analyzer: bool = typer.Option(True, "--analyzer/--no-analyzer", help="Run the K8sGPT-compatible analyzer."),
    analyzer_interval: float = typer.Option(30.0, min=1.0, help="K8sGPT analysis interval, in node-side seconds."),
    images: list[pathlib.Path] = typer.Option(  # noqa: B008
        None, "--images", help="Extra image catalog (a scenario's images.yaml); repeatable.", exists=True
    ),
) -> None:
    """Attach the emulated node side (nodes, kubelet stand-in with its log API, volumes, analyzer) until Ctrl-C."""
    from aegis.sim import nodes

    options = nodes.NodeSideOptions(
        nodes=count, speed=speed, analyzer=analyzer, analyzer_interval=analyzer_interval, images=list(images or [])
    )
    nodes.serve_nodes(kubeconfig.resolve(), options)


def _wait_for_signal() -> None:
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _apply_crds(kubeconfig: pathlib.Path) -> None:
    """The Incident and K8sGPT Result CRDs on a fresh real control plane, so `aegis run` can start at once."""
    import kubernetes

    from aegis import crds
    from aegis.kube import client as kube_client

    api = kubernetes.client.ApiextensionsV1Api(kube_client.api_client_from_config(str(kubeconfig)))
    for crd in crds.all_crds():
        with contextlib.suppress(kubernetes.client.ApiException):  # 409: there already
            api.create_custom_resource_definition(crd)


# --- reviewing and deciding incidents: aegis incidents / show / approve / reject ----------------------------------

_QUESTION_HELP = "Answer only this question (status.decision.question, as in the notification)."
_KUBECONFIG_HELP = "Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; in a pod: its service account)."
_CONTEXT_HELP = "Kubeconfig context (default: the current one)."
_NAMESPACE_HELP = "Namespace (default: the context's namespace, else default)."


def _fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never markup, never wrapped), then exit."""
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _stdout() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


@contextlib.contextmanager
def _cluster(kubeconfig: str | None, context: str | None) -> Iterator[Any]:
    """A ``session.Session``; an ``AccessError`` (no kubeconfig, unreachable, 401/403) ends the command in one line."""
    from aegis.kube import session

    try:
        kube = session.connect(kubeconfig, context)
    except session.AccessError as exc:
        _fail(str(exc))
    try:
        yield kube
    except session.AccessError as exc:
        _fail(str(exc))
    finally:
        kube.close()


def _print_objects(obj: Any, output: str) -> None:
    import json

    import yaml

    if output == "json":
        typer.echo(json.dumps(obj, indent=2))
    else:
        typer.echo(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), nl=False)


@app.command("incidents")
def list_incidents(
    namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Incidents in every namespace."),
    output: str = typer.Option("table", "--output", "-o", help="table, json or yaml."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help=_KUBECONFIG_HELP),
    context: str | None = typer.Option(None, "--context", help=_CONTEXT_HELP),
) -> None:
    """List Incidents: target, phase, category, how long a fix has waited for approval, age."""
    import datetime

    from aegis import review

    if output not in ("table", "json", "yaml"):
        _fail("--output must be table, json or yaml", 2)
    with _cluster(kubeconfig, context) as kube:
        ns = None if all_namespaces else namespace or kube.namespace
        items = kube.incidents(ns)
    if output != "table":
        _print_objects({"apiVersion": "v1", "kind": "List", "items": items}, output)
    elif not items:
        err.print("No incidents found" + (f" in namespace {ns}." if ns else "."), markup=False)
    else:
        now = datetime.datetime.now(tz=datetime.UTC)
        _stdout().print(review.table(review.rows(items), now, show_namespace=ns is None))


@app.command()
def show(
    name: str = typer.Argument(..., help="The Incident's name (aegis incidents lists them).", metavar="NAME"),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
    output: str | None = typer.Option(None, "--output", "-o", help="json or yaml: the object instead of the review."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help=_KUBECONFIG_HELP),
    context: str | None = typer.Option(None, "--context", help=_CONTEXT_HELP),
) -> None:
    """Review one Incident: diagnosis and evidence, the fix as a diff, shadow verification, policy, timeline."""
    from aegis import review
    from aegis.kube import session

    if output not in (None, "json", "yaml"):
        _fail("--output must be json or yaml", 2)
    with _cluster(kubeconfig, context) as kube:
        ns = namespace or kube.namespace
        incident = kube.incident(ns, name)
        if incident is None:
            _fail(f"no Incident {name} in namespace {ns}")
        if output is not None:
            _print_objects(incident, output)
            return
        objects: dict[str, dict[str, Any]] = {}
        replica_sets: list[dict[str, Any]] = []
        needs_history = not (incident.get("status") or {}).get("actions") and any(
            a.get("kind") == "rollback"
            for a in ((((incident.get("status") or {}).get("plan") or {}).get("chosen") or {}).get("actions") or [])
        )
        for kind, target_ns, target_name in review.related_targets(incident):
            try:  # best effort: without the live object the review shows the changed fields instead
                live = kube.read(kind, target_ns, target_name)
                if live is not None:
                    objects[f"{kind}/{target_name}"] = live
                    if kind == "Deployment" and needs_history:
                        replica_sets += kube.replica_sets(live)
            except session.AccessError as exc:
                err.print(f"note: {exc}", markup=False, soft_wrap=True)
    _stdout().print(review.screen(incident, objects, replica_sets=replica_sets))


def _decide(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    verdict: str,
    reason: str,
    question: str | None = None,
) -> None:
    """Write ``spec.approval`` of an Incident that waits for a decision (merge patch, resourceVersion precondition)."""
    from aegis import review
    from aegis.kube import session

    with _cluster(kubeconfig, context) as kube:
        ns = namespace or kube.namespace
        for attempt in range(2):  # a concurrent change (409) is retried once, from a fresh read
            incident = kube.incident(ns, name)
            if incident is None:
                _fail(f"no Incident {name} in namespace {ns}")
            phase = (incident.get("status") or {}).get("phase") or "Pending"
            if phase != review.AWAITING:
                meaning = review.PHASE_MEANINGS.get(phase, "an unknown phase")
                _fail(
                    f"Incident {ns}/{name} is {phase} ({meaning}): only an incident in AwaitingApproval "
                    "can be approved or rejected"
                )
            answered = ((incident.get("spec") or {}).get("approval") or {}).get("decision") or "Pending"
            if answered == verdict:
                typer.echo(f"Incident {ns}/{name} is already {verdict.lower()}; the operator is acting on it.")
                return
            if answered != "Pending":
                _fail(f"Incident {ns}/{name} was already {answered.lower()}; the operator is acting on that answer")
            asked = ((incident.get("status") or {}).get("decision") or {}).get("question")
            if question and question != asked:
                _fail(
                    f"Incident {ns}/{name} now asks about another fix (question {asked}, not {question}): "
                    f"review it with `aegis show {name} -n {ns}` and answer that one"
                )
            version = (incident.get("metadata") or {}).get("resourceVersion")
            answer = {"decision": verdict, "reason": reason}
            if asked:
                answer["question"] = asked  # the answer is to the fix this command saw, no other
            patch = {"metadata": {"resourceVersion": version}, "spec": {"approval": answer}}
            try:
                written = kube.patch_incident(ns, name, patch)
            except session.AccessError as exc:
                if exc.status == 409 and attempt == 0:
                    continue
                raise
            if written is None:
                _fail(f"no Incident {name} in namespace {ns} (it was deleted meanwhile)")
            break
    if verdict == "Approved":
        typer.echo(
            f"Approved {ns}/{name}: the operator applies the verified fix (server-side dry-run first), "
            "then confirms that the workload heals or rolls it back."
        )
    else:
        typer.echo(f"Rejected {ns}/{name}: nothing will be changed.")
    typer.echo("  identity: recorded by the API server (or 'unverified' where no admission webhook runs)")
    typer.echo(f"  follow it: aegis show {name} -n {ns}")


@app.command()
def approve(
    name: str = typer.Argument(..., help="The Incident waiting for approval.", metavar="NAME"),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
    reason: str = typer.Option("", "--reason", help="Why (recorded on the Incident)."),
    question: str | None = typer.Option(None, "--question", help=_QUESTION_HELP),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help=_KUBECONFIG_HELP),
    context: str | None = typer.Option(None, "--context", help=_CONTEXT_HELP),
) -> None:
    """Approve the verified fix of an Incident in AwaitingApproval."""
    _decide(name, namespace, kubeconfig, context, "Approved", reason, question)


@app.command()
def reject(
    name: str = typer.Argument(..., help="The Incident waiting for approval.", metavar="NAME"),
    reason: str = typer.Option(..., "--reason", help="Why the fix is rejected (required; recorded on the Incident)."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
    question: str | None = typer.Option(None, "--question", help=_QUESTION_HELP),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help=_KUBECONFIG_HELP),
    context: str | None = typer.Option(None, "--context", help=_CONTEXT_HELP),
) -> None:
    """Reject the fix of an Incident in AwaitingApproval: nothing is changed."""
    if not reason.strip():
        _fail("--reason must say why the fix is rejected", 2)
    _decide(name, namespace, kubeconfig, context, "Rejected", reason, question)


def _examples_root() -> pathlib.Path | None:
    for base in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent.parent):
        candidate = base / "examples" / "incidents"
        if candidate.is_dir():
            return candidate
    return None


@app.command()
def doctor(
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG)."),
    context: str | None = typer.Option(None, "--context", help="Kubeconfig context (default: the current one)."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    timeout: float = typer.Option(5.0, min=0.5, max=120.0, help="Seconds each check may wait for an answer."),
) -> None:
    """Check the Kubernetes connection, the CRDs, Ollama and the settings; say how to fix what fails."""
    from aegis import doctor as doctor_checks

    if output not in ("table", "json"):
        err.print("[red]--output must be table or json[/red]")
        raise typer.Exit(2)
    report = doctor_checks.run_checks(kubeconfig=kubeconfig, context=context, timeout=timeout)
    if output == "json":
        typer.echo(doctor_checks.to_json(report))
    else:
        doctor_checks.render_table(report, Console())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def version() -> None:
    """Print the AEGIS version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("aegis-operator"))


if __name__ == "__main__":
    app()
