"""K8sGPT-style anonymization (``AEGIS_ANONYMIZE``): object names become placeholders in prompts, and back.

The namespace, the workload and its owners, its pods, Services, claims and the
ConfigMaps/Secrets it refers to are replaced by ``namespace-1``, ``deployment-1``,
``pod-2``… before the prompt leaves AEGIS; the answer's strings (summary, evidence
lines, action targets and parameters) are mapped back. Longer names are replaced
first, so a pod name is not half-replaced by its Deployment's name. Called by
``aegis.llm.advisor``.
"""

from __future__ import annotations

import re
from typing import Any

from aegis import models

_SOURCE = re.compile(r"(?:configmap|secret|envFrom (?:configMap|secret)) ([a-z0-9][a-z0-9.-]*)", re.I)


class Anonymizer:
    def __init__(self) -> None:
        self.real_to_fake: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, real: str, kind: str) -> None:
        if not real or real in self.real_to_fake or len(real) < 3:
            return
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.real_to_fake[real] = f"{kind.lower()}-{self._counts[kind]}"
        self._pattern = None

    @classmethod
    def for_evidence(cls, evidence: models.Evidence) -> Anonymizer:
        names = cls()
        names.add(evidence.target.namespace, "namespace")
        names.add(evidence.target.name, evidence.target.kind)
        for ref in evidence.owner_chain:
            names.add(ref.name, ref.kind)
        for pod in [*evidence.pods, *evidence.namespace_pods]:
            names.add(pod.name, "pod")
        if evidence.service is not None:
            names.add(evidence.service.name, "service")
        for claim in evidence.claims:
            names.add(claim.name, "claim")
        for container in evidence.target_summary.get("containers") or []:
            for source in container.get("env") or []:
                for match in _SOURCE.finditer(str(source)):
                    names.add(match.group(1), "config")
        for volume in evidence.target_summary.get("volumes") or []:
            parts = str(volume).split(" ", 1)
            if len(parts) == 2:
                names.add(parts[1], "config")
        return names

    def _regex(self, names: list[str]) -> re.Pattern[str]:
        ordered = sorted(names, key=len, reverse=True)
        return re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in ordered) + r")(?![\w-])")

    def mask(self, text: str) -> str:
        if not self.real_to_fake:
            return text
        if self._pattern is None:
            self._pattern = self._regex(list(self.real_to_fake))
        return self._pattern.sub(lambda m: self.real_to_fake[m.group(1)], text)

    def unmask(self, value: Any) -> Any:
        """``value`` (text, or lists and dicts of them) with every placeholder back to the real name."""
        if not self.real_to_fake:
            return value
        fake_to_real = {fake: real for real, fake in self.real_to_fake.items()}
        pattern = self._regex(list(fake_to_real))

        def back(item: Any) -> Any:
            if isinstance(item, str):
                return pattern.sub(lambda m: fake_to_real[m.group(1)], item)
            if isinstance(item, list):
                return [back(x) for x in item]
            if isinstance(item, dict):
                return {back(k): back(v) for k, v in item.items()}
            return item

        return back(value)
