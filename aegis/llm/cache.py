"""Answers reused for the same question: K8sGPT repeats its Results and replicas fail alike.

Keyed by the purpose, the model, the incident's fingerprint and a digest of the
evidence as the prompt showed it (normalised: pod hashes, times and counts do not
count). Bounded (LRU) and time-limited. Only answers that parsed are kept; what they
propose is validated against the live cluster again on every use. In memory: a
restart costs at most one new call per open incident. Called by ``aegis.llm.advisor``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any


class AnswerCache:
    def __init__(self, size: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl_seconds
        self.clock = clock
        self._items: collections.OrderedDict[str, tuple[float, Any]] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        found = self._items.get(key)
        if found is None or self.clock() - found[0] > self.ttl:
            if found is not None:
                del self._items[key]
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found[1]

    def put(self, key: str, value: Any) -> None:
        if self.size <= 0 or self.ttl <= 0:
            return
        self._items[key] = (self.clock(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
