# SPDX-License-Identifier: MIT
"""The ledger: one Sequence's outcome counts, outstanding work and dead letters."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from echo_actors.dead_letter import DeadLetter

__all__ = ["Ledger"]


class Ledger:
    """Counts every action from acceptance to its one ending.

    ``outstanding`` is what was accepted and has not ended; ``idle`` is set
    whenever it is zero, which is what a draining shutdown waits for. Only
    :class:`~echo_actors._settle.Settler` ends actions; submitters pass the
    admission gate here (:meth:`admit`), so that a shutdown that closed it
    knows every action it must still wait for.
    """

    def __init__(self, idle: Any, max_dead: int = 10_000) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.outstanding = 0
        self.idle = idle
        self.idle.set()
        self._idle = True  # what idle is: read here instead of idle.is_set(), a call, each time
        self.open = True
        self.closed_because = "this Sequence is shutting down and takes no more actions"
        self._dead: deque[DeadLetter] = deque()
        self._max_dead = max_dead

    def admit(self, n: int = 1) -> None:
        """Accept ``n`` submitted actions, unless the gate was closed.

        Raises:
            RuntimeError: the Sequence is shutting down (nothing was accepted).
        """
        with self._lock:
            if not self.open:
                raise RuntimeError(self.closed_because)
            if n > 0:  # _accept, inline: this is every submit's path
                self.outstanding += n
                self.counts["accepted"] += n
                if self._idle:
                    self._idle = False
                    self.idle.clear()

    def accept(self, n: int = 1) -> None:
        """``n`` more actions are this Sequence's to finish (chained, or assigned to the
        production), whether or not the gate is open."""
        with self._lock:
            self._accept(n)

    def _accept(self, n: int) -> None:
        if n <= 0:
            return
        self.outstanding += n
        self.counts["accepted"] += n
        if self._idle:
            self._idle = False
            self.idle.clear()

    def close(self, because: str | None = None) -> None:
        """Close the admission gate: :meth:`admit` raises from now on (saying ``because``)."""
        with self._lock:
            if self.open and because is not None:
                self.closed_because = because
            self.open = False

    def hand_off(self, n: int = 1) -> None:
        """``n`` accepted actions were handed to a durable store: no longer ours to end."""
        self.end(deferred=n)

    def count(self, outcome: str, n: int = 1) -> None:
        """Count something that is not an ending (e.g. a retry)."""
        with self._lock:
            self.counts[outcome] += n

    def end(self, completed: int = 0, dead: int = 0, cancelled: int = 0, deferred: int = 0) -> None:
        """Record endings; every accepted action ends exactly once."""
        n = completed + dead + cancelled + deferred
        if not n:
            return
        with self._lock:
            counts = self.counts  # a Counter: a key never counted reads 0
            if completed:
                counts["completed"] += completed
            if dead:
                counts["dead_lettered"] += dead
            if cancelled:
                counts["cancelled"] += cancelled
            if deferred:
                counts["deferred"] += deferred
            self.outstanding -= n
            if self.outstanding <= 0 and not self._idle:
                self._idle = True
                self.idle.set()

    def keep(self, letter: DeadLetter) -> None:
        """Keep a dead letter in memory; past the limit the oldest is dropped (and counted)."""
        with self._lock:
            if self._max_dead <= 0:
                self.counts["dead_letters_dropped"] += 1
                return
            if len(self._dead) >= self._max_dead:
                self._dead.popleft()
                self.counts["dead_letters_dropped"] += 1
            self._dead.append(letter)

    def dead_letters(self) -> list[DeadLetter]:
        """The dead letters kept, oldest failure first."""
        with self._lock:
            return list(self._dead)

    def take_dead(self, ids: set[str] | None) -> list[DeadLetter]:
        """Remove and return the dead letters with these action ids (all when None)."""
        with self._lock:
            if ids is None:
                taken = list(self._dead)
                self._dead.clear()
            else:
                taken = [d for d in self._dead if d.action.id in ids]
                self._dead = deque(d for d in self._dead if d.action.id not in ids)
            return taken
