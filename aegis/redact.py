"""Redaction of secret-looking values in text that AEGIS stores or shows (evidence, Incident status, prompts).

Applied where text enters AEGIS from the cluster: container logs, K8sGPT failure
texts (the Log analyzer copies raw log lines), event messages. Replaces the value
and keeps the key, so a human still sees *which* secret was involved:
``DATABASE_URL=postgres://admin:****@db/x``, ``password=****``, ``Bearer ****``.
Called by ``aegis.kube.evidence``, ``aegis.k8sgpt`` (intake), ``aegis.notify`` and the LLM layer.
"""

from __future__ import annotations

import re

MASK = "****"

_SECRET_KEY = (
    r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"client[_-]?secret|credentials?|auth(?:orization)?|session[_-]?id|cookie)"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM blocks (keys, certificates with keys)
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        f"-----BEGIN PRIVATE KEY-----{MASK}-----END PRIVATE KEY-----",
    ),
    # user:password@ in URLs and connection strings
    (
        re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]+)@"),
        rf"\g<scheme>\g<user>:{MASK}@",
    ),
    # Authorization headers and bearer/basic tokens
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\1 {MASK}"),
    # KEY=value, key: value, "key": "value" where the key names a secret (the key itself is kept)
    (
        re.compile(
            rf"(?P<key>[\"']?[\w.-]*{_SECRET_KEY}[\w.-]*[\"']?)(?P<sep>\s*[:=]\s*)(?P<q>[\"']?)"
            r"(?P<value>[^\s\"',;&]+)",
            re.I,
        ),
        rf"\g<key>\g<sep>\g<q>{MASK}",
    ),
    # well-known token shapes
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), MASK),  # JWT
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),  # AWS access key id
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), MASK),  # GitHub tokens
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), MASK),  # Slack tokens
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"), MASK),  # API keys in the sk- style
)


def text(value: str) -> str:
    """``value`` with every secret-looking part replaced by ``****``."""
    out = value
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def lines(values: list[str]) -> list[str]:
    return [text(value) for value in values]


MIN_KNOWN = 6  # shorter secret values are too likely to be ordinary words to mask everywhere


def known(value: str, secrets: set[str]) -> str:
    """``value`` with every occurrence of a known secret value (a Secret the workload uses) masked.

    Patterns cannot recognise a password an application prints on its own; the
    values themselves can. Longest first, so a value containing another is masked whole.
    """
    out = value
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_KNOWN and secret in out:
            out = out.replace(secret, MASK)
    return out
