"""The ``aegis`` command (typer + rich).

``aegis run`` runs the operator (the same handlers as ``kopf run -m handlers``)
with AEGIS's settings. Later commands (demo, sim serve, doctor, incidents,
show, approve, reject) live here too. Entry point: ``[project.scripts] aegis``.
"""

from __future__ import annotations

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
def version() -> None:
    """Print the AEGIS version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("aegis-operator"))


if __name__ == "__main__":
    app()
