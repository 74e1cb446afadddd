# SPDX-License-Identifier: MIT
"""Ticket: an action in flight inside one process, with the future its submitter holds."""

from __future__ import annotations

from typing import Any

from echo_actors.action import Action

__all__ = ["Ticket"]


class Ticket:
    """An Action plus what the process needs while it is in flight.

    Tickets never leave the process (Actions do). ``future`` is None for
    actions assigned straight to a Production. ``started`` and ``done`` are set
    by the Site that runs it, so that a crashed Site's work can be told apart:
    started but not done is the action it held when it died. ``owner`` is the
    Batch message that carries it to a Site: a Site runs it only from that
    batch. The dispatcher changes it, under that Site's lock, only while the
    ticket has not started (stealing), so a ticket runs once per dispatch. ``receipt`` is
    the Production's own handle (a stream entry id for a durable one).
    """

    __slots__ = ("action", "done", "future", "owner", "receipt", "started")

    def __init__(self, action: Action, future: Any = None, receipt: Any = None) -> None:
        self.action = action
        self.future = future
        self.receipt = receipt
        self.owner: Any = None
        self.started = False
        self.done = False

    def __repr__(self) -> str:
        return f"<Ticket {self.action.name} {self.action.id} attempt={self.action.attempt}>"
