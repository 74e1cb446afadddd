# SPDX-License-Identifier: MIT
"""Production: where pending actions wait until a Sequence's dispatcher takes them.

:class:`Production` is the in-memory default. A durable one (on Redis
Streams, say) subclasses it: it fills the same local queue from its store
and overrides the hooks marked "durable productions override" so that
acknowledgements, delays and retries live in the store too.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import ClassVar

from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.dead_letter import DeadLetter

__all__ = ["Production"]


class Production:
    """An in-memory queue of pending actions (the embedded default).

    ``assign(action)`` (Echo's Assign) queues an action for whichever Sequence
    consumes this production. A Production feeds one Sequence at a time; a
    named production kept in Life (Echo's Karma) can be handed from one
    Sequence to the next. Thread-safe.
    """

    acknowledges: ClassVar[bool] = False
    """Whether Sites must call :meth:`ack` for every completed ticket (durable productions)."""

    verifies_licenses: ClassVar[bool] = False
    """Whether the tickets it delivers were checked at its own door (license, nonce, expiry)."""

    stores_dead_letters: ClassVar[bool] = False
    """Whether :meth:`bury` keeps dead letters (then the Sequence keeps none in memory)."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._queue: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._accept: Callable[[int], None] | None = None
        self._waiting = False

    def assign(self, action: Action) -> None:
        """Queue ``action`` to be executed (no result is delivered to the caller).

        Raises:
            TypeError: ``action`` is not an Action.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        with self._lock:
            if self._accept is not None:
                self._accept(1)
            self._queue.append(Ticket(action))
        if self._waiting:
            self._notify()

    def pending(self) -> int:
        """How many actions wait here."""
        return len(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def tickets(self) -> list[Ticket]:
        """A snapshot of the waiting tickets, oldest first (for Sequences)."""
        return list(self._queue)

    def actions(self) -> list[Action]:
        """A snapshot of the waiting actions, oldest first."""
        with self._lock:
            return [ticket.action for ticket in self._queue]

    # The consumer side: used by a Sequence's dispatcher.

    def put(self, ticket: Ticket) -> None:
        """Queue a ticket and wake the consumer if it sleeps (for Sequences)."""
        self._queue.append(ticket)
        if self._waiting:
            self._notify()

    def put_many(self, tickets: list[Ticket]) -> None:
        """Queue several tickets with one wake-up (for Sequences)."""
        self._queue.extend(tickets)
        if self._waiting:
            self._notify()

    def _notify(self) -> None:
        with self._lock:
            wake, self._waiting = (self._wake if self._waiting else None), False
        if wake is not None:
            wake()

    def bind(
        self, wake: Callable[[], None] | None, accept: Callable[[int], None] | None = None
    ) -> None:
        """Attach a consumer (None detaches): ``wake()`` when work arrives while it
        sleeps, ``accept(n)`` for actions assigned here, those waiting now included.

        Raises:
            RuntimeError: another consumer is attached already.
        """
        with self._lock:
            if wake is not None and self._wake is not None:
                raise RuntimeError(f"production {self.name!r} already feeds a Sequence")
            self._wake, self._accept = wake, accept
            self._waiting = wake is not None  # the first put wakes the new consumer
            if accept is not None and self._queue:
                accept(len(self._queue))

    def take(self, limit: int) -> list[Ticket]:
        """Up to ``limit`` tickets, oldest first; when none are left, arm the wake-up.

        Arming before the last look means a ticket put concurrently is either
        returned here or wakes the consumer: no wake-up is lost.
        """
        queue = self._queue
        out: list[Ticket] = []
        while len(out) < limit:
            try:
                out.append(queue.popleft())
            except IndexError:
                self._waiting = True
                try:
                    out.append(queue.popleft())
                    self._waiting = False
                except IndexError:
                    break
        if not queue:
            # Emptied by taking exactly ``limit``: the consumer may sleep now, so the next
            # put must wake it (else that ticket waits for some other event while a Site
            # idles). A put racing this costs at most one spare wake-up.
            self._waiting = True
        return out

    def ack(self, tickets: list[Ticket]) -> None:
        """Tickets that ended, completed or dead-lettered (durable productions override)."""

    def complete(self, ticket: Ticket, result: object, following: Action | None) -> bool:
        """``ticket`` completed with ``result``; ``following`` is its ``next``, ready to run.

        Returns True when the production took care of both durably: the
        ticket's acknowledgement and ``following`` (added to its store in the
        same atomic step, with the result if it keeps results); the Sequence
        then neither acknowledges it nor queues ``following`` itself. The
        in-memory production returns False: the Sequence acknowledges as
        usual and queues ``following`` in this process. Never raises.
        """
        return False

    def bury(self, ticket: Ticket, letter: DeadLetter) -> None:
        """``ticket`` ended as dead letter ``letter`` (durable productions store it)."""
        self.ack([ticket])

    def pause(self) -> None:
        """Stop taking new work from the store (a draining shutdown; durable productions)."""

    def defer(self, ticket: Ticket, delay: float) -> bool:
        """Hold ``ticket`` for ``delay`` seconds (a delay or a retry backoff) in the store.

        Returns False when the production keeps no timers of its own (in
        memory): the Sequence then waits on its runtime's scheduler. Durable
        productions override this so that a waiting action survives a crash.
        """
        return False

    def release(self, tickets: list[Ticket]) -> None:
        """Tickets taken but not started, given back at shutdown (durable productions
        override this to leave them queued in the store instead of cancelling them)."""

    def hand_back(self) -> list[Ticket]:
        """Remove and return every waiting ticket (shutdown without drain).

        One ``popleft`` at a time, like :meth:`take`: a ticket put concurrently
        is either returned here or stays queued for the next sweep, never lost.
        """
        queue = self._queue
        out: list[Ticket] = []
        while True:
            try:
                out.append(queue.popleft())
            except IndexError:
                return out

    def __repr__(self) -> str:
        return f"<Production {self.name!r} pending={len(self._queue)}>"
