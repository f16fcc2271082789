"""``aegis demo``: a cluster, the real operator in-process, and every scenario, end to end.

Composes a cluster and the operator (so it sits beside the CLI, not inside
``aegis.sim``, which is only a cluster): the emulated cluster by default (API
server, controllers, kubelet stand-in, K8sGPT analyzer), or an existing cluster
from a kubeconfig (kind, minikube, …; with ``sim_nodes`` a bare control plane whose
node side — nodes, kubelet stand-in, volumes, analyzer — ``aegis.sim.nodes``
plays), or a throwaway real control plane started from its binaries
(``aegis.sim.controlplane``). Runs the operator with the production handlers
against it (Kopf in its own thread and loop; ``graph`` and ``handlers`` are
imported there, lazily), has ``aegis.demo_report`` drive and report every
scenario, prints the report (a rich table, or one JSON object per line) and, on a
cluster it did not create, removes the scenario namespaces it made.
Called by ``aegis.cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import kopf
from rich.console import Console

from aegis import config, crds, demo_report
from aegis.kube import client as kube_client
from aegis.sim import client, cluster, scenarios


class OperatorThread:
    """The production operator (``handlers``) in its own thread and event loop, against the demo's cluster."""

    def __init__(self, kubeconfig: pathlib.Path, settings: config.Settings, log_file: pathlib.Path) -> None:
        self.kubeconfig, self.settings, self.log_file = kubeconfig, settings, log_file
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="aegis-operator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(timeout=60):
            raise RuntimeError(f"the operator did not start; see {self.log_file}")
        if self.error is not None:
            raise RuntimeError(f"the operator failed to start: {self.error}")

    def stop(self) -> None:
        self.stop_flag.set()
        self._thread.join(timeout=30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by start()/the demo
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        import handlers  # noqa: F401  (the production handlers, registered on Kopf's default registry)
        from graph import runtime

        registry = kopf.get_default_registry()
        api_client = kube_client.api_client_from_config(str(self.kubeconfig))
        connection = connection_info(api_client)

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection

        async with runtime.open_runtime(self.settings, api_client=api_client) as rt:
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def watch_stop() -> None:
                await ready.wait()
                self.ready.set()
                await loop.run_in_executor(None, self.stop_flag.wait)

            stopper = asyncio.create_task(watch_stop())
            stop_future: asyncio.Future[None] = loop.create_future()
            stopper.add_done_callback(lambda _: stop_future.done() or stop_future.set_result(None))
            await kopf.operator(
                registry=registry,
                memo=kopf.Memo(engine=rt.engine),
                standalone=True,
                clusterwide=True,
                ready_flag=ready,
                stop_flag=stop_future,
            )


def connection_info(api_client: Any) -> kopf.ConnectionInfo:
    """Kopf's credentials from the ``kubernetes`` client's view of a kubeconfig (token or client certificate, CA)."""
    conf = api_client.configuration
    auth = (conf.api_key or {}).get("authorization") or (conf.api_key or {}).get("BearerToken") or ""
    scheme, _, token = auth.partition(" ") if " " in auth else ("Bearer", "", auth)
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert or None,
        insecure=not conf.verify_ssl,
        scheme=scheme if token else None,
        token=token or None,
        certificate_path=conf.cert_file or None,
        private_key_path=conf.key_file or None,
    )


def ollama_line(settings: config.Settings) -> str:
    """One line on what the LLM will do in this run (AEGIS_LLM_MODE, and whether Ollama has the model)."""
    url = str(settings.ollama_url).rstrip("/")
    mode = settings.llm_mode
    if mode == "off":
        return "LLM: off (AEGIS_LLM_MODE=off); diagnosing with rules only."
    role = {
        "fallback": "asked when no rule is sure",
        "explain": "asked when no rule is sure, and explains every diagnosis",
        "only": "diagnoses and proposes alone, the rules stand aside",
    }[mode]
    try:
        with urllib.request.urlopen(f"{url}/api/tags", timeout=1.0) as answer:
            names = {str(m.get("name")) for m in json.load(answer).get("models") or []}
    except (OSError, ValueError):
        if mode == "only":
            return f"LLM: Ollama is not reachable at {url} and AEGIS_LLM_MODE=only: every incident will escalate."
        return f"LLM: Ollama is not reachable at {url}; diagnosing with rules only."
    model = settings.ollama_model
    if model not in names and f"{model}:latest" not in names:
        return f"LLM: Ollama at {url} has no model {model} (ollama pull {model}); its calls will fail, rules stand."
    return f"LLM: {model} at {url} ({mode}: {role})."


