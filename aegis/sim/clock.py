"""Simulated time: waits measured in cluster seconds, run ``speed`` times faster.

A back-off of 10 s, an image pull of 1 s or K8sGPT's 30 s interval keep their
real proportions but take ``seconds / speed`` of wall time; logic is never
skipped. Used by the simulated controllers, the kubelet stand-in and the analyzer.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    def __init__(self, speed: float = 10.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        """Cluster seconds since the clock started."""
        return (time.monotonic() - self._start) * self.speed

    def real(self, seconds: float) -> float:
        """Wall seconds for ``seconds`` of cluster time."""
        return seconds / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.real(seconds))
