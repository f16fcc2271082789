"""The admission webhook server: Kopf's ``WebhookServer``, configured from ``AEGIS_ADMISSION_*``.

``server(settings)`` is what ``handlers.lifecycle`` puts into Kopf's
``settings.admission.server`` when ``AEGIS_ADMISSION_WEBHOOK`` is on; Kopf then
serves the mutating handler of ``handlers.admission`` at ``/<handler id>`` and, with
``settings.admission.managed``, writes the MutatingWebhookConfiguration itself
(URL or Service, CA bundle, rules). Two things are added to Kopf's server:

- with ``AEGIS_ADMISSION_SERVICE`` the configuration points at a Service
  (``clientConfig.service``), which is how an API server reaches a webhook that runs
  in the cluster; a self-signed certificate then names that Service;
- a self-signed certificate is made with ``cryptography`` (the ``webhook`` extra):
  Kopf's own generator needs ``certbuilder``/``oscrypto``, which cannot read
  OpenSSL 3.0.10 and later. A certificate from files (e.g. cert-manager) needs neither.

With leader election (several replicas), the server waits until this replica leads
before it makes a certificate and yields its client config (``aegis.kube.leader.while_leading``).

``disabled`` is the server when the webhook is off: it never listens and never
yields a configuration (Kopf refuses to start with admission handlers and no server).
Kopf takes its webhook out of the configuration only on a graceful exit, so
``remove_stale`` deletes a configuration an earlier run left behind (OOM-kill, node
loss) when the operator starts with the webhook off: nothing would answer its calls.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator, Collection
from typing import Any

import kopf

from aegis import config
from aegis.kube import client, leader

HANDLER_ID = "incident-approver"  # the webhook's path: /incident-approver
CERT_DAYS = 3650  # made anew at every start


class MissingCryptography(RuntimeError):
    """A self-signed certificate was needed but the ``cryptography`` package is not installed."""


class AdmissionServer(kopf.WebhookServer):
    """Kopf's webhook server; its client config names a Service instead of a URL when one is given."""

    def __init__(
        self,
        *,
        service: tuple[str, str, int] | None = None,
        leadership: leader.Leadership | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.leadership = leadership

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        configs: AsyncIterator[Any] = super().__call__(fn)
        if self.leadership is not None:
            # Several replicas: only the leader makes its certificate, listens and yields the client config whose CA
            # bundle Kopf writes into the configuration (two would overwrite each other's); again at each new term.
            configs = leader.while_leading(configs, self.leadership)
        async for client_config in configs:
            if self.service is not None:
                namespace, name, port = self.service
                via_service: dict[str, Any] = {"service": {"namespace": namespace, "name": name, "port": port}}
                if client_config.get("caBundle"):
                    via_service["caBundle"] = client_config["caBundle"]
                client_config = via_service
            yield client_config

    @staticmethod
    def build_certificate(hostnames: Collection[str], password: str | None = None) -> tuple[bytes, bytes]:
        return self_signed(hostnames, password)


def parse_service(value: str) -> tuple[str, str, int] | None:
    """``'<namespace>/<name>[:port]'`` -> (namespace, name, port); port 443 unless given. Empty: None."""
    if not value:
        return None
    where, _, port = value.partition(":")
    namespace, _, name = where.partition("/")
    return namespace, name, int(port or 443)


def server(settings: config.Settings, leadership: leader.Leadership | None = None) -> AdmissionServer:
    """The webhook server these settings describe (nothing listens until Kopf starts it, and with ``leadership``
    not before this replica leads)."""
    service = parse_service(settings.admission_service)
    host = settings.admission_host
    sans: list[str] = []
    if service is not None:
        namespace, name, _ = service
        sans = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}"]
        host = host or sans[0]
    return AdmissionServer(
        service=service,
        leadership=leadership,
        addr=settings.admission_addr,
        port=settings.admission_port,
        host=host,
        insecure=settings.admission_insecure,
        certfile=settings.admission_cert_file,
        pkeyfile=settings.admission_key_file,
        cafile=settings.admission_ca_file,
        extra_sans=sans,
    )


