"""Helpers for real-tier tests that act as a user at a terminal: kubectl with a given kubeconfig, and probes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.error
import urllib.request
from typing import Any


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


def http_status(url: str) -> int | None:
    """The HTTP status a probe gets (as a kubelet asks: any answer counts), None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None
