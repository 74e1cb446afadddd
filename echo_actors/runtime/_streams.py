# SPDX-License-Identifier: MIT
"""Streams: named random generators derived from one seed, the same layout on every runtime."""

from __future__ import annotations

import random
import threading

__all__ = ["Streams", "stream_seed"]


def stream_seed(seed: int, name: str, count: int) -> str:
    """The seed of the ``count``-th generator (from 0) handed out for ``name``."""
    return f"{seed}:{name}:{count}"


class Streams:
    """``random(name)``: with a ``seed``, a generator seeded by :func:`stream_seed`;
    without one, an unseeded generator (the OS's entropy). Thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def random(self, name: str = "") -> random.Random:
        seed = self.seed
        if seed is None:
            return random.Random()
        with self._lock:
            count = self._counts.get(name, 0)
            self._counts[name] = count + 1
        return random.Random(stream_seed(seed, name, count))
