"""Integration fixtures: the emulated Kubernetes API over real HTTP, the real client, the real operator."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from aegis.sim import server

pytestmark = pytest.mark.integration


@pytest.fixture()
def sim(tmp_path: pathlib.Path) -> Iterator[server.EmulatedCluster]:
    with server.EmulatedCluster(tmp_path / "kubeconfig") as cluster:
        yield cluster


@pytest.fixture()
def api(sim: server.EmulatedCluster) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield client
    client.close()


class Kube:
    """Small synchronous helpers over the real client, for arranging and asserting."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise

    def create(self, body: dict[str, Any]) -> None:
        """Create an object (and its namespace); a status in the body is written through /status, as controllers do.

        The server assigns the uid: it is written back into ``body`` so owner references built from it are real.
        """
        kind, ns = body["kind"], body["metadata"].get("namespace")
        if ns:
            self.namespace(ns)
        status = body.get("status")
        body["metadata"].pop("uid", None)
        if kind == "Pod":
            body["metadata"]["uid"] = self.core.create_namespaced_pod(ns, body).metadata.uid
            if status:
                self.core.patch_namespaced_pod_status(body["metadata"]["name"], ns, {"status": status})
        elif kind == "Event":
            self.core.create_namespaced_event(ns, body)
        elif kind == "Service":
            self.core.create_namespaced_service(ns, body)
        elif kind == "Endpoints":
            self.core.create_namespaced_endpoints(ns, body)
        elif kind == "Deployment":
            body["metadata"]["uid"] = self.apps.create_namespaced_deployment(ns, body).metadata.uid
            if status:
                self.apps.patch_namespaced_deployment_status(body["metadata"]["name"], ns, {"status": status})
        elif kind == "ReplicaSet":
            body["metadata"]["uid"] = self.apps.create_namespaced_replica_set(ns, body).metadata.uid
            if status:
                self.apps.patch_namespaced_replica_set_status(body["metadata"]["name"], ns, {"status": status})
        elif kind == "Result":
            self.custom.create_namespaced_custom_object("core.k8sgpt.ai", "v1alpha1", ns, "results", body)
            if status:
                self.custom.patch_namespaced_custom_object_status(
                    "core.k8sgpt.ai", "v1alpha1", ns, "results", body["metadata"]["name"], {"status": status}
                )
        else:
            raise ValueError(kind)

    def incidents(self, ns: str | None = None) -> list[dict[str, Any]]:
        if ns is None:
            return self.custom.list_cluster_custom_object("aegis.dev", "v1alpha1", "incidents")["items"]
        return self.custom.list_namespaced_custom_object("aegis.dev", "v1alpha1", ns, "incidents")["items"]


@pytest.fixture()
def kube(api: kubernetes.client.ApiClient) -> Kube:
    return Kube(api)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}; last value: {last!r}")


def demo_windows(speed: float) -> dict[str, str]:
    """The demo's speed-scaled windows (aegis/demo.py), as an operator subprocess reads them from its environment:
    for a node side running ``speed`` times faster than real time."""
    return {
        "AEGIS_MAX_CONCURRENT_INCIDENTS": "8",
        "AEGIS_MAX_APPLIES_PER_HOUR": "100",
        "AEGIS_SETTLE_SECONDS": str(100 / speed),
        "AEGIS_SHADOW_STABILITY_SECONDS": str(30 / speed),
        "AEGIS_SHADOW_TIMEOUT_SECONDS": str(max(240 / speed, 15)),
        "AEGIS_CONFIRM_STABILITY_SECONDS": str(60 / speed),
        "AEGIS_CONFIRM_TIMEOUT_SECONDS": str(max(600 / speed, 30)),
    }


class Operator:
    """`kopf run -m handlers` as a real subprocess against the emulated cluster."""

    def __init__(self, kubeconfig: pathlib.Path, workdir: pathlib.Path, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / "operator.log"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "AEGIS_STATE_DB": str(workdir / "state.sqlite"),
            # These tests drive intake and diagnosis against the bare API (no controllers run here, so nothing
            # could roll out in a shadow namespace); remediation is tested end to end in tests/e2e.
            "AEGIS_MODE": "observe",
            "AEGIS_METRICS_PORT": "0",  # several operators at once: a test that scrapes metrics picks a free port
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "-m", "handlers", "--standalone", "--all-namespaces", "--verbose"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: b"Starting the watch-stream for results" in self.log_path.read_bytes() or self.exited(),
            30,
            what="the operator to start",
        )
        assert not self.exited(), self.log()
        return self

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture()
def operator(sim: server.EmulatedCluster, tmp_path: pathlib.Path) -> Iterator[Operator]:
    op = Operator(sim.kubeconfig, tmp_path)
    yield op
    if op.process is not None and not op.exited():
        op.stop()
