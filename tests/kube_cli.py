"""Helpers for real-tier tests that act as a user at a terminal: kubectl with a given kubeconfig, and probes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.error
import urllib.request
from typing import Any

from aegis import approvals


def kubectl(kubeconfig: pathlib.Path, *args: str, stdin: str | None = None, check: bool = True) -> Any:
    """``kubectl --kubeconfig KUBECONFIG ARGS``; with ``check`` a non-zero exit fails the test with its stderr."""
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=120, input=stdin
    )
    if check:
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out


def get_json(kubeconfig: pathlib.Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)


def approval_stamped(kubeconfig: pathlib.Path, namespace: str, name: str) -> bool:
    """Whether kube-apiserver really calls AEGIS's webhook (and trusts its certificate): a server-side dry-run
    approval of Incident ``namespace/name`` comes back stamped by the admission webhook."""
    patch = json.dumps({"spec": {"approval": {"decision": "Approved"}}})
    args = ["patch", "incident", name, "-n", namespace, "--type", "merge", "--dry-run=server", "-o", "json"]
    args += ["-p", patch]
    approval = json.loads(kubectl(kubeconfig, *args).stdout)["spec"]["approval"]
    return bool(approval.get("identity") == approvals.STAMP)


def http_status(url: str) -> int | None:
    """The HTTP status a probe gets (as a kubelet asks: any answer counts), None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None