@dataclasses.dataclass
class Target:
    """Where the demo runs: which cluster (``kind``), how to reach it, and whether its namespaces are ours to remove."""

    kind: Literal["emulated", "existing", "real"]
    kubeconfig: pathlib.Path
    description: str


@contextlib.contextmanager
def _cluster(
    work: pathlib.Path,
    *,
    speed: float,
    images: list[pathlib.Path],
    kubeconfig: pathlib.Path | None,
    sim_nodes: bool,
    real: pathlib.Path | None,
    analyzer: bool,
    console: Console,
) -> Iterator[Target]:
    """The emulated cluster, an existing one (optionally with the emulated node side), or a throwaway real one."""
    if kubeconfig is None and real is None:
        options = cluster.ClusterOptions(speed=speed, images=images)
        path = work / "kubeconfig"
        with cluster.SimCluster(path, options) as sim:
            yield Target("emulated", path, f"Emulated cluster at {sim.url}")
        return
    from aegis.sim import controlplane, nodes

    with contextlib.ExitStack() as stack:
        kind: Literal["existing", "real"] = "existing"
        if real is not None:
            console.print(
                "Starting a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)…"
            )
            plane = controlplane.ControlPlane(controlplane.ControlPlaneOptions(assets=real), workdir=work / "k8s")
            stack.enter_context(plane)
            kubeconfig, sim_nodes, kind = plane.kubeconfig, True, "real"
        assert kubeconfig is not None
        parts = (["emulated nodes", "kubelet stand-in"] if sim_nodes else []) + (
            ["K8sGPT analyzer"] if analyzer else []
        )
        if parts:
            node_options = nodes.NodeSideOptions(speed=speed, images=images, kubelet=sim_nodes, analyzer=analyzer)
            stack.enter_context(nodes.NodeSide(kubeconfig, node_options))
        attached = f" ({' + '.join(parts)} attached)" if parts else " (K8sGPT's own operator reports)"
        server = kube_client.api_client_from_config(str(kubeconfig)).configuration.host
        yield Target(kind, kubeconfig, f"Cluster at {server}{attached}")


async def _prepare(api: client.SimClient, target: Target, namespaces: list[str]) -> None:
    """On a cluster the demo did not create: the CRDs present, and no scenario namespace already in use."""
    if target.kind == "emulated":
        return
    taken = [ns for ns in namespaces if await api.get("Namespace", None, ns) is not None]
    if taken:
        raise DemoError(
            f"namespace(s) {', '.join(taken)} already exist on this cluster; the demo creates and removes its own "
            f"(kubectl delete namespace {' '.join(taken)})"
        )
    for crd in crds.all_crds():
        if await api.get("CustomResourceDefinition", None, crd["metadata"]["name"]) is None:
            await api.create(crd)
    deadline = time.monotonic() + 60
    for crd in crds.all_crds():
        while True:
            live = await api.get("CustomResourceDefinition", None, crd["metadata"]["name"]) or {}
            conditions = (live.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"CRD {crd['metadata']['name']} not established within 60s")
            await asyncio.sleep(0.2)


async def _cleanup(api: client.SimClient, namespaces: list[str], console: Console, limit: float = 180) -> None:
    """Remove the scenario namespaces (and wait until they are gone, so the next run can start clean)."""
    for ns in namespaces:
        await api.delete("Namespace", None, ns)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        left = [ns for ns in namespaces if await api.get("Namespace", None, ns) is not None]
        if not left:
            return
        await asyncio.sleep(0.5)
    console.print(f"[yellow]namespaces still terminating after {limit:.0f}s: {', '.join(left)}[/yellow]")


class DemoError(RuntimeError):
    """The demo cannot run as asked; the message says why and what to do."""


