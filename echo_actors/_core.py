# SPDX-License-Identifier: MIT
"""Core: what one Sequence's actors share (plan, Life, ledger, timers, production)."""

from __future__ import annotations

import random
import threading
from typing import Any

import structlog

from echo_actors._ledger import Ledger
from echo_actors._messages import LifeChanged, SiteExited, SiteStarted
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.errors import CrashError, EchoError, ExecutionError
from echo_actors.fate import Fate
from echo_actors.life import Life
from echo_actors.license import sign
from echo_actors.plan import Plan
from echo_actors.production import Production
from echo_actors.runtime import Runtime, Scheduler, bind_actor

__all__ = ["Core"]

_log = structlog.get_logger("echo_actors.sequence")


class Core:
    """The state a Sequence shares with its dispatcher and Sites.

    Everything here is either read-only after start or thread-safe, so Sites
    record outcomes and schedule retries without a message round trip.
    """

    def __init__(
        self,
        plan: Plan,
        life: Life,
        fate: Fate,
        production: Production,
        runtime: Runtime,
        site_class: type[Any],
        sites: int,
    ) -> None:
        self.plan = plan
        self.life = life
        self.fate = fate
        self.production = production
        self.runtime = runtime
        self.scheduler: Scheduler = runtime.scheduler()
        self.ledger = Ledger(runtime.event())
        self.site_locks = [threading.Lock() for _ in range(sites)]
        self.site_class = bind_actor(site_class, runtime)
        self.sites: list[Any] = [None] * sites
        self.dispatcher: Any = None
        self.cancelling = False
        self.closing = False
        self.handed_back: list[Ticket] = []
        self._waiting: dict[Ticket, Any] = {}
        self._lock = threading.Lock()
        self._random = random.Random()
        self._default_policy = fate.retry_policy()

    # Entry

    def enqueue(self, ticket: Ticket) -> None:
        """Put an accepted ticket on its way: on a timer if delayed, else to the production."""
        delay = ticket.action.delay
        if delay > 0:
            ticket.action = ticket.action.replace(delay=0.0)
            self._wait(delay, ticket)
        else:
            self.put(ticket)

    def _wait(self, delay: float, ticket: Ticket) -> None:
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

    def waiting(self) -> int:
        """Tickets waiting on a delay or a retry backoff."""
        return len(self._waiting)

    # Outcomes (called by Sites)

    def _policy(self, name: str) -> Any:
        signature = self.plan.signature(name)
        return (signature.retry if signature is not None else None) or self._default_policy

    def fail(self, ticket: Ticket, exc: Exception, site: int) -> int:
        """Retry ``ticket`` after a backoff, or dead-letter it; returns 1 if dead-lettered."""
        action = ticket.action
        if not isinstance(exc, EchoError):
            wrapped = ExecutionError(f"{action.name}: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        policy = self._policy(action.name)
        if exc.retryable and action.attempt < policy.max_attempts and not self.closing:
            delay = policy.backoff(action.attempt, self._random.random())
            _log.info(
                "action_retry", action_id=action.id, name=action.name, site=site,
                attempt=action.attempt, error=str(exc), backoff=round(delay, 4),
            )
            ticket.action = action.replace(attempt=action.attempt + 1)
            ticket.started = ticket.done = False
            ticket.owner = None
            self.ledger.count("retried")
            self._wait(delay, ticket)
            return 0
        self.ledger.dead_letter(ticket, exc)
        self.production.ack([ticket])
        _log.warning(
            "action_dead_lettered", action_id=action.id, name=action.name, site=site,
            attempt=action.attempt, kind=exc.kind, error=str(exc),
        )
        return 1

    def chain(self, action: Action, result: Any) -> None:
        """Submit ``action.next``, giving it ``result`` as content when it has none."""
        following = action.next
        assert following is not None
        if following.content is None:
            following = following.replace(content=result)
        if self.fate.license_keys:
            following = sign(following, self.fate.license_keys[0])
        self.ledger.accept()
        ticket = Ticket(following)
        if following.delay > 0:
            self.enqueue(ticket)
        else:
            self.put(ticket)

    def hand_back(self, tickets: list[Ticket]) -> None:
        """Cancel ``tickets`` (shutdown without drain) and keep them to hand back."""
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

    def crashed(self, ticket: Ticket, site: int) -> None:
        """``ticket`` was running on Site ``site`` when it crashed: count the attempt, requeue."""
        action = ticket.action
        if action.attempt < self._policy(action.name).max_attempts and not self.closing:
            ticket.action = action.replace(attempt=action.attempt + 1)
            self.ledger.count("crash_requeued")
            self.put(ticket)
            return
        self.ledger.dead_letter(ticket, CrashError(f"Site {site} crashed running {action.name}"))
        self.ledger.end(dead=1)

    def start_site(self, index: int) -> Any:
        """Start (or restart) Site ``index``, subscribed to Life, and tell the dispatcher."""
        snapshot = self.life.snapshot()
        ref = self.site_class.start(index, self, snapshot)
        latest = self.life.subscribe(ref)
        if latest.version != snapshot.version:
            ref.tell(LifeChanged(latest))
        self.sites[index] = ref
        self.dispatcher.tell(SiteStarted(index, ref))
        return ref

    def restart_site(self, index: int) -> None:
        """Called by the dispatcher after Site ``index`` exited."""
        if not self.closing:
            self.start_site(index)

    def site_exited(self, index: int, *, crashed: bool) -> None:
        """A Site stopped or crashed: tell the dispatcher, unless we are shutting down."""
        dispatcher = self.dispatcher
        if dispatcher is not None and not self.closing and dispatcher.is_alive():
            dispatcher.tell(SiteExited(index, crashed))
