"""The emulated node side against any API server: nodes, kubelet stand-in, volume provisioning, K8sGPT analyzer.

Where a real control plane (``aegis.sim.controlplane`` or any cluster reachable by a
kubeconfig) already runs the Deployment/ReplicaSet/StatefulSet/Endpoints
controllers, the scheduler and garbage collection, this plays what it lacks, as
ordinary API clients: ``N`` Node objects (the ``not-ready`` taint lifted, Ready,
InternalIP ``127.0.0.1``, a Lease heartbeat, ``daemonEndpoints`` pointing at our
kubelet API), the kubelet stand-in for pods bound to those nodes (containers from
the image catalog, init containers, graceful deletion), an external provisioner
for the default StorageClass (creates it if there is none; kube-controller-manager's
PV binder binds), and the K8sGPT analyzer (installs the Result CRD if missing).

The kubelet's HTTPS API (``/containerLogs/{ns}/{pod}/{container}``, self-signed
certificate) serves the containers' logs on loopback, so ``kubectl logs`` and
``pods/log`` work through the real API server (which does not verify kubelet
certificates unless told to).

Callers: ``run_node_side`` (async context manager) and ``NodeSide`` (the same in a
background thread) in the real-control-plane tests; ``serve_nodes`` for the CLI's
``aegis sim nodes --kubeconfig PATH`` (blocks until Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import pathlib
import signal
import ssl
import tempfile
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import aiohttp.web

from aegis import crds
from aegis.sim import analyzer, catalog, client, clock, controllers, kubelet, threaded

logger = logging.getLogger("aegis.sim.nodes")
T = TypeVar("T")


@dataclasses.dataclass
class NodeSideOptions:
    speed: float = 10.0  # cluster seconds per wall second
    # False on a cluster with real kubelets (kind, minikube): only the K8sGPT analyzer runs.
    kubelet: bool = True
    nodes: int = 3
    node_cpu: str = "4"
    node_memory: str = "8Gi"
    node_prefix: str = "sim-worker"  # nodes are PREFIX-1 .. PREFIX-N
    analyzer: bool = True
    analyzer_interval: float = 30.0  # K8sGPT's default analysis interval, in cluster seconds
    tick: float = 0.05  # wall seconds between control loop passes when nothing changes
    images: list[pathlib.Path] = dataclasses.field(default_factory=list)  # extra images.yaml files
    context: str | None = None  # kubeconfig context (default: current-context)
    kubelet_host: str = "127.0.0.1"  # where the kubelet API listens; also the nodes' InternalIP
    kubelet_port: int = 0  # 0: a free port
    provisioner: str = "rancher.io/local-path"  # of the StorageClass created when there is none
    bind_volumes: bool = False  # bind claims ourselves (only for a server without a PV binder)
    heartbeat: bool = True  # renew the nodes' Leases, for a node lifecycle controller
    remove_nodes: bool = True  # delete our Node objects on exit (the pod GC then removes their pods)
    emulator_logs: bool = False  # also PUT logs to the emulator's /sim/v1/logs (when the server is the emulator)


@dataclasses.dataclass
class Running:
    api: client.SimClient
    clock: clock.SimClock
    catalog: catalog.Catalog
    kubelet: kubelet.Kubelet | None  # None when real kubelets run the pods
    analyzer: analyzer.Analyzer | None
    logs: kubelet.LogStore
    nodes: list[str]
    kubelet_url: str


@contextlib.asynccontextmanager
async def run_node_side(
    kubeconfig: str | os.PathLike[str], options: NodeSideOptions | None = None
) -> AsyncIterator[Running]:
    """Run the node side against the API server of ``kubeconfig`` until the block exits."""
    options = options or NodeSideOptions()
    sim_clock = clock.SimClock(options.speed)
    images = catalog.Catalog.load()
    for extra in options.images:
        images.extend(extra)
    store = kubelet.LogStore()
    api = client.SimClient.from_kubeconfig(kubeconfig, options.context)
    async with api:
        if options.analyzer:
            await ensure_crd(api, crds.load("result"))
        changed = asyncio.Event()
        informers = controllers.Informers(api, changed)
        informers.start()
        runner: aiohttp.web.AppRunner | None = None
        loop_task: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(informers.synced(), timeout=30)
            args = (api, informers, sim_clock)
            if not options.kubelet:  # real kubelets run the pods: only K8sGPT's part is played
                k8sgpt = analyzer.Analyzer(*args, interval=options.analyzer_interval) if options.analyzer else None
                loop_task = asyncio.create_task(
                    controllers.run_loop([k8sgpt] if k8sgpt else [], changed, options.tick), name="sim-node-side"
                )
                yield Running(api, sim_clock, images, None, k8sgpt, store, [], "")
                return
            runner, port = await serve_kubelet_api(store, informers, options.kubelet_host, options.kubelet_port)
            nodes = controllers.NodeController(
                *args,
                nodes=options.nodes,
                cpu=options.node_cpu,
                memory=options.node_memory,
                prefix=options.node_prefix,
                internal_ip=options.kubelet_host,
                kubelet_port=port,
                heartbeat=options.heartbeat,
                provisioner=options.provisioner,
            )
            names = set(nodes.names)
            stand_in = kubelet.Kubelet(
                *args, images, logs=store, push_logs=options.emulator_logs, owns_node=names.__contains__
            )
            volumes = controllers.PersistentVolumeController(
                *args, bind=options.bind_volumes, provisioners=(options.provisioner,)
            )
            k8sgpt = analyzer.Analyzer(*args, interval=options.analyzer_interval) if options.analyzer else None
            components: list[Any] = [nodes, stand_in, volumes] + ([k8sgpt] if k8sgpt is not None else [])
            # Ready when our nodes are: created, untainted and Ready before anyone is told they exist.
            await nodes.reconcile()
            loop_task = asyncio.create_task(
                controllers.run_loop(components, changed, options.tick), name="sim-node-side"
            )
            yield Running(
                api=api,
                clock=sim_clock,
                catalog=images,
                kubelet=stand_in,
                analyzer=k8sgpt,
                logs=store,
                nodes=sorted(names),
                kubelet_url=f"https://{options.kubelet_host}:{port}",
            )
        finally:
            logger.debug("node side stopping")
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            logger.debug("control loop stopped")
            if runner is not None:
                await runner.cleanup()
            logger.debug("kubelet API stopped")
            await informers.stop()
            logger.debug("informers stopped")
            if options.remove_nodes and options.kubelet:
                for index in range(1, options.nodes + 1):
                    await api.delete("Node", None, f"{options.node_prefix}-{index}")


async def ensure_crd(api: client.SimClient, crd: dict[str, Any], within: float = 20) -> None:
    """Create a CRD unless it exists, and wait until it is Established (its API is served)."""
    name = crd["metadata"]["name"]
    if await api.get("CustomResourceDefinition", None, name) is None:
        try:
            await api.create(crd)
        except client.ApiError as exc:
            if exc.status != 409:
                raise
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        current = await api.get("CustomResourceDefinition", None, name) or {}
        conditions = (current.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established within {within:.0f}s")


# --- the kubelet API (containerLogs) -------------------------------------------------------------


def _self_signed(host: str) -> ssl.SSLContext:
    """A TLS server context with a fresh self-signed certificate for ``host`` (and localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aegis-sim-kubelet")])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="aegis-kubelet-") as folder:
        cert_path, key_path = pathlib.Path(folder) / "tls.crt", pathlib.Path(folder) / "tls.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context.load_cert_chain(str(cert_path), str(key_path))
    return context


def _nano(wall: str) -> str:
    """``2026-01-02T03:04:05Z`` -> RFC 3339 with nanoseconds, as ``--timestamps`` prints."""
    return wall[:-1] + ".000000000Z" if wall.endswith("Z") and "." not in wall else wall


def container_logs(
    store: kubelet.LogStore, pod: dict[str, Any] | None, namespace: str, name: str, container: str, query: Any
) -> tuple[int, str]:
    """(HTTP status, body) of the kubelet's ``GET /containerLogs/...``, with its error texts."""
    if pod is None:
        return 404, f'pod "{name}" not found'
    entry = store.get(namespace, name, container)
    previous = str(query.get("previous", "")).lower() in ("true", "1")
    if previous:
        if entry is None or entry.previous is None:
            return 400, f'previous terminated container "{container}" in pod "{name}" not found'
        lines, started = entry.previous, entry.previous_started
    else:
        if entry is None or entry.current is None:
            status = pod.get("status") or {}
            every = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
            state = next((s.get("state") or {} for s in every if s.get("name") == container), {})
            reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            why = {"ImagePullBackOff": "trying and failing to pull image", "ErrImagePull": "image can't be pulled"}
            return 400, f'container "{container}" in pod "{name}" is waiting to start: {why.get(reason, reason)}'
        lines, started = entry.current, entry.current_started
    tail = query.get("tailLines")
    if tail is not None and str(tail).lstrip("-").isdigit():
        lines = lines[-int(tail) :] if int(tail) > 0 else []
    if str(query.get("timestamps", "")).lower() in ("true", "1"):
        stamp = _nano(started or datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        text = "".join(f"{stamp} {line}\n" for line in lines)
    else:
        text = "".join(line + "\n" for line in lines)
    limit = query.get("limitBytes")
    if limit is not None and str(limit).isdigit():
        text = text.encode()[: int(limit)].decode(errors="ignore")
    return 200, text


async def serve_kubelet_api(
    store: kubelet.LogStore, informers: controllers.Informers, host: str = "127.0.0.1", port: int = 0
) -> tuple[aiohttp.web.AppRunner, int]:
    """Serve the kubelet API (``/containerLogs``, ``/healthz``) over TLS; returns the runner and its port."""

    async def logs(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        code, text = container_logs(store, informers["Pod"].get(ns, name), ns, name, container, request.query)
        return aiohttp.web.Response(status=code, text=text, content_type="text/plain")

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    app = aiohttp.web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", logs)
    app.router.add_get("/healthz", healthz)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, ssl_context=_self_signed(host))
    await site.start()
    address = runner.addresses[0]
    return runner, int(address[1])


# --- blocking forms ------------------------------------------------------------------------------


class NodeSide:
    """``run_node_side`` in a background thread with its own loop (for tests and blocking callers)."""

    def __init__(self, kubeconfig: str | os.PathLike[str], options: NodeSideOptions | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.options = options or NodeSideOptions()
        self._runner = threaded.Threaded(lambda: run_node_side(kubeconfig, self.options), "aegis-sim-nodes")
        self.running: Running | None = None

    def __enter__(self) -> NodeSide:
        self.running = self._runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self._runner.run(coro, timeout)


def serve_nodes(kubeconfig: str | os.PathLike[str], options: NodeSideOptions | None = None) -> None:
    """``aegis sim nodes --kubeconfig PATH``: run the node side until Ctrl-C (or SIGTERM)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Signal handlers exist only in the main thread and not on Windows: there Ctrl-C still ends the run.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with run_node_side(kubeconfig, options) as running:
            print(
                f"aegis sim nodes: {len(running.nodes)} nodes ({', '.join(running.nodes)}), "
                f"kubelet API {running.kubelet_url}; Ctrl-C to stop",
                flush=True,
            )
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
