# SPDX-License-Identifier: MIT
"""Nonce stores: which admission used a license's nonce, so a captured license can't be replayed.

A license carries a random nonce. When an action is admitted (submitted to a
Sequence, read from a Redis stream), the nonce is claimed for that admission:
the same admission (a retry, a crash requeue, a redelivery of the same entry, a
requeue of its dead letter) may claim it again, any other may not. Records are
kept until the license expires plus ``window`` seconds, and licenses expiring
more than ``window`` ahead are refused, so a store holds at most about two
windows of admissions. :class:`MemoryNonceStore` serves one process; the Redis
production has its own store so that every worker sees the same records.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Protocol

__all__ = ["DEFAULT_WINDOW", "MemoryNonceStore", "NonceStore", "NonceStoreError"]

DEFAULT_WINDOW = 3600.0
"""Seconds: the longest license lifetime a store accepts, and how long records outlive it."""


class NonceStoreError(RuntimeError):
    """The store could not record a nonce (full, unreachable): the action is refused."""


class NonceStore(Protocol):
    """Records ``nonce -> admission`` until the license expires (plus ``window``)."""

    window: float

    def claim(self, nonce: str, admission: str, expires_at: float) -> bool:
        """Record ``nonce`` for ``admission``; False if another admission holds it.

        Raises:
            NonceStoreError: the record could not be made (the caller refuses).
        """
        ...

    def holds(self, nonce: str, admission: str) -> bool:
        """Whether ``nonce`` is recorded for ``admission`` (an expired license's later attempt)."""
        ...


class MemoryNonceStore:
    """A thread-safe nonce store in this process, bounded by time and by ``capacity``.

    Expired records are dropped as new ones come in. When ``capacity`` records
    are live, :meth:`claim` raises :class:`NonceStoreError` (fail closed) rather
    than forget a nonce that could then be replayed.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, capacity: int = 1_000_000) -> None:
        if not window > 0 or capacity < 1:
            raise ValueError("window must be > 0 seconds and capacity >= 1")
        self.window = window
        self.capacity = capacity
        self._lock = threading.Lock()
        self._records: dict[str, tuple[str, float]] = {}
        self._expiry: list[tuple[float, str]] = []

    def claim(self, nonce: str, admission: str, expires_at: float) -> bool:
        """Record ``nonce`` for ``admission``; False if another admission holds it."""
        now = time.time()
        keep_until = expires_at + self.window
        with self._lock:
            self._purge(now)
            held = self._records.get(nonce)
            if held is not None:
                return held[0] == admission
            if len(self._records) >= self.capacity:
                raise NonceStoreError(f"nonce store full ({self.capacity} live nonces)")
            self._records[nonce] = (admission, keep_until)
            heapq.heappush(self._expiry, (keep_until, nonce))
            return True

    def holds(self, nonce: str, admission: str) -> bool:
        """Whether ``nonce`` is recorded for ``admission``."""
        with self._lock:
            self._purge(time.time())
            held = self._records.get(nonce)
            return held is not None and held[0] == admission

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _purge(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] < now:
            _, nonce = heapq.heappop(expiry)
            held = self._records.get(nonce)
            if held is not None and held[1] < now:
                del self._records[nonce]