def run(
    paths: list[pathlib.Path],
    *,
    approve: demo_report.Approve,
    as_json: bool,
    speed: float = 10.0,
    timeout: float = 120.0,
    workdir: pathlib.Path | None = None,
    kubeconfig: pathlib.Path | None = None,
    sim_nodes: bool = False,
    real: pathlib.Path | None = None,
    analyzer: bool = True,
    operator_kubeconfig: pathlib.Path | None = None,
) -> int:
    """Run the scenarios; 0 when every one met its expected.yaml, 1 otherwise, 2 when they could not run."""
    console = Console(stderr=True, soft_wrap=True)
    out = Console(width=None if sys.stdout.isatty() else 200)
    loaded: list[scenarios.Scenario] = []
    for path in paths:
        try:
            loaded.append(scenarios.load(path))
        except scenarios.ScenarioError as exc:
            console.print(f"[red]{exc}[/red]")
            return 2
    namespaces = [s.namespace for s in loaded]
    if len(set(namespaces)) != len(namespaces):
        console.print("[red]scenarios must use distinct namespaces to run together[/red]")
        return 2
    temp = tempfile.mkdtemp(prefix="aegis-demo-") if workdir is None else None
    work = pathlib.Path(temp) if temp else workdir
    assert work is not None
    # Cluster time runs `speed` times faster: windows in wall seconds shrink with it (20 s of stability = 2 s at 10x).
    settings = config.load_settings(
        state_db=work / "state.sqlite",
        max_concurrent_incidents=8,
        max_applies_per_hour=100,
        settle_seconds=100 / speed,  # the demo heals a dozen workloads at once; production keeps the cap of 10
        shadow_stability_seconds=30 / speed,
        shadow_timeout_seconds=max(240 / speed, 15),
        confirm_timeout_seconds=max(600 / speed, 30),
        confirm_stability_seconds=60 / speed,
        approval_timeout_seconds=3600,  # wall-clock and unscaled: a human at the terminal may take minutes
    )
    logging.basicConfig(
        filename=work / "operator.log",
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    console.print(ollama_line(settings))
    images = [s.images for s in loaded if s.images]
    reports = [demo_report.Report(scenario=s.name, namespace=s.namespace, expected=s.expected) for s in loaded]
    began = time.monotonic()
    failed: str | None = None
    try:
        with _cluster(
            work,
            speed=speed,
            images=images,
            kubeconfig=kubeconfig,
            sim_nodes=sim_nodes,
            real=real,
            analyzer=analyzer,
            console=console,
        ) as target:
            console.print(f"{target.description}; the operator runs in-process with the production handlers.")
            failed = asyncio.run(
                _prepare_and_drive(
                    target, loaded, reports, work, settings, approve, timeout, as_json, console, operator_kubeconfig
                )
            )
    except Exception as exc:  # the cluster could not start, a kubeconfig is wrong: one line, exit 2
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        if temp is not None and failed is None and all(r.met for r in reports):
            shutil.rmtree(temp, ignore_errors=True)
        elif temp is not None:
            console.print(f"Kept for inspection: {work} (operator.log, kubeconfig, state.sqlite)")
    if failed is not None:
        console.print(f"[red]{failed}[/red]")
        return 2
    if as_json:
        for report in reports:
            out.print_json(json.dumps(report.as_json())) if out.is_terminal else print(json.dumps(report.as_json()))
    else:
        out.print(demo_report.table(reports, final=True))
    met = sum(1 for r in reports if r.met)
    console.print(f"{met}/{len(reports)} scenarios met their expected.yaml in {time.monotonic() - began:.0f}s")
    sys.stdout.flush()
    return 0 if met == len(reports) else 1


async def _prepare_and_drive(
    target: Target,
    loaded: list[scenarios.Scenario],
    reports: list[demo_report.Report],
    work: pathlib.Path,
    settings: config.Settings,
    approve: demo_report.Approve,
    limit: float,
    as_json: bool,
    console: Console,
    operator_kubeconfig: pathlib.Path | None = None,
) -> str | None:
    """Check the cluster, start the operator, drive every scenario, clean up; a reason when it could not run."""
    namespaces = [s.namespace for s in loaded]
    async with client.SimClient.from_kubeconfig(target.kubeconfig) as api:
        try:
            await _prepare(api, target, namespaces)
        except (DemoError, client.ApiError) as exc:
            return str(exc)
        # The demo itself (scenarios, approvals, clean-up) uses the cluster's kubeconfig; the operator may log in
        # as someone else, e.g. deploy/aegis's ServiceAccount, to run with exactly the RBAC it is installed with.
        operator = OperatorThread(operator_kubeconfig or target.kubeconfig, settings, work / "operator.log")
        await asyncio.get_running_loop().run_in_executor(None, operator.start)
        try:
            await demo_report.drive(
                api,
                loaded,
                reports,
                approve=approve,
                limit=limit,
                console=console,
                live=not as_json and console.is_terminal and approve != "ask",  # prompts need a still screen
            )
        finally:
            await asyncio.get_running_loop().run_in_executor(None, operator.stop)
            if target.kind != "emulated":
                await _cleanup(api, namespaces, console)
    return None
