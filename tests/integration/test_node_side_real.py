"""The emulated node side (``aegis.sim.nodes``) against the REAL control plane.

The real kube-controller-manager (Deployment/ReplicaSet controllers, PV binder, GC) and
kube-scheduler do their part; our nodes, kubelet stand-in, provisioner and analyzer do the
rest as ordinary API clients. Checked through the real API server with the ``kubernetes``
client and ``kubectl``: rollouts reach Running/Ready, ``pods/log`` (current, ``--previous``,
init containers) is proxied to our kubelet API, deleted pods stay Terminating for their
shutdown time and then go away, claims bind, init containers gate the app containers, and
K8sGPT Results are written. One node side per module at speed 10; a namespace per test.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aegis.sim import analyzer, client, controlplane, nodes

pytestmark = [pytest.mark.real, pytest.mark.integration]

PREFIX = "nodeside-worker"


@pytest.fixture(scope="module")
def node_side(real_control_plane: controlplane.ControlPlane) -> Iterator[nodes.NodeSide]:
    options = nodes.NodeSideOptions(speed=10, nodes=2, node_prefix=PREFIX)
    with nodes.NodeSide(real_control_plane.kubeconfig, options) as side:
        yield side


@pytest.fixture(scope="module")
def kubeconfig(real_control_plane: controlplane.ControlPlane, node_side: nodes.NodeSide) -> pathlib.Path:
    return real_control_plane.kubeconfig


@pytest.fixture(scope="module")
def core(kubeconfig: pathlib.Path) -> Iterator[kubernetes.client.CoreV1Api]:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield kubernetes.client.CoreV1Api(api)
    api.close()


@pytest.fixture()
def namespace(core: kubernetes.client.CoreV1Api) -> Iterator[str]:
    name = f"ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    # Pods are refused until the controller-manager has made the namespace's default ServiceAccount.
    wait_for(lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items))
    yield name
    core.delete_namespace(name)


def wait_for(check: Callable[[], Any], seconds: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except kubernetes.client.ApiException as exc:
            last = exc
            if exc.status != 404:
                raise
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {seconds}s (last: {last!r})")


def kubectl(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=30
    )


def pod_body(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def shell(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script]}


def condition(pod: Any, kind: str) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == kind), None)


def test_nodes_are_ready_untainted_and_point_at_our_kubelet(
    core: kubernetes.client.CoreV1Api, node_side: nodes.NodeSide
) -> None:
    assert node_side.running is not None
    port = int(node_side.running.kubelet_url.rsplit(":", 1)[1])
    for name in node_side.running.nodes:
        node = core.read_node(name)
        assert not [t for t in node.spec.taints or [] if t.key == "node.kubernetes.io/not-ready"]
        assert condition(node, "Ready") == "True"
        assert {"InternalIP": "127.0.0.1", "Hostname": name} == {a.type: a.address for a in node.status.addresses}
        assert node.status.daemon_endpoints.kubelet_endpoint.port == port
        lease = kubernetes.client.CoordinationV1Api(core.api_client).read_namespaced_lease(name, "kube-node-lease")
        assert lease.spec.holder_identity == name and lease.spec.renew_time is not None


def test_sim_client_from_kubeconfig_with_ca_data_and_a_client_certificate(
    real_control_plane: controlplane.ControlPlane, tmp_path: pathlib.Path
) -> None:
    """The ``-data`` forms: CA data, and a client certificate (CN user, O group) signed by the cluster CA."""
    certs = real_control_plane.certs
    assert certs is not None
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cert-admin"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": real_control_plane.url,
                    "certificate-authority-data": b64(certs.ca_cert.read_bytes()),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": b64(cert.public_bytes(serialization.Encoding.PEM)),
                    "client-key-data": b64(
                        key.private_bytes(
                            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                        )
                    ),
                },
            },
            {"name": "nobody", "user": {}},
        ],
        "contexts": [
            {"name": "cert", "context": {"cluster": "c", "user": "u"}},
            {"name": "anonymous", "context": {"cluster": "c", "user": "nobody"}},
        ],
        "current-context": "cert",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))

    async def whoami(context: str | None) -> Any:
        async with client.SimClient.from_kubeconfig(path, context) as api:
            review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            return await api.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review)

    info = asyncio.run(whoami(None))["status"]["userInfo"]
    assert info["username"] == "cert-admin" and "system:masters" in info["groups"]
    with pytest.raises(client.ApiError) as refused:  # no credentials: anonymous is not allowed to
        asyncio.run(whoami("anonymous"))
    assert refused.value.status in (401, 403)


def test_deployment_rolls_out_on_real_controllers_and_our_kubelet(
    kubeconfig: pathlib.Path, core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(core.api_client)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "nginx",
                                "image": "nginx:1.27",
                                "ports": [{"containerPort": 80}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 2},
                            }
                        ]
                    },
                },
            },
        },
    )
    wait_for(lambda: (apps.read_namespaced_deployment("web", namespace).status.ready_replicas or 0) == 2)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert condition(pod, "Ready") == "True"
        assert pod.status.container_statuses[0].state.running is not None
        assert pod.spec.node_name
    rollout = kubectl(kubeconfig, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=10s")
    assert rollout.returncode == 0, rollout.stderr
    assert "successfully rolled out" in rollout.stdout


def test_logs_and_previous_logs_come_through_the_real_api_server(
    kubeconfig: pathlib.Path, core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod_body("talker", [shell("main", "echo hello; echo world; sleep 3600")]))
    core.create_namespaced_pod(namespace, pod_body("crasher", [shell("main", "echo boom; exit 3")]))
    wait_for(lambda: core.read_namespaced_pod("talker", namespace).status.phase == "Running")
    text = wait_for(lambda: core.read_namespaced_pod_log("talker", namespace))
    assert text == "hello\nworld\n"
    assert core.read_namespaced_pod_log("talker", namespace, tail_lines=1) == "world\n"
    stamped = core.read_namespaced_pod_log("talker", namespace, timestamps=True).splitlines()
    assert len(stamped) == 2 and stamped[0].endswith(" hello") and stamped[0][:4].isdigit()
    result = kubectl(kubeconfig, "-n", namespace, "logs", "talker")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nworld\n"

    wait_for(lambda: core.read_namespaced_pod("crasher", namespace).status.container_statuses[0].restart_count >= 1)
    assert core.read_namespaced_pod_log("crasher", namespace, previous=True) == "boom\n"
    previous = kubectl(kubeconfig, "-n", namespace, "logs", "crasher", "--previous")
    assert previous.returncode == 0, previous.stderr
    assert previous.stdout == "boom\n"
    # A container that never ran has no previous instance: the kubelet's error, through the API server.
    missing = kubectl(kubeconfig, "-n", namespace, "logs", "talker", "--previous")
    assert missing.returncode != 0
    assert 'previous terminated container "main" in pod "talker" not found' in missing.stderr


def test_deleted_pod_is_terminating_for_its_shutdown_time_then_goes_away(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    # A shell script as PID 1 ignores SIGTERM: it takes the whole grace period (20 s cluster = 2 s wall).
    core.create_namespaced_pod(
        namespace, pod_body("script", [shell("main", "echo up; sleep 3600")], terminationGracePeriodSeconds=20)
    )
    # nginx stops on SIGTERM at once: gone long before its 30 s grace period.
    core.create_namespaced_pod(namespace, pod_body("nginx", [{"name": "nginx", "image": "nginx:1.27"}]))
    for name in ("script", "nginx"):
        wait_for(lambda name=name: condition(core.read_namespaced_pod(name, namespace), "Ready") == "True")
    started = time.monotonic()
    core.delete_namespaced_pod("script", namespace)
    core.delete_namespaced_pod("nginx", namespace)
    terminating = core.read_namespaced_pod("script", namespace)
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 20
    wait_for(lambda: condition(core.read_namespaced_pod("script", namespace), "Ready") == "False", 5)

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(lambda: gone("nginx"), 5, "nginx deleted")
    assert time.monotonic() - started < 2.0, "a program that handles SIGTERM stops in well under its grace period"
    assert not gone("script"), "the shell script must still be Terminating"
    wait_for(lambda: gone("script"), 10, "script deleted")
    assert time.monotonic() - started >= 1.5, "the shell script takes (nearly) its whole grace period"


def test_claim_with_the_default_storage_class_binds(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    claim = wait_for(
        lambda: (c := core.read_namespaced_persistent_volume_claim("data", namespace)).status.phase == "Bound" and c
    )
    assert claim.spec.storage_class_name  # the DefaultStorageClass admission filled it in
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.status.phase == "Bound"
    assert volume.spec.claim_ref.uid == claim.metadata.uid
    assert claim.status.capacity["storage"] == "1Gi"


def test_failing_init_container_blocks_the_app_and_backs_off(
    kubeconfig: pathlib.Path, core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(
        namespace,
        pod_body(
            "gated",
            [{"name": "app", "image": "nginx:1.27"}],
            initContainers=[shell("migrate", "echo migrating; echo cannot reach db; exit 1")],
        ),
    )

    def backing_off() -> Any:
        pod = core.read_namespaced_pod("gated", namespace)
        init = (pod.status.init_container_statuses or [None])[0]
        return init is not None and init.restart_count >= 1 and init.state.waiting is not None and pod

    pod = wait_for(backing_off)
    init = pod.status.init_container_statuses[0]
    assert init.state.waiting.reason == "CrashLoopBackOff"
    assert init.last_state.terminated.reason == "Error" and init.last_state.terminated.exit_code == 1
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert pod.status.phase == "Pending"
    assert condition(pod, "Initialized") == "False"
    listed = kubectl(kubeconfig, "-n", namespace, "get", "pod", "gated", "--no-headers")
    assert listed.stdout.split()[2] in ("Init:CrashLoopBackOff", "Init:Error"), listed.stdout
    assert core.read_namespaced_pod_log("gated", namespace, container="migrate") == "migrating\ncannot reach db\n"
    waiting = kubectl(kubeconfig, "-n", namespace, "logs", "gated", "-c", "app")
    assert waiting.returncode != 0 and "is waiting to start: PodInitializing" in waiting.stderr


def test_init_containers_run_in_order_then_the_app_starts(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(
        namespace,
        pod_body(
            "staged",
            [{"name": "app", "image": "nginx:1.27"}],
            initContainers=[shell("first", "echo one"), shell("second", "sleep 2; echo two")],
        ),
    )
    pod = wait_for(lambda: condition(p := core.read_namespaced_pod("staged", namespace), "Ready") == "True" and p, 20)
    assert pod.status.phase == "Running"
    assert condition(pod, "Initialized") == "True"
    states = [s.state.terminated for s in pod.status.init_container_statuses]
    assert [(t.reason, t.exit_code) for t in states] == [("Completed", 0), ("Completed", 0)]
    assert states[0].finished_at <= states[1].started_at
    assert core.read_namespaced_pod_log("staged", namespace, container="second") == "two\n"


def test_failing_init_container_fails_a_pod_that_never_restarts(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(
        namespace,
        pod_body(
            "once",
            [{"name": "app", "image": "nginx:1.27"}],
            initContainers=[shell("check", "exit 2")],
            restartPolicy="Never",
        ),
    )
    pod = wait_for(lambda: (p := core.read_namespaced_pod("once", namespace)).status.phase == "Failed" and p)
    init = pod.status.init_container_statuses[0]
    assert init.state.terminated.exit_code == 2 and init.restart_count == 0


def test_analyzer_writes_a_result_for_a_broken_pod(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    custom = kubernetes.client.CustomObjectsApi(core.api_client)
    core.create_namespaced_pod(namespace, pod_body("broken", [{"name": "app", "image": "nginx:9.99-nope"}]))
    name = analyzer.result_name(f"{namespace}/broken")

    def result() -> Any:
        return custom.get_namespaced_custom_object(
            "core.k8sgpt.ai", "v1alpha1", analyzer.RESULT_NAMESPACE, "results", name
        )

    found = wait_for(result, 30, "the K8sGPT Result")
    assert found["spec"]["kind"] == "Pod"
    assert found["spec"]["name"] == f"{namespace}/broken"
    assert any("nginx:9.99-nope" in e["text"] for e in found["spec"]["error"]), found["spec"]["error"]
