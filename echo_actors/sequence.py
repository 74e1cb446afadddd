# SPDX-License-Identifier: MIT
"""Sequence: the orchestrator users hold (Life, dispatcher and Sites, fed from a Production)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import msgspec
import pykka
import structlog

from echo_actors._core import Core
from echo_actors._messages import HandBack, StatsRequest
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.dead_letter import DeadLetter
from echo_actors.dispatcher import Dispatcher, SiteStats
from echo_actors.fate import Fate
from echo_actors.life import Life
from echo_actors.plan import Plan
from echo_actors.production import Production
from echo_actors.runtime import Runtime, get_runtime
from echo_actors.site import Site
from echo_actors.supervision import (
    ChildSpec,
    SupervisorHandle,
    start_supervisor,
    supervisor_spec,
)

__all__ = ["Sequence", "Stats"]

_log = structlog.get_logger("echo_actors.sequence")


class Stats(msgspec.Struct, frozen=True):
    """A Sequence's figures: outcomes so far, what is pending, and each Site's share."""

    accepted: int
    completed: int
    dead_lettered: int
    cancelled: int
    retried: int
    crash_requeued: int
    outstanding: int
    queued: int
    waiting: int
    sites: list[SiteStats]


class Sequence:
    """Runs a Plan's actions on ``sites`` Site actors fed by a dispatcher.

    ``submit(action)`` returns a future of the result (``.get(timeout=...)``
    returns it or raises the final error); actions assigned to the
    ``production`` run too. Failures worth retrying are retried after an
    exponential backoff with jitter, on a timer; the rest, and those out of
    attempts, become dead letters. Every accepted action ends completed,
    dead-lettered or cancelled.

    ``site`` is the Site class (subclass it to change how actions are
    received); ``runtime`` is ``"thread"`` (default) or ``"gevent"``; unset
    settings come from ``fate`` (by default :meth:`Fate.load`: ``ECHO_*``
    variables over the defaults).

    Its dispatcher, Sites (and its Life, when it made it) run under a
    supervisor called ``name``: a top-level one, or a child of ``parent`` so
    that it joins an application's supervision tree and escalates to it.
    """

    def __init__(
        self,
        plan: Plan,
        production: Production | None = None,
        life: Life | None = None,
        site: type[Site] = Site,
        sites: int | None = None,
        fate: Fate | None = None,
        *,
        runtime: str | Runtime | None = None,
        name: str = "sequence",
        parent: SupervisorHandle | None = None,
    ) -> None:
        if not isinstance(plan, Plan):
            raise TypeError(f"expected a Plan, got {type(plan).__name__}")
        if not (isinstance(site, type) and issubclass(site, Site)):
            raise TypeError(f"site must be Site or a subclass of it, not {site!r}")
        if production is not None and not isinstance(production, Production):
            raise TypeError(f"expected a Production, got {type(production).__name__}")
        if sites is not None and (not isinstance(sites, int) or sites < 1):
            raise ValueError(f"sites must be a positive int, not {sites!r}")
        self.plan = plan.build()
        self.fate = fate if fate is not None else (life.fate if life is not None else Fate.load())
        self.runtime = get_runtime(runtime if runtime is not None else self.fate.runtime)
        self._owns_life = life is None
        self.life = life if life is not None else Life(self.fate, runtime=self.runtime)
        self.production = production if production is not None else Production()
        self.site_class = site
        self.sites = sites if sites is not None else self.fate.sites
        self._core: Core | None = None
        self.name = name
        self._parent = parent
        self.supervisor: SupervisorHandle | None = None
        self._start_lock = threading.Lock()  # never held across a switch (gevent-safe)
        self._starting = False
        self._closing = False
        self._ready = self.runtime.event()
        self._accepting = False
        self._stop_requested = self.runtime.event()
        self._stopped = self.runtime.event()
        self._handed_back: list[Action] = []

    # Lifecycle

    def start(self) -> Sequence:
        """Start Life (if need be), the dispatcher and the Sites; returns self.

        Safe to call from several threads or greenlets: one starts, the others
        wait for it (no lock is held while actors start, so greenlets may switch).

        Raises:
            RuntimeError: the Sequence was shut down (make a new one).
        """
        with self._start_lock:
            if self._stopped.is_set():
                raise RuntimeError("this Sequence was shut down; make a new one")
            first, self._starting = not self._starting, True
        if not first:
            self._ready.wait()
            if self._core is None:
                raise RuntimeError("this Sequence failed to start")
            return self
        try:
            self._start()
        finally:
            self._ready.set()
        return self

    def _start(self) -> None:
        self.life.attach(self.runtime)
        core = Core(self.plan, self.life, self.fate, self.production, self.runtime, self.sites)
        # Bound first, so that what was assigned before the start is counted before it runs.
        self.production.bind(core.wake, core.ledger.accept)
        try:
            specs = self._child_specs(core)
            limit, within = self.fate.max_restarts, self.fate.restart_within
            if self._parent is None:
                self.supervisor = start_supervisor(
                    specs, "one_for_one", runtime=self.runtime, name=self.name,
                    max_restarts=limit, within=within,
                )
            else:

                def adopt(ref: pykka.ActorRef[Any]) -> None:
                    self.supervisor = SupervisorHandle(ref)

                self._parent.start_child(supervisor_spec(
                    self.name, specs, on_start=adopt, max_restarts=limit, within=within
                ))
        except BaseException:
            self.production.bind(None)
            raise
        self._core = core
        self._accepting = True
        _log.debug("sequence_started", sites=self.sites, runtime=self.runtime.name)

    def _child_specs(self, core: Core) -> list[ChildSpec]:
        def site_spec(index: int) -> ChildSpec:
            return ChildSpec(
                name=f"site-{index}", actor_class=self.site_class, args=(index, core),
                on_start=lambda ref: core.site_started(index, ref),
                on_exit=lambda info: core.site_exited(index, info.reason == "crash"),
            )

        def dispatcher_started(ref: pykka.ActorRef[Any]) -> None:
            core.dispatcher = ref  # before any Site starts and tells it so

        dispatcher = ChildSpec("dispatcher", Dispatcher, (core,), on_start=dispatcher_started)
        sites = [site_spec(index) for index in range(self.sites)]
        owned = [self.life.child_spec()] if self._owns_life and not self.life.started else []
        return [*owned, dispatcher, *sites]

    def __enter__(self) -> Sequence:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(drain=exc_type is None)

    def run(self) -> None:
        """Start, then block until :meth:`shutdown` (or SIGINT/SIGTERM, which drain)."""
        self.start()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: self._stop_requested.set())
        try:
            while not self._stopped.is_set():
                if self._stop_requested.wait(0.5):
                    self.shutdown(drain=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted action has ended; False if ``timeout`` ran out first."""
        core = self._core
        return True if core is None else core.ledger.idle.wait(timeout)

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> list[Action]:
        """Stop the Sequence; returns the actions handed back (cancelled, not run).

        With ``drain``, waits (up to ``timeout`` seconds) for everything
        accepted to end, retries and delays included; what is left after the
        timeout is cancelled as without ``drain``. Without ``drain``, what has
        not started is cancelled (its future raises CancellationError) and
        handed back; what is running finishes.
        """
        with self._start_lock:
            core = self._core
            if core is None:
                self._stopped.set()
            closing, self._closing = self._closing, True
        if core is None or closing:  # not started, or another caller is stopping it
            self._stopped.wait(timeout)
            return list(self._handed_back)
        self._accepting = False
        self.production.pause()
        if not (drain and core.ledger.idle.wait(timeout)):
            core.start_cancelling()
            assert core.dispatcher is not None
            left = cast("list[Ticket]", core.dispatcher.ask(HandBack()))
            core.hand_back(left)
            core.ledger.idle.wait(timeout)
        core.closing = True
        self.production.bind(None)
        if self._parent is not None:
            self._parent.terminate_child(self.name)
            self._parent.delete_child(self.name)
        elif self.supervisor is not None:
            self.supervisor.stop()
        core.scheduler.stop()
        if self._owns_life:
            self.life.stop()
        self._handed_back = [ticket.action for ticket in core.handed_back]
        self._stopped.set()
        counts = core.ledger.counts
        _log.debug(
            "sequence_stopped", completed=counts["completed"],
            dead_lettered=counts["dead_lettered"], cancelled=counts["cancelled"],
        )
        return list(self._handed_back)

    # Work

    def _started(self) -> Core:
        core = self._core
        if core is None:
            core = self.start()._core
            assert core is not None
        if not self._accepting:
            raise RuntimeError("this Sequence is shutting down and takes no more actions")
        return core

    def submit(self, action: Action) -> pykka.Future[Any]:
        """Queue ``action``; returns a future of its result (starts the Sequence if need be).

        Raises:
            TypeError: ``action`` is not an Action.
            RuntimeError: the Sequence is shutting down.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        core = self._started()
        future = self.runtime.future()
        core.ledger.accept()
        core.enqueue(Ticket(action, future))
        return future

    def submit_many(self, actions: Iterable[Action]) -> list[pykka.Future[Any]]:
        """Queue several actions at once (one wake-up); returns their futures in order."""
        actions = list(actions)
        for action in actions:
            if not isinstance(action, Action):
                raise TypeError(f"expected Actions, got a {type(action).__name__}")
        core = self._started()
        tickets = [Ticket(action, self.runtime.future()) for action in actions]
        core.ledger.accept(len(tickets))
        now = [ticket for ticket in tickets if ticket.action.delay <= 0]
        for ticket in tickets:
            if ticket.action.delay > 0:
                core.enqueue(ticket)
        if now:
            self.production.put_many(now)
            if core.cancelling:
                core.sweep()
        return [ticket.future for ticket in tickets]

    def dead_letters(self) -> list[DeadLetter]:
        """The actions that failed for good, oldest first."""
        core = self._core
        return [] if core is None else core.ledger.dead_letters()

    def requeue(self, ids: Iterable[str] | DeadLetter | None = None) -> list[pykka.Future[Any]]:
        """Send dead letters back (all, or those with these action ids), attempts reset.

        Returns the futures of the requeued actions.
        """
        core = self._started()
        if isinstance(ids, DeadLetter):
            ids = [ids.action.id]
        letters = core.ledger.take_dead(None if ids is None else set(ids))
        return [self.submit(letter.action.replace(attempt=1)) for letter in letters]

    def stats(self) -> Stats:
        """Counts per outcome and per Site (asks the dispatcher)."""
        core = self._core
        if core is None:
            return Stats(0, 0, 0, 0, 0, 0, 0, self.production.pending(), 0, [])
        counts = core.ledger.counts
        sites: list[SiteStats] = []
        if core.dispatcher is not None and core.dispatcher.is_alive():
            sites = cast("list[SiteStats]", core.dispatcher.ask(StatsRequest()))
        return Stats(
            accepted=counts["accepted"],
            completed=counts["completed"],
            dead_lettered=counts["dead_lettered"],
            cancelled=counts["cancelled"],
            retried=counts["retried"],
            crash_requeued=counts["crash_requeued"],
            outstanding=core.ledger.outstanding,
            queued=self.production.pending(),
            waiting=core.waiting(),
            sites=sites,
        )

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "running" if self._core else "new"
        return f"<Sequence {state} sites={self.sites} runtime={self.runtime.name}>"
