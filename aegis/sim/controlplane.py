"""A throwaway real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Started from a folder of the real binaries (``AEGIS_KUBE_ASSETS``, else envtest's
``KUBEBUILDER_ASSETS``, else ``shared/k8s/bin`` beside the checkout), bound to free
loopback ports, with generated certificates, static tokens and real RBAC
(``Node,RBAC``). There is no kubelet: ``aegis.sim.nodes`` plays the node side as an
ordinary API client. The controller-manager runs without the node lifecycle
controller (emulated nodes send no heartbeats).

Used by the real-control-plane test tier (one per test session), ``aegis sim serve
--real`` and ``aegis demo --real``. Production code never imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Every request once, at the Metadata level, when its answer is complete (watches: when they end).
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
ADMIN_USER = "aegis-admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be found or started; the message says which part and why."""


def find_assets(explicit: str | os.PathLike[str] | None = None) -> pathlib.Path | None:
    """The folder holding the four binaries, by the documented order; None when there is none."""
    candidates: list[pathlib.Path] = []
    if explicit:
        candidates.append(pathlib.Path(explicit))
    for variable in ("AEGIS_KUBE_ASSETS", "KUBEBUILDER_ASSETS"):
        if os.environ.get(variable):
            candidates.append(pathlib.Path(os.environ[variable]))
    checkout = pathlib.Path(__file__).resolve().parents[2]
    candidates += [checkout.parent / "shared" / "k8s" / "bin", pathlib.Path.cwd().parent / "shared" / "k8s" / "bin"]
    for folder in candidates:
        if all((folder / name).is_file() and os.access(folder / name, os.X_OK) for name in BINARIES):
            return folder.resolve()
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Certificates:
    ca_cert: pathlib.Path
    ca_key: pathlib.Path
    serving_cert: pathlib.Path
    serving_key: pathlib.Path
    sa_key: pathlib.Path
    sa_pub: pathlib.Path


