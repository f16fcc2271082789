"""The CRDs AEGIS needs, as package data: ``incident.yaml`` (ours) and ``result.yaml`` (K8sGPT's).

``deploy/aegis/crd-incident.yaml`` and ``deploy/k8sgpt/crd-result.yaml`` are the
same files for kubectl/kustomize (a test keeps them identical). Read by the
emulated cluster at start and by ``aegis doctor``.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

import yaml


def load(name: str) -> dict[str, Any]:
    """One CRD document by file stem: ``incident`` or ``result``."""
    text = importlib.resources.files(__name__).joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def all_crds() -> list[dict[str, Any]]:
    return [load("incident"), load("result")]
