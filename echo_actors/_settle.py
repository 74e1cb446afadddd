# SPDX-License-Identifier: MIT
"""Settler: the one place where an attempt of an action ends.

Whoever runs a ticket calls :meth:`Settler.settle` from a ``finally``, whatever
happened; whoever cancels one calls it too. A compare-and-set on the ticket's
state makes the first call win and every later one a no-op, so an action is
never ended twice: its future resolved, its entry acknowledged or buried, its
ending counted, its retry scheduled or its ``next`` submitted exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from echo_actors._ledger import Ledger
from echo_actors._logging import get_logger
from echo_actors._messages import KeyFree, Requeue
from echo_actors._ticket import AWAITING, ENDED, RUNNING, Ticket, _claims
from echo_actors.action import Action
from echo_actors.action import now as action_now
from echo_actors.dead_letter import DeadLetter
from echo_actors.errors import CancellationError, CrashError, EchoError, ExecutionError, error_kind
from echo_actors.fate import Fate
from echo_actors.license import sign
from echo_actors.plan import Plan, RetryPolicy
from echo_actors.production import Production
from echo_actors.runtime import Scheduler, TimerHandle
from echo_actors.times import Times

__all__ = ["ABANDONED", "CANCELLED", "COMPLETED", "CRASHED", "FAILED", "Settler", "Tally"]

_log = get_logger("echo_actors.sequence")

COMPLETED, FAILED, CRASHED, CANCELLED = "completed", "failed", "crashed", "cancelled"
"""Outcomes of an attempt: a result; an error (retried or dead-lettered); the Site died
running it (requeued, the attempt counted); never started (handed back).