def _write_certificates(folder: pathlib.Path) -> Certificates:
    """A CA, an API serving certificate for 127.0.0.1/localhost/kubernetes.default, a ServiceAccount key."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - a dev extra
        raise ControlPlaneError(
            "a real control plane needs 'cryptography' (pip install 'aegis-operator[dev]')"
        ) from exc

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=2)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem_key(private: rsa.RSAPrivateKey, path: pathlib.Path) -> None:
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aegis-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    serving_key = key()
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    serving = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = key()
    out = Certificates(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        sa_key=folder / "sa.key",
        sa_pub=folder / "sa.pub",
    )
    out.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem_key(ca_key, out.ca_key)
    out.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pem_key(serving_key, out.serving_key)
    pem_key(sa_key, out.sa_key)
    out.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return out


@dataclasses.dataclass
class ControlPlaneOptions:
    assets: pathlib.Path | None = None
    # Extra token users: name -> groups (their tokens are in ``ControlPlane.tokens``).
    users: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    apiserver_args: list[str] = dataclasses.field(default_factory=list)  # any other kube-apiserver flags
    # The API server's audit log (JSON lines, level Metadata: who did what to which resource, and the answer's
    # code): ``ControlPlane.audit_events()`` reads it. What RBAC coverage tests and the benchmark count from.
    audit: bool = False
    # ValidatingAdmissionPolicy (beta in v1.28, off by default there): its feature gate and the
    # admissionregistration.k8s.io/v1beta1 API. On from v1.30 on (GA, admissionregistration.k8s.io/v1).
    admission_policies: bool = False
    start_timeout: float = 90.0


class ControlPlane:
    """A running control plane in a temp folder; ``stop()`` (or leaving the ``with``) removes everything.

    ``kubeconfig`` is an admin kubeconfig (TLS with the generated CA, a token in ``system:masters``);
    ``kubeconfig_for(user)`` writes one for any token user of ``options.users``.
    """

    def __init__(self, options: ControlPlaneOptions | None = None, workdir: pathlib.Path | None = None) -> None:
        self.options = options or ControlPlaneOptions()
        assets = find_assets(self.options.assets)
        if assets is None:
            raise ControlPlaneError(
                "no Kubernetes control-plane binaries (etcd, kube-apiserver, kube-controller-manager, "
                "kube-scheduler): set AEGIS_KUBE_ASSETS or KUBEBUILDER_ASSETS to their folder"
            )
        self.assets = assets
        self._own_dir = workdir is None
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="aegis-k8s-")) if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.tokens: dict[str, str] = {}
        self.port = 0
        self.url = ""
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.dir / "audit.log"
        self.certs: Certificates | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        try:
            self._start()
        except BaseException:
            self.stop(keep_logs=True)
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.options.start_timeout
        self.certs = certs = _write_certificates(self.dir)
        users = {
            ADMIN_USER: ["system:masters"],
            "system:kube-controller-manager": [],
            "system:kube-scheduler": [],
            **self.options.users,
        }
        self.tokens = {user: secrets.token_hex(16) for user in users}
        (self.dir / "tokens.csv").write_text(
            "".join(f'{self.tokens[user]},{user},{user},"{",".join(groups)}"\n' for user, groups in users.items())
        )
        self.tokens_file = self.dir / "tokens.csv"
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name=aegis",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=aegis=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"), "etcd", deadline)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca_cert}",
                f"--service-account-key-file={certs.sa_pub}",
                f"--service-account-signing-key-file={certs.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                f"--token-auth-file={self.tokens_file}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # pods/log goes to the emulated kubelet on loopback, whose address is the node's InternalIP.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--profiling=false",
                "--v=0",
                *self._optional_apiserver_args(),
                *self.options.apiserver_args,
            ],
        )
        self._write_kubeconfig(self.kubeconfig, ADMIN_USER)
        self._wait(lambda: self._readyz(), "kube-apiserver", deadline)
        for component in ("kube-controller-manager", "kube-scheduler"):
            self._write_kubeconfig(self.dir / f"{component}.kubeconfig", f"system:{component}")
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.dir / 'kube-controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'kube-controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'kube-controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={certs.sa_key}",
                f"--root-ca-file={certs.ca_cert}",
                "--use-service-account-credentials=true",
                # Emulated nodes post no heartbeats: the node lifecycle controller would evict their pods.
                "--controllers=*,-nodelifecycle,-cloud-node-lifecycle,-nodeipam",
                "--cluster-cidr=10.244.0.0/16",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
                "--concurrent-namespace-syncs=10",
                "--v=0",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.dir / 'kube-scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'kube-scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'kube-scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=0",
            ],
        )
        # Ready for workloads when the default ServiceAccount exists (pods are refused before that).
        self._wait(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            "the default ServiceAccount (kube-controller-manager)",
            deadline,
        )

    def _optional_apiserver_args(self) -> list[str]:
        args: list[str] = []
        if self.options.audit:
            policy = self.dir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            args += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # an event is written before its answer is sent: nothing is late
                "--audit-log-maxsize=0",  # never rotated (a test session writes a few hundred MB at most)
            ]
        if self.options.admission_policies:
            args += [
                "--feature-gates=ValidatingAdmissionPolicy=true",
                "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            ]
        return args

    def stop(self, keep_logs: bool = False) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()
        if self._own_dir and not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- access ------------------------------------------------------------------------------------

    def kubeconfig_for(self, user: str, path: pathlib.Path | None = None) -> pathlib.Path:
        """A kubeconfig for a token user (one of ``options.users`` or the admin)."""
        path = path or self.dir / f"{user.replace(':', '-')}.kubeconfig"
        self._write_kubeconfig(path, user)
        return path

    def kubeconfig_with_token(self, token: str, path: pathlib.Path, user: str = "token-user") -> pathlib.Path:
        """A kubeconfig for a bearer token minted elsewhere (e.g. ``kubectl create token``)."""
        path.write_text(yaml.safe_dump(self._config(user, token)))
        return path

    def audit_events(self, since: datetime.datetime | None = None, user: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events (``options.audit``), optionally only those received at or after ``since``
        and made by ``user`` (e.g. ``system:serviceaccount:aegis-system:aegis``)."""
        if not self.audit_log.exists():
            return []
        events: list[dict[str, Any]] = []
        with self.audit_log.open(errors="replace") as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line being written as we read
                if user is not None and (event.get("user") or {}).get("username") != user:
                    continue
                if since is not None:
                    when = datetime.datetime.fromisoformat(
                        str(event.get("requestReceivedTimestamp")).replace("Z", "+00:00")
                    )
                    if when < since:
                        continue
                events.append(event)
        return events

    def log(self, component: str) -> str:
        path = self.dir / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _config(self, user: str, token: str) -> dict[str, Any]:
        assert self.certs is not None
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "aegis-real",
                    "cluster": {"server": self.url, "certificate-authority": str(self.certs.ca_cert)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "aegis-real", "context": {"cluster": "aegis-real", "user": user}}],
            "current-context": "aegis-real",
        }

    def _write_kubeconfig(self, path: pathlib.Path, user: str) -> None:
        path.write_text(yaml.safe_dump(self._config(user, self.tokens[user])))
        path.chmod(0o600)

    def _ssl(self) -> ssl.SSLContext:
        assert self.certs is not None
        return ssl.create_default_context(cafile=str(self.certs.ca_cert))

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.tokens[ADMIN_USER]}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._ssl()) as answer:
                return answer.read()
        except (urllib.error.URLError, OSError):
            return None

    def _readyz(self) -> bool:
        return self._get("/readyz") == b"ok"

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        try:
            self.processes[name] = subprocess.Popen(
                [str(self.assets / name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
            )
        finally:
            log.close()

    def _wait(self, check: Any, what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = self.log(name)[-2000:]
                    raise ControlPlaneError(f"{name} exited with {process.returncode} (log in {self.dir}):\n{tail}")
            if check():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{what} not ready within {self.options.start_timeout:.0f}s (logs in {self.dir})")


def _http_ok(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as answer:
        return answer.status == 200
    return False
