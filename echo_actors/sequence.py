# SPDX-License-Identifier: MIT
"""Sequence: the orchestrator users hold (Life, dispatcher and Sites, fed from a Production)."""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, cast

import msgspec
import pykka

from echo_actors._gather import Gathering
from echo_actors._ledger import Ledger
from echo_actors._logging import get_logger
from echo_actors._messages import Cancel, HandBack, SiteExited, SiteStarted, StatsRequest
from echo_actors._settle import CANCELLED, Settler
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.admission import check_admissible
from echo_actors.dead_letter import DeadLetter
from echo_actors.dispatcher import Desk, Dispatcher, SiteStats
from echo_actors.fate import Fate
from echo_actors.life import Life
from echo_actors.pipeline import Step
from echo_actors.plan import Plan
from echo_actors.production import Production
from echo_actors.runtime import ActionFuture, MainExitHandle, Runtime, get_runtime, on_main_exit
from echo_actors.site import Site, SiteContext, crashed_running_an_action
from echo_actors.supervision import (
    ChildSpec,
    SupervisorHandle,
    start_supervisor,
    supervisor_spec,
)

__all__ = ["Sequence", "Stats"]

_log = get_logger("echo_actors.sequence")


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
    dead_letters_dropped: int = 0


class _Running(msgspec.Struct):
    """What a started Sequence holds: the books, the dispatcher's desk, the Sites' context.

    ``direct``: the names of ``async def`` functions whose plain actions skip the Sites
    (see :func:`_direct`); empty when a Site subclass, pipeline steps or a
    production other than the in-memory one must see every action.
    """

    ledger: Ledger
    settler: Settler
    desk: Desk
    context: SiteContext
    direct: frozenset[str] = frozenset()


def _life_fate(life: Life) -> Fate:
    return life._state.snapshot.fate  # read without starting its actor


