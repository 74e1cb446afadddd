# SPDX-License-Identifier: MIT
"""Ticket: one attempt of an action inside one process, and the one lock on who runs it."""

from __future__ import annotations

import threading
from typing import Any

from echo_actors.action import Action

__all__ = ["AWAITING", "ENDED", "QUEUED", "RUNNING", "SENT", "Ticket"]

QUEUED, SENT, RUNNING, ENDED, AWAITING = 0, 1, 2, 3, 4
"""A ticket's states: waiting (production, backlog, timer); in a mailbox; running; settled;
started, and its coroutine handed to the Sequence's event loop (which alone settles it)."""

_claims = threading.Lock()
"""Guards the transitions out of QUEUED and SENT, the only states two parties may race for:
a Site starting a ticket, the dispatcher taking an unstarted one back (stealing, a crashed
Site) and a cancellation. It is never held across a call that could switch greenlets.
RUNNING belongs to the Site that claimed it, and only that Site settles it, unless it hands
the ticket to the event loop (AWAITING): from then on only the loop's runner settles it. So
ending a started ticket takes no lock: a cancellation only reads its state, and stops."""


class Ticket:
    """An attempt of an Action plus what the process needs while it is in flight.

    Tickets never leave the process (Actions do). ``future`` is None for
    actions assigned straight to a Production; ``receipt`` is the
    Production's own handle (a stream entry id for a durable one). ``batch``
    is the Batch message that carries it to a Site while it is SENT. A retry
    or a crash requeue is a new Ticket for the same future: each attempt ends
    once. ``holds_key`` marks the one ticket of an ordered key allowed to run.
    ``admission`` (an id and a wall-clock time) is the submission it belongs
    to: a license's nonce is claimed for it, and later attempts pass again.
    ``accepted`` and ``started`` are read from the runtime's clock at
    acceptance and when a Site claims it (see :class:`~echo_actors.times.Times`).
    """

    __slots__ = (
        "accepted", "action", "admission", "batch", "fate", "future", "holds_key", "receipt",
        "site", "started", "state",
    )  # fmt: skip

    fate: Any
    """While its coroutine is a task of the Sequence's event loop: the Fate it runs under."""
    site: int
    """Idem: the Site that handed it over (-1: none). Both unset before (no cost per ticket)."""

    def __init__(
        self, action: Action, future: Any = None, receipt: Any = None,
        admission: tuple[str, float] | None = None, accepted: float = 0.0,
    ) -> None:
        self.action = action
        self.future = future
        self.receipt = receipt
        self.admission = admission
        self.accepted = accepted
        self.started: float | None = None
        self.batch: Any = None
        self.state = QUEUED
        self.holds_key = False

    def again(self, action: Action) -> Ticket:
        """The ticket of the next attempt (same future, receipt, admission and acceptance
        time, key held)."""
        ticket = Ticket(action, self.future, self.receipt, self.admission, self.accepted)
        ticket.holds_key = self.holds_key
        return ticket

    def claim(self, batch: Any) -> bool:
        """SENT in ``batch`` -> RUNNING: True if the caller (that batch's Site) may run it."""
        with _claims:
            if self.state != SENT or self.batch is not batch:
                return False
            self.state = RUNNING
            return True

    def unsend(self, batch: Any) -> bool:
        """SENT in ``batch`` -> QUEUED (taken back from that mailbox): True if it still was."""
        with _claims:
            if self.state != SENT or self.batch is not batch:
                return False
            self.state, self.batch = QUEUED, None
            return True

    def __repr__(self) -> str:
        return f"<Ticket {self.action.name} {self.action.id} attempt={self.action.attempt}>"
