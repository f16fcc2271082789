"""The ``aegis`` command (typer + rich).

``aegis run`` runs the operator (the same handlers as ``kopf run -m handlers``)
with AEGIS's settings. Later commands (demo, sim serve, doctor, incidents,
show, approve, reject) live here too. Entry point: ``[project.scripts] aegis``.
"""

from __future__ import annotations

import pathlib
import sys

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
) -> None:
    """Run the scenarios on the emulated cluster with the real operator, offline, and report."""
    from aegis.sim import demo as sim_demo
    from aegis.sim import scenarios

    if approve not in (None, "auto", "deny"):
        err.print("[red]--approve must be auto or deny[/red]")
        raise typer.Exit(2)
    paths = list(incident or [])
    if not paths:
        root = _examples_root()
        if root is None:
            err.print("[red]no examples/incidents folder here; pass --incident DIR[/red]")
            raise typer.Exit(2)
        paths = scenarios.discover(root)
    mode = approve or ("ask" if sys.stdin.isatty() and not json_output else "deny")
    code = sim_demo.run(paths, approve=mode, as_json=json_output, speed=speed, timeout=timeout)  # type: ignore[arg-type]
    raise typer.Exit(code)


sim_app = typer.Typer(help="The emulated cluster on its own.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


@sim_app.command("serve")
def sim_serve(
    kubeconfig: pathlib.Path = typer.Option(..., help="Where to write the kubeconfig that points at it."),  # noqa: B008
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0: any free port)."),
    speed: float = typer.Option(10.0, min=1.0, max=100.0, help="Cluster seconds per wall-clock second."),
    analyzer_interval: float = typer.Option(30.0, min=1.0, help="K8sGPT analysis interval, in cluster seconds."),
    images: list[pathlib.Path] = typer.Option(  # noqa: B008
        None, "--images", help="Extra image catalog (a scenario's images.yaml); repeatable.", exists=True
    ),
) -> None:
    """Serve the emulated cluster (API, controllers, kubelet stand-in, K8sGPT analyzer) until Ctrl-C."""
    import asyncio
    import signal

    from aegis.sim import cluster

    options = cluster.ClusterOptions(speed=speed, analyzer_interval=analyzer_interval, images=list(images or []))
    kubeconfig = kubeconfig.resolve()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with cluster.run_cluster(kubeconfig, options, port=port or None) as running:
            err.print(f"Emulated cluster serving at {running.url}")
            err.print(f"  export KUBECONFIG={kubeconfig}")
            err.print("  kubectl apply -f examples/incidents/bad-image-tag/manifests.yaml")
            err.print("  kopf run -m handlers --all-namespaces     # or: aegis run")
            err.print("Ctrl-C stops it.")
            await stop.wait()

    asyncio.run(serve())


def _examples_root() -> pathlib.Path | None:
    for base in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent.parent):
        candidate = base / "examples" / "incidents"
        if candidate.is_dir():
            return candidate
    return None


@app.command()
def version() -> None:
    """Print the AEGIS version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("aegis-operator"))


if __name__ == "__main__":
    app()