def check(settings: config.Settings) -> None:
    """Fail at start-up (not at the first request) when the server could not serve TLS."""
    if settings.admission_insecure:
        return
    if settings.admission_cert_file is not None:
        for path in (settings.admission_cert_file, settings.admission_key_file, settings.admission_ca_file):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"admission webhook: {path} does not exist")
        return
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise MissingCryptography(
            "admission webhook: a self-signed certificate needs the 'cryptography' package "
            "(pip install 'aegis-operator[webhook]'); or mount a certificate and set AEGIS_ADMISSION_CERT_FILE "
            "and AEGIS_ADMISSION_KEY_FILE"
        ) from None


async def disabled(fn: Any) -> AsyncIterator[Any]:
    """The admission "server" when the webhook is off: nothing listens, no configuration is written."""
    await asyncio.Event().wait()
    yield  # pragma: no cover  (never reached: makes this an async generator)


def ours(hook: Any, configuration: str) -> bool:
    """Whether one webhook of a configuration is the one Kopf writes for ``handlers.admission``."""
    if not isinstance(hook, dict):
        return False
    client_config = hook.get("clientConfig") or {}
    where = str(client_config.get("url") or (client_config.get("service") or {}).get("path") or "")
    path = where.split("?", 1)[0].rstrip("/")
    return hook.get("name") == f"{HANDLER_ID}.{configuration}" and path.endswith(f"/{HANDLER_ID}")


async def remove_stale(cluster: client.Cluster, configuration: str, logger: Any) -> bool:
    """With the webhook off: delete the MutatingWebhookConfiguration an earlier run left behind, if any.

    Only a configuration whose webhooks are all this handler's (``ours``) is deleted, and only the
    incarnation that was read (uid precondition). Best effort: a failure is logged, never raised.
    True when a configuration was deleted.
    """
    if not configuration:
        return False
    try:
        found = await cluster.get_mutating_webhook_configuration(configuration)
        hooks = list((found or {}).get("webhooks") or [])
        if not hooks:
            return False  # absent, or emptied by a graceful exit: nothing calls the operator
        if not all(ours(hook, configuration) for hook in hooks):
            logger.warning(
                "MutatingWebhookConfiguration %s has webhooks not written by AEGIS; left alone", configuration
            )
            return False
        uid = ((found or {}).get("metadata") or {}).get("uid")
        if await cluster.delete_mutating_webhook_configuration(configuration, uid=uid):
            logger.warning(
                "the admission webhook is off: deleted MutatingWebhookConfiguration %s left by an earlier run "
                "(it pointed at a webhook nobody serves now)",
                configuration,
            )
            return True
        return False
    except Exception as exc:  # best effort: never stops the operator
        logger.warning(
            "could not check or delete a stale MutatingWebhookConfiguration %s: %s (delete it by hand if it is "
            "left from a run with AEGIS_ADMISSION_WEBHOOK on)",
            configuration,
            exc,
        )
        return False


def self_signed(hostnames: Collection[str], password: str | None = None) -> tuple[bytes, bytes]:
    """A self-signed certificate (also its own CA, for the webhook's caBundle) and its key, PEM.

    Names that parse as IP addresses become IP SANs (unspecified ones like 0.0.0.0 are left out);
    the first other name is the common name.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise MissingCryptography("a self-signed certificate needs the 'cryptography' package") from None

    names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for hostname in hostnames:
        try:
            ip = ipaddress.ip_address(hostname)
        except ValueError:
            if hostname and hostname not in names:
                names.append(hostname)
        else:
            if not ip.is_unspecified and ip not in ips:
                ips.append(ip)
    if not names and not ips:
        raise ValueError("a certificate needs at least one host name or address")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else str(ips[0]))])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names] + [x509.IPAddress(ip) for ip in ips]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