class Sequence:
    """Runs a Plan's actions on ``sites`` Site actors fed by a dispatcher.

    ``submit(action)`` returns a future of the result (``.get(timeout=...)``
    returns it or raises the final error); actions assigned to the
    ``production`` run too. Failures worth retrying are retried after an
    exponential backoff with jitter, on a timer; the rest, and those out of
    attempts, become dead letters. Every accepted action ends exactly once:
    completed, dead-lettered or cancelled.

    ``site`` is the Site class (subclass it to change how actions are
    received); ``runtime`` is ``"thread"`` (default), ``"gevent"`` or
    ``"simulation"`` (deterministic, on a virtual clock); ``steps`` are
    pipeline steps of yours (see :mod:`echo_actors.pipeline`).

    ``async def`` functions are awaited on an event loop thread the Sequence
    owns (started by the first one, stopped at shutdown) and do not hold a
    Site while they await; the futures ``submit`` returns can be awaited from
    asyncio without blocking its loop, and ``async with Sequence(...)``,
    :meth:`join_async` and :meth:`shutdown_async` serve asyncio programs.

    There is one Fate, and Life owns it: ``fate`` is applied to ``life``
    when that Life still has the default Fate; a Life with another Fate
    is refused (``ValueError``) rather than silently overridden. Without
    either, ``Fate()``'s defaults (environment variables are read only by
    :meth:`Fate.load`). ``life.set_fate(...)`` reaches running Sites at once
    for what concerns one action (attempts, backoff, license keys, events);
    the structure (``sites``, ``runtime``, ``mailbox_window``, ``steal``,
    restart intensity) is read when the Sequence starts.

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
        steps: Iterable[Step] = (),
    ) -> None:
        if not isinstance(plan, Plan):
            raise TypeError(f"expected a Plan, got {type(plan).__name__}")
        if not (isinstance(site, type) and issubclass(site, Site)):
            raise TypeError(f"site must be Site or a subclass of it, not {site!r}")
        if inspect.iscoroutinefunction(site.receive):
            raise TypeError(
                f"{site.__name__}.receive is async def, which a Site cannot await (it "
                "returns the result, and the Site goes on with its next action): serve "
                "the action with an async def function of the Plan instead, awaited on the "
                "Sequence's event loop")
        if production is not None and not isinstance(production, Production):
            raise TypeError(f"expected a Production, got {type(production).__name__}")
        if sites is not None and (isinstance(sites, bool) or not isinstance(sites, int)
                                  or sites < 1):
            raise ValueError(f"sites must be a positive int, not {sites!r}")
        if fate is not None and not isinstance(fate, Fate):
            raise TypeError(f"expected a Fate, got {type(fate).__name__}")
        self.steps = tuple(steps)
        if not all(callable(step) for step in self.steps):
            raise TypeError("every pipeline step must be callable")
        self.plan = plan.build()
        self._apply_fate: Fate | None = None
        if life is None:
            self.fate = fate if fate is not None else Fate()
        else:
            held = _life_fate(life)
            if fate is None or fate == held:
                self.fate = held
            elif held == Fate():
                self.fate = self._apply_fate = fate
            else:
                raise ValueError(
                    "this Life has a Fate of its own that differs from the fate given: "
                    "one Fate per Life (pass one of them, or life.set_fate(fate) first)"
                )
        self.runtime = get_runtime(runtime if runtime is not None else self.fate.runtime,
                                   seed=self.fate.seed)
        if self.plan.asynchronous and self.runtime.name == "simulation":
            raise ValueError(
                "async def functions cannot run on the simulation runtime (its clock is "
                f"virtual, asyncio's is not): {', '.join(sorted(self.plan.asynchronous))}; "
                "use the thread or gevent runtime, or plain functions calling runtime.sleep()"
            )
        self._owns_life = life is None
        self.life = life if life is not None else Life(self.fate, runtime=self.runtime)
        self.production = production if production is not None else Production()
        self.site_class = site
        self.sites = sites if sites is not None else self.fate.sites
        self._run: _Running | None = None
        self._live: _Running | None = None  # _run once the start has finished: submitters'
        self.name = name
        self._parent = parent
        self.supervisor: SupervisorHandle | None = None
        self._start_lock = threading.Lock()  # never held across a switch (gevent-safe)
        self._starting = False
        self._closing = False
        self._ready = self.runtime.event()
        self._stop_requested = self.runtime.event()
        self._stopped = self.runtime.event()
        self._handed_back: list[Action] = []
        self._exit_hook: MainExitHandle | None = None
        self.failure: BaseException | None = None
        """Why the Sequence failed (its supervisor gave up), or None."""
        self.on_end: Callable[[str, Action], None] | None = None
        """Told ``(outcome, action)`` at every attempt's end (``"completed"``,
        ``"retried"``, ``"crash_requeued"``, ``"dead_lettered"``, ``"cancelled"``), from
        any thread: for metrics (:mod:`echo_actors.metrics`). Set before :meth:`start`;
        it must be quick and must not raise."""

    # Lifecycle

    def start(self) -> Sequence:
        """Start Life (if need be), the dispatcher and the Sites; returns self.

        Safe to call from several threads or greenlets: one starts, the others
        wait for it (no lock is held while actors start, so greenlets may switch).

        Raises:
            RuntimeError: the Sequence was shut down (make a new one), or it
                failed to start.
            Exception: what a Site (or the dispatcher) raised while starting.
        """
        with self._start_lock:
            if self._stopped.is_set():
                raise RuntimeError("this Sequence was shut down; make a new one")
            first, self._starting = not self._starting, True
        if not first:
            self._ready.wait()
            if self._run is None:
                raise RuntimeError("this Sequence failed to start")
            return self
        try:
            self._start()
        except BaseException:
            self._stopped.set()
            raise
        finally:
            self._ready.set()
        return self

    def _start(self) -> None:
        self.life.attach(self.runtime)
        if self._apply_fate is not None:
            self.life.set_fate(self._apply_fate)
        fate = self.fate
        runtime = self.runtime
        ledger = Ledger(runtime.event(), fate.max_dead_letters)
        scheduler = runtime.scheduler()
        desk = Desk(self.sites, self.production, shared=fate.discipline == "fifo")
        desk.pulls = type(self.production) is Production  # a durable one's take is its own
        desk.window = 1 if fate.discipline == "fifo" else fate.mailbox_window
        settler = Settler(self.plan, self.production, ledger, scheduler,
                          runtime.random("settler"), desk.post, runtime.monotonic)
        desk.settler = settler
        settler.observe = self.on_end
        context = SiteContext(self.plan, self.life, runtime, settler, desk, self.steps)
        plain = self.site_class is Site and not self.steps and type(self.production) is Production
        # A function that asks for a Context gets it from its Site: it keeps the hop.
        direct = self.plan.asynchronous - self.plan.contextual.keys() if plain else frozenset()
        self._run = _Running(ledger, settler, desk, context, direct)
        # Bound first, so that what was assigned before the start is counted before it runs.
        self.production.bind(desk.wake, ledger.accept)
        try:
            specs = self._child_specs(desk, context)
            limit, within = fate.max_restarts, fate.restart_within
            if self._parent is None:
                self.supervisor = start_supervisor(
                    specs, "one_for_one", runtime=runtime, name=self.name,
                    max_restarts=limit, within=within, on_give_up=self._fail,
                )
            else:

                def adopt(ref: pykka.ActorRef[Any]) -> None:
                    self.supervisor = SupervisorHandle(ref)

                self._parent.start_child(supervisor_spec(
                    self.name, specs, on_start=adopt, max_restarts=limit, within=within,
                    on_give_up=self._fail,
                ))
        except BaseException:
            self._run = None
            self.production.bind(None)
            scheduler.stop()
            raise
        if runtime.name == "thread":
            self._exit_hook = on_main_exit(self._main_exited)
        self._live = self._run  # only now: a submitter never runs ahead of a start under way
        _log.debug("sequence_started", sites=self.sites, runtime=runtime.name)

    def _main_exited(self) -> None:
        """The main thread ended with this Sequence running: cancel what waits, and stop."""
        warnings.warn(
            f"{self!r} was still running when the main thread ended: what had not started "
            "was cancelled (use `with Sequence(...)` or call shutdown())",
            RuntimeWarning, stacklevel=1,
        )
        self.shutdown(drain=False, timeout=self.fate.restart_within)

    def _fail(self, error: BaseException) -> None:
        """Its supervisor gave up (in the supervisor, its children stopped): fail loudly.

        Nothing runs any more, so the desk has no other owner: every action
        not ended is cancelled with the cause, ``submit`` raises it, and
        :meth:`run` raises ``error`` once it stopped.
        """
        run = self._run
        if run is None:
            return
        self.failure = error
        because = (f"cancelled: the Sequence failed ({error}; last error: "
                   f"{error.__cause__!r})")
        _log.error("sequence_failed", error=str(error), cause=repr(error.__cause__))  # loud
        run.ledger.close(f"this Sequence failed and takes no more actions: {error}")
        run.settler.start_cancelling(because)
        run.desk.cancel_all()
        self._stop_requested.set()

    def _child_specs(self, desk: Desk, context: SiteContext) -> list[ChildSpec]:
        def site_spec(index: int) -> ChildSpec:
            return ChildSpec(
                name=f"site-{index}", actor_class=self.site_class, args=(index, context),
                on_start=lambda ref: desk.post(SiteStarted(index, ref)),
                on_exit=lambda info: desk.post(SiteExited(index, info.urn, info.reason)),
                counted=lambda info: not crashed_running_an_action(info.error),
            )

        fate = self.fate
        random = self.runtime.random("dispatcher")
        fifo = fate.discipline == "fifo"  # one shared queue: a Site holds one action at a time
        window, steal = (1, False) if fifo else (fate.mailbox_window, fate.steal)
        dispatcher = ChildSpec(
            "dispatcher", Dispatcher, (desk, window, steal, random), {"fifo": fifo}
        )
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

    async def __aenter__(self) -> Sequence:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown_async(drain=exc_type is None)

    async def join_async(self, timeout: float | None = None) -> bool:
        """:meth:`join` for asyncio: waits in a worker thread, never blocking the loop.

        For the thread runtime (gevent's objects belong to their hub's thread).
        """
        return await asyncio.to_thread(self.join, timeout)

    async def shutdown_async(self, drain: bool = True, timeout: float | None = None
                             ) -> list[Action]:
        """:meth:`shutdown` for asyncio: runs in a worker thread, never blocking the loop.

        For the thread runtime, as :meth:`join_async`.
        """
        return await asyncio.to_thread(self.shutdown, drain, timeout)

    def run(self) -> None:
        """Start, then block until :meth:`shutdown` (or SIGINT/SIGTERM, which drain).

        Raises:
            RestartIntensityError: the Sequence failed (its supervisor gave up).
        """
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
        if self.failure is not None:
            raise self.failure

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted action has ended; False if ``timeout`` ran out first."""
        run = self._run
        return True if run is None else run.ledger.idle.wait(timeout)

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> list[Action]:
        """Stop the Sequence; returns the actions handed back (cancelled, not run).

        ``submit`` refuses new actions from the moment this is called. With
        ``drain``, waits (up to ``timeout`` seconds) for everything accepted
        to end, retries, delays and chained actions included; what is left
        after the timeout is cancelled as without ``drain``. Without
        ``drain``, what has not started is cancelled (its future raises
        CancellationError) and handed back; what is running finishes.
        """
        with self._start_lock:
            starting = self._starting
        if starting:
            self._ready.wait()  # a start under way ends first: its supervisor, its exit hook
        with self._start_lock:
            run = self._run
            if run is None:
                self._stopped.set()
            closing, self._closing = self._closing, True
        if run is None or closing:  # not started, or another caller is stopping it
            self._stopped.wait(timeout)
            return list(self._handed_back)
        if self._exit_hook is not None:
            self._exit_hook.cancel()
        run.ledger.close()
        self.production.pause()
        if not (drain and run.ledger.idle.wait(timeout)):
            run.settler.start_cancelling()
            run.desk.post(HandBack())
            run.ledger.idle.wait(timeout)
        if run.context.runner.started:
            # Coroutines still awaiting (the timeout ran out) are cut short and handed back.
            run.context.runner.stop()
            run.ledger.idle.wait(timeout)  # their settling, where the runtime runs it
        self.production.bind(None)
        if self._parent is not None:
            self._parent.terminate_child(self.name)
            self._parent.delete_child(self.name)
        elif self.supervisor is not None:
            self.supervisor.stop()
        run.settler.scheduler.stop()
        if self._owns_life:
            self.life.stop()
        self._handed_back = [ticket.action for ticket in run.settler.handed_back]
        self._stopped.set()
        counts = run.ledger.counts
        _log.debug(
            "sequence_stopped", completed=counts["completed"],
            dead_lettered=counts["dead_lettered"], cancelled=counts["cancelled"],
        )
        return list(self._handed_back)

    # Work

    def _started(self) -> _Running:
        run = self._live
        if run is None:
            run = self.start()._run  # returns once the start (this one or another's) ended
            assert run is not None
        return run

    def submit(self, action: Action) -> ActionFuture[Any]:
        """Queue ``action``; returns a future of its result (starts the Sequence if need be).

        The future gives the action's own result; for a chain, ``future.chain()``
        is the future of its last link's result (or of the error that ended it).

        Raises:
            TypeError: ``action`` is not an Action.
            ValidationError: the Fate does not admit it (delay over ``max_delay``,
                a chain over ``max_chain``, an encoding over ``max_action_bytes``).
            RuntimeError: the Sequence is shutting down.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        run = self._live
        if run is None:
            run = self._started()
        fate = self.life._state.snapshot.fate  # Life's published Fate (the property, inline)
        check_admissible(action, fate)
        runtime = self.runtime
        future = runtime.future()
        ticket = Ticket(action, future, None, None, runtime.monotonic())
        if fate.license_keys:
            run.context.admit(ticket)
        run.ledger.admit()
        if action.name in run.direct and _direct(action, fate) and not run.settler.cancelling:
            _to_loop(run, [ticket], fate)
            return future
        if action.delay > 0:
            run.settler.enqueue(ticket)
        elif not (action.key is None and run.desk.grants and not run.settler.cancelling
                  and run.desk.send_direct(ticket)):
            run.settler.put(ticket)
        return future

    def submit_many(self, actions: Iterable[Action]) -> list[ActionFuture[Any]]:
        """Queue several actions at once (one wake-up); returns their futures in order.

        All or none: a wrong item raises before any is queued.
        """
        return self._submit_many(actions, lambda _: self.runtime.future())

    async def gather(self, actions: Iterable[Action], *, return_exceptions: bool = False
                     ) -> list[Any]:
        """Submit ``actions`` and return their results in order, for asyncio programs.

        What ``await asyncio.gather(*sequence.submit_many(actions))`` gives, at a
        fraction of its cost for the awaiting loop: one future for all of them,
        woken once, not a task and a wake-up per action. The first failure is
        raised at once (the others run on), or, with ``return_exceptions``, every
        failure takes its action's place in the list. Cancelling the await ends
        the wait only: the actions run on. All or none, as :meth:`submit_many`.

        For the thread runtime, as :meth:`join_async`: a gevent Sequence takes its
        actions in its hub's thread, which an asyncio loop cannot share (await the
        futures of :meth:`submit_many` submitted there instead).

        Raises:
            RuntimeError: on another runtime than the thread runtime, or the
                Sequence is shutting down.
        """
        if self.runtime.name != "thread":
            raise RuntimeError(
                f"Sequence.gather is for the thread runtime, not {self.runtime.name!r}: "
                "await the futures of submit_many instead (gevent, from its hub's thread), "
                "or call .get() on them (simulation)")
        actions = list(actions)
        gathering = Gathering(len(actions), asyncio.get_running_loop(), return_exceptions)
        self._submit_many(actions, gathering.slots(), futures=False)
        return await gathering.future

    def _submit_many(self, actions: Iterable[Action], future: Callable[[int], Any], *,
                     futures: bool = True) -> list[Any]:
        actions = list(actions)
        for action in actions:
            if not isinstance(action, Action):
                raise TypeError(f"expected Actions, got a {type(action).__name__}")
        run = self._started()
        fate = self.life.fate
        for action in actions:
            check_admissible(action, fate)
        accepted = self.runtime.monotonic()
        tickets = [Ticket(action, future(index), None, None, accepted)
                   for index, action in enumerate(actions)]
        if fate.license_keys:
            for ticket in tickets:
                run.context.admit(ticket)
        run.ledger.admit(len(tickets))
        now: list[Ticket] = []
        looped: list[Ticket] = []
        direct = run.direct if not (run.settler.cancelling or fate.license_keys
                                    or fate.action_events) else frozenset()
        for ticket in tickets:
            action = ticket.action
            if (action.name in direct and action.key is None and action.delay <= 0
                    and not action.hooks and not action.after):  # _direct, inline
                looped.append(ticket)
            elif action.delay > 0:
                run.settler.enqueue(ticket)
            else:
                now.append(ticket)
        out = [ticket.future for ticket in tickets] if futures else []
        if now:
            run.settler.put_many(now)
        if looped:  # last: the loop thread it wakes takes the GIL from here
            _to_loop(run, looped, fate)
        return out

    def cancel(self, action_id: str) -> bool:
        """Cancel the action ``action_id`` if it has not started; True if it was cancelled.

        Its future raises CancellationError and it is handed back, as at a
        shutdown without drain. An action that started runs on (False); so
        does one that ended or is unknown here. Modellers use it for
        abandonment, servers for a client that went away.
        """
        run = self._run
        if run is None:
            return False
        if run.settler.cancel_waiting(action_id):
            return True
        if run.direct and run.context.runner.started and run.context.runner.cancel(action_id):
            return True  # it waited on the event loop, unstarted
        ref = run.desk.ref
        if ref is None:
            return False
        try:
            return bool(ref.ask(Cancel(action_id), timeout=10))
        except pykka.ActorDeadError:
            return False

    def dead_letters(self) -> list[DeadLetter]:
        """The actions that failed for good, oldest first (at most ``Fate.max_dead_letters``)."""
        run = self._run
        return [] if run is None else run.ledger.dead_letters()

    def requeue(self, ids: Iterable[str] | DeadLetter | None = None) -> list[ActionFuture[Any]]:
        """Send dead letters back (all, or those with these action ids), attempts reset.

        Returns the futures of the requeued actions.
        """
        run = self._started()
        run.ledger.admit(0)  # refused once shutting down, like submit
        if isinstance(ids, DeadLetter):
            ids = [ids.action.id]
        letters = run.ledger.take_dead(None if ids is None else set(ids))
        futures = []
        for letter in letters:  # the same admission again: its license is not a replay
            ticket = Ticket(letter.action.replace(attempt=1), self.runtime.future(),
                            accepted=self.runtime.monotonic())
            run.context.admit(ticket, letter.admission)
            run.ledger.admit()
            run.settler.enqueue(ticket)
            futures.append(ticket.future)
        return futures

    def stats(self) -> Stats:
        """Counts per outcome and per Site (asks the dispatcher)."""
        run = self._run
        if run is None:
            return Stats(0, 0, 0, 0, 0, 0, 0, self.production.pending(), 0, [])
        counts = run.ledger.counts
        sites: list[SiteStats] = []
        ref = run.desk.ref
        if ref is not None:
            try:
                sites = cast("list[SiteStats]", ref.ask(StatsRequest(), timeout=10))
            except pykka.ActorDeadError:
                sites = []
        return Stats(
            accepted=counts["accepted"],
            completed=counts["completed"],
            dead_lettered=counts["dead_lettered"],
            cancelled=counts["cancelled"],
            retried=counts["retried"],
            crash_requeued=counts["crash_requeued"],
            outstanding=run.ledger.outstanding,
            queued=self.production.pending(),
            waiting=run.settler.waiting(),
            sites=sites,
            dead_letters_dropped=counts["dead_letters_dropped"],
        )

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "running" if self._run else "new"
        return f"<Sequence {state} sites={self.sites} runtime={self.runtime.name}>"


def _direct(action: Action, fate: Fate) -> bool:
    """Whether ``action`` of an ``async def`` function needs nothing of a Site.

    Unkeyed (no order or affinity to keep), undelayed, without hooks, under a
    Fate without license keys or action events: the Site would only make the
    coroutine and hand it to the loop, so the loop gets the ticket at once.
    """
    return (action.key is None and action.delay <= 0 and not action.hooks
            and not action.after and not fate.license_keys and not fate.action_events)


def _to_loop(run: _Running, tickets: list[Ticket], fate: Fate) -> None:
    """Hand unstarted tickets to the Sequence's event loop; cancelled if it has stopped."""
    try:
        run.context.runner.submit(tickets, fate)
    except RuntimeError:  # stopped: a shutdown's timeout ran out while they were admitted
        for ticket in tickets:
            run.settler.settle(ticket, CANCELLED)
