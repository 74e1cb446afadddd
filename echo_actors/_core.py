# SPDX-License-Identifier: MIT
"""Core: what one Sequence's actors share (plan, Life, ledger, timers, production, queues).

It outlives any one actor: when the supervisor restarts a Site or the
dispatcher, the new actor picks up the same queues, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Any

import pykka
import structlog

from echo_actors._ledger import Ledger
from echo_actors._messages import SiteExited, SiteStarted, Wake
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.errors import CrashError, EchoError, ExecutionError
from echo_actors.fate import Fate
from echo_actors.license import sign
from echo_actors.life import Life
from echo_actors.plan import Plan, RetryPolicy
from echo_actors.production import Production
from echo_actors.runtime import Runtime, Scheduler

__all__ = ["Core", "Slot"]

_log = structlog.get_logger("echo_actors.sequence")


class Slot:
    """One Site's queue as the dispatcher sees it, and its figures.

    ``inflight``: tickets sent to the Site's mailbox, oldest first, until they
    are done; ``backlog``: tickets held back for it. ``lock`` guards ownership
    changes of its unstarted tickets (stealing) against the Site starting them.
    """

    __slots__ = (
        "alive", "backlog", "failed", "index", "inflight", "lock", "processed", "ref",
        "restarts", "steals_in", "steals_out",
    )  # fmt: skip

    def __init__(self, index: int) -> None:
        self.index = index
        self.ref: pykka.ActorRef[Any] | None = None
        self.alive = False
        self.lock = threading.Lock()
        self.inflight: deque[Ticket] = deque()
        self.backlog: deque[Ticket] = deque()
        self.processed = self.failed = self.steals_in = self.steals_out = self.restarts = 0

    def __hash__(self) -> int:
        return self.index  # sets of Slots iterate in index order, the same every run

    def depth(self) -> int:
        """Tickets queued for this Site: in its mailbox and held back."""
        return len(self.inflight) + len(self.backlog)


class Core:
    """The state a Sequence shares with its dispatcher and Sites.

    Everything here is either read-only after start or thread-safe, so Sites
    record outcomes and schedule retries without a message round trip.
    """

    def __init__(
        self, plan: Plan, life: Life, fate: Fate, production: Production, runtime: Runtime,
        sites: int,
    ) -> None:
        self.plan = plan
        self.life = life
        self.fate = fate
        self.production = production
        self.runtime = runtime
        self.scheduler: Scheduler = runtime.scheduler()
        self.ledger = Ledger(runtime.event())
        self.slots = [Slot(i) for i in range(sites)]
        self.dispatcher: pykka.ActorRef[Any] | None = None
        self.cancelling = False
        self.closing = False
        self.handed_back: list[Ticket] = []
        self._waiting: dict[Ticket, Any] = {}
        self._lock = threading.Lock()
        self._random = runtime.random("core")
        self._default_policy = fate.retry_policy()

    # Entry

    def wake(self) -> None:
        """Tell the dispatcher there is work (the production calls this)."""
        self.tell_dispatcher(Wake())

    def tell_dispatcher(self, message: Any) -> None:
        """Tell the current dispatcher; if it is being restarted, the new one looks itself."""
        dispatcher = self.dispatcher
        if dispatcher is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                dispatcher.tell(message)

    def enqueue(self, ticket: Ticket) -> None:
        """Put an accepted ticket on its way: on a timer if delayed, else to the production."""
        delay = ticket.action.delay
        if delay > 0:
            self._wait(delay, ticket)
        else:
            self.put(ticket)

    def put(self, ticket: Ticket) -> None:
        """To the production; once a shutdown cancels, handed back instead.

        Lock-free on the hot path: whoever puts after the cancelling shutdown
        swept the production sweeps it again, so nothing is stranded there.
        """
        self.production.put(ticket)
        if self.cancelling:
            self.sweep()

    def sweep(self) -> None:
        """Hand back whatever waits in the production (cancelling shutdown)."""
        left = self.production.hand_back()
        if left:
            self.hand_back(left)

    def _wait(self, delay: float, ticket: Ticket) -> None:
        if self.production.defer(ticket, delay):
            self.ledger.hand_off()
            return
        with self._lock:
            if not self.cancelling:
                self._waiting[ticket] = self.scheduler.call_later(delay, self._due, ticket)
                return
        self.hand_back([ticket])

    def _due(self, ticket: Ticket) -> None:
        with self._lock:
            if self._waiting.pop(ticket, None) is None:
                return  # cancelled by a shutdown
            self.production.put(ticket)

    def waiting(self) -> int:
        """Tickets waiting on a delay or a retry backoff."""
        return len(self._waiting)

    # Outcomes (called by Sites and the dispatcher)

    def _policy(self, name: str) -> RetryPolicy:
        signature = self.plan.signature(name)
        return (signature.retry if signature is not None else None) or self._default_policy

    def _again(self, ticket: Ticket) -> Ticket:
        """A fresh ticket for the next attempt (the old one stays done where it was queued)."""
        action = ticket.action
        return Ticket(action.replace(attempt=action.attempt + 1), ticket.future, ticket.receipt)

    def fail(self, ticket: Ticket, exc: Exception, site: int) -> int:
        """Retry ``ticket`` after a backoff, or dead-letter it; returns 1 if dead-lettered."""
        action = ticket.action
        if not isinstance(exc, EchoError):
            wrapped = ExecutionError(f"{action.name}: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        policy = self._policy(action.name)
        if exc.retryable and action.attempt < policy.max_attempts:
            delay = policy.backoff(action.attempt, self._random.random())
            _log.info(
                "action_retry", action_id=action.id, name=action.name, site=site,
                attempt=action.attempt, error=str(exc), backoff=round(delay, 4),
            )
            self.ledger.count("retried")
            self._wait(delay, self._again(ticket))
            return 0
        self._bury(ticket, exc)
        _log.warning(
            "action_dead_lettered", action_id=action.id, name=action.name, site=site,
            attempt=action.attempt, kind=exc.kind, error=str(exc),
        )
        return 1

    def _bury(self, ticket: Ticket, exc: EchoError) -> None:
        production = self.production
        keep = not production.stores_dead_letters
        production.bury(ticket, self.ledger.dead_letter(ticket, exc, keep=keep))

    def crashed(self, ticket: Ticket, site: int) -> None:
        """``ticket`` was running on Site ``site`` when it crashed: count the attempt, requeue."""
        ticket.done = True
        action = ticket.action
        if action.attempt < self._policy(action.name).max_attempts:
            self.ledger.count("crash_requeued")
            self.put(self._again(ticket))
            return
        self._bury(ticket, CrashError(f"Site {site} crashed running {action.name}"))
        self.ledger.end(dead=1)

    def chain(self, action: Action, result: Any) -> None:
        """Submit ``action.next``, giving it ``result`` as content when it has none."""
        following = action.next
        assert following is not None
        if following.content is None:
            following = following.replace(content=result)
        if self.fate.license_keys:
            following = sign(following, self.fate.license_keys[0])
        self.ledger.accept()
        self.enqueue(Ticket(following))

    def hand_back(self, tickets: list[Ticket]) -> None:
        """Cancel ``tickets`` (shutdown without drain) and keep them to hand back."""
        self.production.release(tickets)
        self.ledger.cancel(tickets)
        with self._lock:
            self.handed_back.extend(tickets)

    def start_cancelling(self) -> None:
        """From now on nothing new starts: waiting tickets and newcomers are handed back."""
        with self._lock:
            self.cancelling = True
            waiting = list(self._waiting.items())
            self._waiting.clear()
        for _, handle in waiting:
            handle.cancel()
        if waiting:
            self.hand_back([ticket for ticket, _ in waiting])

    # Supervision callbacks (run in the supervisor)

    def site_started(self, index: int, ref: pykka.ActorRef[Any]) -> None:
        """Site ``index`` (re)started: the dispatcher may feed it."""
        self.slots[index].ref = ref
        self.tell_dispatcher(SiteStarted(index, ref))

    def site_exited(self, index: int, crashed: bool) -> None:
        """Site ``index`` stopped or crashed: the dispatcher takes its work back."""
        if not self.closing:
            self.tell_dispatcher(SiteExited(index, crashed))