ABANDONED: a coroutine cut short because the Sequence's event loop stopped under it (a
shutdown whose timeout ran out): handed back like a cancelled action."""

ABANDONED = "abandoned"

_STARTED = (RUNNING, AWAITING)
"""A ticket's states while its runner (a Site, or the event loop's) alone may end it."""


class Tally:
    """Endings of one Site batch, counted and acknowledged together when it ends."""

    __slots__ = ("acks", "cancelled", "completed", "dead", "failed")

    def __init__(self) -> None:
        self.completed = self.dead = self.cancelled = self.failed = 0
        self.acks: list[Ticket] = []


class Settler:
    """Ends attempts (:meth:`settle`), puts accepted tickets on their way, hands back.

    Shared by a Sequence's Sites, its dispatcher, its timers and submitters;
    everything it writes is either the ticket it settles (after winning the
    compare-and-set), the thread-safe ledger and production, or its waiting
    timers under its own lock.
    """

    def __init__(
        self, plan: Plan, production: Production, ledger: Ledger, scheduler: Scheduler,
        random: Any, post: Callable[[Any], None], clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.clock = clock
        """The runtime's clock (``runtime.monotonic``): when an action ends, for its Times."""
        self.production = production
        self.ledger = ledger
        self.scheduler = scheduler
        self.cancelling = False
        self.cancelled_because = "cancelled"
        self.handed_back: list[Ticket] = []
        self.observe: Callable[[str, Any], None] | None = None
        """Told ``(outcome, action)`` at each ending (completed, retried, crash_requeued,
        dead_lettered, cancelled): for metrics; quick, and never raising."""
        self._post = post
        self._random = random
        self._waiting: dict[Ticket, TimerHandle] = {}
        self._lock = threading.Lock()

    # Putting accepted tickets on their way

    def enqueue(self, ticket: Ticket) -> None:
        """An accepted ticket: on a timer if delayed, else to the production."""
        delay = ticket.action.delay
        if delay > 0:
            self._wait(delay, ticket)
        else:
            self.put(ticket)

    def put(self, ticket: Ticket) -> None:
        """To the production; once a cancelling shutdown began, handed back instead.

        Lock-free on the hot path: whoever puts after the shutdown swept the
        production sweeps it again, so nothing is stranded there.
        """
        self.production.put(ticket)
        if self.cancelling:
            self.sweep()

    def put_many(self, tickets: list[Ticket]) -> None:
        """Several undelayed tickets with one wake-up."""
        self.production.put_many(tickets)
        if self.cancelling:
            self.sweep()

    def sweep(self) -> None:
        """Cancel whatever waits in the production (a cancelling shutdown)."""
        for ticket in self.production.hand_back():
            self.settle(ticket, CANCELLED)

    def _wait(self, delay: float, ticket: Ticket, *, local: bool = False) -> None:
        if not local and self.production.defer(ticket, delay):
            ticket.state = ENDED  # the durable store holds it now: no longer ours to end
            self.ledger.hand_off()
            return
        with self._lock:
            if not self.cancelling:
                self._waiting[ticket] = self.scheduler.call_later(delay, self._due, ticket)
                return
        self.settle(ticket, CANCELLED)

    def _due(self, ticket: Ticket) -> None:
        with self._lock:
            if self._waiting.pop(ticket, None) is None:
                return  # cancelled by a shutdown
        if ticket.holds_key:
            self._post(Requeue(ticket))
        else:
            self.put(ticket)

    def cancel_waiting(self, action_id: str) -> bool:
        """Cancel the ticket of ``action_id`` that waits on a timer; True if there was one."""
        with self._lock:
            found = [(t, h) for t, h in self._waiting.items() if t.action.id == action_id]
            for ticket, _ in found:
                del self._waiting[ticket]
        for ticket, handle in found:
            handle.cancel()
            self.settle(ticket, CANCELLED)
        return bool(found)

    def waiting(self) -> int:
        """Tickets waiting on a delay or a retry backoff."""
        return len(self._waiting)

    def start_cancelling(self, because: str | None = None) -> None:
        """From now on nothing new starts: waiting tickets and newcomers are cancelled."""
        with self._lock:
            if not self.cancelling and because is not None:
                self.cancelled_because = because
            self.cancelling = True
            waiting = list(self._waiting.items())
            self._waiting.clear()
        for ticket, handle in waiting:
            handle.cancel()
            self.settle(ticket, CANCELLED)
        self.sweep()

    # Ending an attempt

    def settle(
        self, ticket: Ticket, outcome: str, value: Any = None, fate: Fate | None = None,
        tally: Tally | None = None, site: int = -1,
    ) -> bool:
        """End this attempt of ``ticket`` with ``outcome``; False if it had ended already.

        A cancellation only ends a ticket that has not started (ABANDONED ends
        one whose coroutine the stopping event loop cut short). ``value`` is
        the result (COMPLETED) or the exception (FAILED, CRASHED);
        ``fate`` is the runner's snapshot (retry policy, license key for
        ``next``). With a ``tally``, counts and acknowledgements wait for
        :meth:`flush`. Never raises for the action's sake.
        """
        if ticket.state in _STARTED and outcome != CANCELLED:
            ticket.state = ENDED  # a started ticket is its runner's alone: no race to lose
        else:
            with _claims:
                state = ticket.state
                if state == ENDED or (outcome == CANCELLED and state in _STARTED):
                    return False  # ended already, or started: what runs finishes
                ticket.state = ENDED
        own = tally is None
        if own:
            tally = Tally()
        assert tally is not None
        try:
            if outcome == COMPLETED:
                self._completed(ticket, value, fate, tally)
            elif outcome in (CANCELLED, ABANDONED):
                self._cancelled(ticket, tally)
            else:
                self._failed(ticket, value, outcome == CRASHED, fate, tally, site)
        finally:
            if own:
                self.flush(tally)
        return True

    def flush(self, tally: Tally) -> None:
        """Count and acknowledge what ``tally`` holds."""
        try:
            if tally.acks:
                self.production.ack(tally.acks)
        finally:
            self.ledger.end(completed=tally.completed, dead=tally.dead, cancelled=tally.cancelled)

    def _completed(self, ticket: Ticket, result: Any, fate: Fate | None, tally: Tally) -> None:
        tally.completed += 1
        action = ticket.action
        if self.observe is not None:
            self._seen(COMPLETED, action)
        following = action.next
        if following is not None:
            if following.content is None:
                following = following.replace(content=result)
            keys = fate.license_keys if fate is not None else ()
            if keys:
                following = sign(following, keys[0])
        # A durable production may end the attempt in its store in one atomic step
        # (acknowledgement, result, ``next``), so that a crash cannot lose the child.
        durable = False
        if self.production.acknowledges:
            durable = self.production.complete(ticket, result, following)
            if not durable:
                tally.acks.append(ticket)
        future = ticket.future
        child = None
        if following is not None and not durable:
            # The child's future is linked to the parent's before that one is set, so
            # that ``future.chain()`` can follow the chain to its last result.
            link = getattr(future, "_link", None)
            child = Ticket(following, None if link is None else link(), None, None, self.clock())
        if future is not None:
            future.times = Times(ticket.accepted, ticket.started,
                                 self.clock() if child is None else child.accepted)
            try:  # noqa: SIM105 - suppress() costs an object on this per-action path
                future.set(result)
            except Exception:  # noqa: BLE001, S110 - set once by construction; never break the books
                pass
        if ticket.holds_key and action.key is not None:
            self._post(KeyFree(action.key))
        if child is not None:
            self.ledger.accept()
            self.enqueue(child)

    def _cancelled(self, ticket: Ticket, tally: Tally) -> None:
        tally.cancelled += 1
        action = ticket.action
        if self.observe is not None:
            self._seen(CANCELLED, action)
        exc = CancellationError(f"action {action.id} ({action.name}) {self.cancelled_because}")
        _fail_future(ticket, exc, self.clock())
        if ticket.holds_key and action.key is not None and not self.cancelling:
            self._post(KeyFree(action.key))
        try:
            self.production.release([ticket])
        finally:
            with self._lock:
                self.handed_back.append(ticket)

    def _seen(self, outcome: str, action: Action) -> None:
        assert self.observe is not None
        with contextlib.suppress(Exception):  # an observer's bug never breaks the books
            self.observe(outcome, action)

    def _policy(self, name: str, fate: Fate | None) -> RetryPolicy:
        signature = self.plan.signature(name)
        if signature is not None and signature.retry is not None:
            return signature.retry
        return (fate or Fate()).retry_policy()

    def _failed(
        self, ticket: Ticket, exc: BaseException, crashed: bool, fate: Fate | None,
        tally: Tally, site: int,
    ) -> None:
        action = ticket.action
        if crashed and not isinstance(exc, CrashError):
            where = f"Site {site}" if site >= 0 else "the event loop"  # -1: no Site ran it
            exc = CrashError(f"{where} crashed running {action.name}: {type(exc).__name__}")
        elif not isinstance(exc, EchoError):
            wrapped = ExecutionError(f"{action.name}: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        assert isinstance(exc, EchoError)
        tally.failed += 1
        policy = self._policy(action.name, fate)
        if exc.retryable and action.attempt < policy.max_attempts:
            again = ticket.again(action.replace(attempt=action.attempt + 1))
            if self.observe is not None:
                self._seen("crash_requeued" if crashed else "retried", action)
            if crashed:
                self.ledger.count("crash_requeued")
                if again.holds_key:
                    self._post(Requeue(again))
                else:
                    self.put(again)
                return
            delay = policy.backoff(action.attempt, self._random.random())
            if _log.isEnabledFor(logging.DEBUG):  # its fields cost more than the check
                _log.debug("action_retry", action_id=action.id, action_name=action.name,
                           site=site, attempt=action.attempt, error=str(exc),
                           backoff=round(delay, 4))
            self.ledger.count("retried")
            self._wait(delay, again, local=again.holds_key)
            return
        tally.dead += 1
        if self.observe is not None:
            self._seen("dead_lettered", action)
        letter = DeadLetter(
            action=action,
            error_kind=error_kind(exc),
            message=str(exc) or type(exc).__name__,
            attempts=action.attempt,
            first_at=action.created_at,
            failed_at=action_now(),
            admission=None if ticket.admission is None else ticket.admission[0],
        )
        if not self.production.stores_dead_letters:
            self.ledger.keep(letter)
        _fail_future(ticket, exc, self.clock())
        if ticket.holds_key and action.key is not None:
            self._post(KeyFree(action.key))
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("action_dead_lettered", action_id=action.id, action_name=action.name,
                       site=site, attempt=action.attempt, error_kind=exc.kind, error=str(exc))
        self.production.bury(ticket, letter)


def _fail_future(ticket: Ticket, exc: BaseException, finished: float) -> None:
    future = ticket.future
    if future is not None:
        future.times = Times(ticket.accepted, ticket.started, finished)
        with contextlib.suppress(Exception):  # set once by construction; never break the books
            future.set_exception((type(exc), exc, exc.__traceback__))
