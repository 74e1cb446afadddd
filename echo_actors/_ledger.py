# SPDX-License-Identifier: MIT
"""The ledger: one Sequence's outcome counts, outstanding work and dead letters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from echo_actors._ticket import Ticket
from echo_actors.dead_letter import DeadLetter
from echo_actors.errors import CancellationError, error_kind

__all__ = ["Ledger"]


class Ledger:
    """Counts every action from acceptance to its one outcome.

    ``outstanding`` is what was accepted and has not ended; ``idle`` is set
    whenever it is zero, which is what a draining shutdown waits for. Sites
    record outcomes here directly (a lock, not a message: it is on the hot path).
    """

    def __init__(self, idle: Any) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.outstanding = 0
        self.idle = idle
        self.idle.set()
        self._dead: list[DeadLetter] = []

    def accept(self, n: int = 1) -> None:
        """``n`` more actions are this Sequence's to finish."""
        with self._lock:
            self.outstanding += n
            self.counts["accepted"] += n
            if self.idle.is_set():
                self.idle.clear()

    def hand_off(self, n: int = 1) -> None:
        """``n`` accepted actions were handed to a durable store: no longer ours to end."""
        with self._lock:
            self.counts["deferred"] += n
            self.outstanding -= n
            if self.outstanding <= 0:
                self.idle.set()

    def count(self, outcome: str, n: int = 1) -> None:
        """Count something that is not an ending (e.g. a retry)."""
        with self._lock:
            self.counts[outcome] += n

    def end(self, completed: int = 0, dead: int = 0, cancelled: int = 0) -> None:
        """Record endings; every accepted action ends exactly once."""
        with self._lock:
            self.counts["completed"] += completed
            self.counts["dead_lettered"] += dead
            self.counts["cancelled"] += cancelled
            self.outstanding -= completed + dead + cancelled
            if self.outstanding <= 0:
                self.idle.set()

    def dead_letter(self, ticket: Ticket, exc: BaseException, *, keep: bool = True) -> DeadLetter:
        """Make ``ticket`` a dead letter (kept here if ``keep``); fail its future with ``exc``."""
        action = ticket.action
        letter = DeadLetter(
            action=action,
            error_kind=error_kind(exc),
            message=str(exc) or type(exc).__name__,
            attempts=action.attempt,
            first_at=action.created_at,
            failed_at=time.time(),
        )
        if keep:
            with self._lock:
                self._dead.append(letter)
        if ticket.future is not None:
            ticket.future.set_exception((type(exc), exc, exc.__traceback__))
        return letter

    def cancel(self, tickets: list[Ticket]) -> None:
        """Fail the futures of ``tickets`` with CancellationError and count them."""
        for ticket in tickets:
            if ticket.future is not None:
                action = ticket.action
                exc = CancellationError(f"action {action.id} ({action.name}) cancelled")
                ticket.future.set_exception((CancellationError, exc, None))
        self.end(cancelled=len(tickets))

    def dead_letters(self) -> list[DeadLetter]:
        """The dead letters, oldest failure first."""
        with self._lock:
            return list(self._dead)

    def take_dead(self, ids: set[str] | None) -> list[DeadLetter]:
        """Remove and return the dead letters with these action ids (all when None)."""
        with self._lock:
            if ids is None:
                taken, self._dead = self._dead, []
            else:
                taken = [d for d in self._dead if d.action.id in ids]
                self._dead = [d for d in self._dead if d.action.id not in ids]
            return taken
