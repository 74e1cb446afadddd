# SPDX-License-Identifier: MIT
"""The simulation runtime: deterministic discrete-event execution on a virtual clock.

Every actor loop, and whatever :meth:`SimulationRuntime.spawn` starts, is a
greenlet; one scheduler (the *kernel*) runs them, one at a time, from a FIFO
queue of ready greenlets and a heap of timers ordered by (virtual time,
sequence number). Time only moves when nothing is ready: the clock jumps to
the next timer. Delays, retry backoff, timeouts, ``sleep`` and
``monotonic`` all use that clock, so an hour of mostly-waiting work takes a
fraction of a second, and the same seed gives the same run every time.

Ordinary code (the thread that is not one of the kernel's greenlets, e.g. a
script or a test) drives the kernel whenever it waits: ``future.get()``,
``event.wait()``, ``runtime.sleep()`` run the scheduler until what they wait
for has happened. A wait that can never end (nothing ready, no timer
pending) raises ``pykka.Timeout`` (futures) or returns ``False`` (events)
instead of hanging. Everything belongs to the thread that uses it: do not
share a SimulationRuntime between threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import random
import sys
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, TypeVarTuple, cast

import greenlet  # type: ignore[import-untyped]
import pykka
import pykka.messages
from pykka._envelope import Envelope  # what pykka's own tell wraps a message in
from pykka._future import _Unset  # what pykka.Future.__init__ sets (pykka is pinned to 4.x)

from echo_actors._logging import get_logger
from echo_actors.action import ActionSource, set_action_source
from echo_actors.runtime._action_future import ActionFuture
from echo_actors.runtime._outcome import outcome

if TYPE_CHECKING:
    import threading

    from pykka._actor import ActorInbox
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

__all__ = [
    "Faults",
    "InjectedCrash",
    "SimulationActor",
    "SimulationEvent",
    "SimulationFuture",
    "SimulationKernel",
    "SimulationRuntime",
    "SimulationScheduler",
]

_log = get_logger("echo_actors.runtime")

_UNSET = _Unset()

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Interrupt(BaseException):
    """Thrown into a greenlet by :meth:`SimulationRuntime.call_with_timeout` at its deadline."""


class _SimGreenlet(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet the kernel runs; ``waiter`` is what it is parked on, if anything."""

    def __init__(self, run: Callable[..., object], kernel: SimulationKernel) -> None:
        super().__init__(run)
        self.kernel = kernel
        self.waiter: _Waiter | None = None
        self.pending: BaseException | None = None


class _Timer:
    __slots__ = ("args", "cancelled", "fn", "owner")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.owner: SimulationScheduler | None = None

    def cancel(self) -> None:
        """Drop the timer if it has not run yet (no effect afterwards)."""
        self.cancelled = True


class _Waiter:
    """One parked greenlet; ``fire`` wakes it once (later fires are ignored).

    A sleeping greenlet's waiter sits in the timer heap itself: at its time the
    kernel switches to the greenlet directly (one step, no timer object), unless
    something fired it first (then it is skipped there, as a cancelled timer).
    """

    __slots__ = ("done", "glet", "timer")

    def __init__(self, glet: _SimGreenlet) -> None:
        self.glet = glet
        self.done = False
        self.timer: _Timer | None = None

    @property
    def cancelled(self) -> bool:
        """As :attr:`_Timer.cancelled`, for a waiter in the heap: fired already."""
        return self.done


class SimulationKernel:
    """The scheduler: ready greenlets (FIFO) and timers (by virtual time, then order).

    ``now`` is the virtual clock (seconds, from 0). ``steps`` counts what the
    kernel did: greenlet switches plus timers run.

    With ``shuffle``, the next greenlet to run is drawn from the ready ones by
    a generator seeded from ``seed`` instead of taken in FIFO order: each seed
    is one interleaving of the actors' message handling, the same every run
    (deterministic simulation testing). Off by default, and then free.
    """

    def __init__(self, seed: int = 0, *, shuffle: bool = False) -> None:
        self.seed = seed
        self.now = 0.0
        self.steps = 0
        self.shuffle = shuffle
        self._pick = random.Random(f"{seed}:schedule") if shuffle else None
        self._ready: deque[tuple[_SimGreenlet, Any]] = deque()
        self._heap: list[tuple[float, int, _Timer | _Waiter]] = []
        self._seq = itertools.count()
        self._hub: Any = None
        # What the running run_until checks between steps, for _switch_out to check too.
        self._done: Callable[[], bool] | None = None
        self._deadline: float | None = None
        self._pop: Callable[[], tuple[_SimGreenlet, Any]] = (
            self._ready.popleft if self._pick is None else self._pop_random)
        self._streams: dict[str, int] = {}
        self.action_source: ActionSource | None = None
        """Made current while the kernel runs: ids and ``created_at`` of new actions."""

    # Greenlets

    def current(self) -> _SimGreenlet | None:
        """The running greenlet if it is one of this kernel's, else ``None``."""
        glet = greenlet.getcurrent()
        if isinstance(glet, _SimGreenlet) and glet.kernel is self:
            return glet
        return None

    def spawn(self, fn: Callable[..., object], /, *args: Any) -> _SimGreenlet:
        """Make ``fn(*args)`` a greenlet, ready to run after those ready already."""
        def run(*_: object) -> None:  # the first switch passes None
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - logged; the others must still run
                _log.exception("greenlet_failed", greenlet=repr(greenlet.getcurrent()))

        glet = _SimGreenlet(run, self)
        self._ready.append((glet, None))
        return glet

    def fire(self, waiter: _Waiter, value: Any = True) -> None:
        """Wake ``waiter``'s greenlet with ``value`` (once; its timeout is cancelled)."""
        if waiter.done:
            return
        waiter.done = True
        if waiter.timer is not None:
            waiter.timer.cancel()
        self._ready.append((waiter.glet, value))

    def park(self, waiter: _Waiter, timeout: float | None = None) -> Any:
        """Suspend the current greenlet until ``waiter`` fires (``False`` after ``timeout``)."""
        glet = waiter.glet
        if timeout is not None:
            waiter.timer = self.call_at(self.now + max(0.0, timeout), self.fire, waiter, False)
        glet.waiter = waiter
        try:
            value = self._switch_out()
        finally:
            glet.waiter = None
        if glet.pending is not None:
            exc, glet.pending = glet.pending, None
            raise exc
        return value

    def interrupt(self, glet: _SimGreenlet, exc: BaseException) -> None:
        """Raise ``exc`` in ``glet`` where it waits (at once if it waits now)."""
        if glet.dead:
            return
        glet.pending = exc
        waiter = glet.waiter
        if waiter is not None:
            self.fire(waiter, None)

    # Timers

    def call_at(self, when: float, fn: Callable[..., object], /, *args: Any) -> _Timer:
        """Run ``fn(*args)`` (in the scheduler) at virtual time ``when``."""
        timer = _Timer(fn, args)
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), timer))
        return timer

    # Waiting

    def wait(
        self, ready: Callable[[], bool], register: Callable[[_Waiter], None],
        timeout: float | None,
    ) -> bool:
        """Wait until ``ready()``; False if ``timeout`` (virtual seconds) ran out first.

        In one of the kernel's greenlets: ``register`` a waiter and park. Anywhere
        else: run the scheduler until ``ready()`` or the deadline, or until
        nothing can happen any more.
        """
        glet = self.current()
        if glet is not None:
            waiter = _Waiter(glet)
            register(waiter)
            return bool(self.park(waiter, timeout))
        deadline = None if timeout is None else self.now + max(0.0, timeout)
        return self.run_until(ready, deadline)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (0: let the ready greenlets run first)."""
        glet = greenlet.getcurrent()
        if not isinstance(glet, _SimGreenlet) or glet.kernel is not self:  # current(), inline
            self.run_until(None, self.now + max(0.0, seconds))
            return
        waiter = _Waiter(glet)
        if seconds <= 0:
            self.fire(waiter, True)
            self.park(waiter)
        elif self._pick is not None:  # shuffled: through the ready queue, where it draws
            self.park(waiter, seconds)
        else:  # wakes straight from the heap (see _Waiter); park(), inline
            heapq.heappush(self._heap, (self.now + seconds, next(self._seq), waiter))
            glet.waiter = waiter
            try:
                self._switch_out()
            finally:
                glet.waiter = None
            if glet.pending is not None:
                exc, glet.pending = glet.pending, None
                raise exc

    def _switch_out(self) -> Any:
        """Leave the current greenlet for what the scheduler would run next; its value.

        That is the next ready greenlet, or a sleep that ends next when nothing is
        ready: switched to directly, one switch instead of two through the
        scheduler's loop, in the order that loop would take (and counted as its
        step). Anything else (a timer, the deadline, ``done()``) is the loop's.
        """
        hub = self._hub
        done = self._done
        if done is None or not done():
            ready = self._ready
            while ready:
                glet, value = self._pop()
                if glet.dead:
                    continue
                if glet.parent is not hub:
                    glet.parent = hub
                self.steps += 1
                return glet.switch(value)
            heap = self._heap
            if heap:
                when, _, waiter = heap[0]
                if (type(waiter) is _Waiter and not waiter.done and not waiter.glet.dead
                        and (self._deadline is None or when <= self._deadline)):
                    heapq.heappop(heap)
                    if when > self.now:  # noqa: PLR1730 - max() is a call, per event
                        self.now = when
                    waiter.done = True
                    glet = waiter.glet
                    if glet.parent is not hub:
                        glet.parent = hub
                    self.steps += 1
                    return glet.switch(True)
        return hub.switch()

    def run_until(self, done: Callable[[], bool] | None, deadline: float | None = None) -> bool:
        """Run greenlets and timers until ``done()`` (``None``: never); returns ``done()``.

        Stops at ``deadline`` (the clock is then moved to it) or when nothing
        is ready and no timer is pending.
        """
        previous = self._hub, self._done, self._deadline
        self._hub, self._done, self._deadline = greenlet.getcurrent(), done, deadline
        hub = self._hub
        ready = self._ready
        heap = self._heap
        heappop = heapq.heappop
        pop = self._pop
        source = self.action_source
        outer = set_action_source(source) if source is not None else None
        try:
            while done is None or not done():
                if ready:
                    glet, value = pop()
                elif heap:
                    when, _, timer = heap[0]
                    if isinstance(timer, _Waiter):
                        if timer.done:  # woken early (interrupted): the sleep is over
                            heappop(heap)
                            continue
                    elif timer.cancelled:
                        heappop(heap)
                        continue
                    if deadline is not None and when > deadline:
                        break
                    heappop(heap)
                    if when > self.now:  # noqa: PLR1730 - max() is a call, per event
                        self.now = when
                    if isinstance(timer, _Timer):
                        if timer.owner is not None:
                            timer.owner.timers.discard(timer)
                        self.steps += 1
                        try:
                            timer.fn(*timer.args)
                        except Exception:  # noqa: BLE001 - a bad callback must not stop the clock
                            _log.exception("timer_failed", callback=repr(timer.fn))
                        continue
                    timer.done = True  # a sleep ends, nothing else is ready: run it now
                    glet, value = timer.glet, True
                else:
                    break
                if glet.dead:
                    continue
                if glet.parent is not hub:
                    glet.parent = hub
                self.steps += 1
                try:
                    glet.switch(value)
                except Exception:  # noqa: BLE001 - logged; the others must still run
                    _log.exception("greenlet_failed", greenlet=repr(glet))
            else:
                return True
            if deadline is not None and deadline > self.now:
                self.now = deadline
            return done is not None and done()
        finally:
            self._hub, self._done, self._deadline = previous
            if source is not None:
                set_action_source(outer)

    def _pop_random(self) -> tuple[_SimGreenlet, Any]:
        """Remove and return a ready greenlet drawn by the schedule's generator."""
        ready = self._ready
        assert self._pick is not None
        index = self._pick.randrange(len(ready))
        if index:
            ready.rotate(-index)
            item = ready.popleft()
            ready.rotate(index)
            return item
        return ready.popleft()

    def random(self, name: str = "") -> random.Random:
        """A generator seeded by (seed, ``name``, how many of that name came before)."""
        count = self._streams.get(name, 0)
        self._streams[name] = count + 1
        return random.Random(f"{self.seed}:{name}:{count}")


class SimulationFuture(ActionFuture[T]):
    """A pykka future on the kernel: ``get()`` parks the greenlet or drives the kernel.

    Same contract as ``pykka.ThreadingFuture`` (``pykka.Timeout``, re-raised
    exceptions, ``queue.Full`` on a second set), with timeouts in virtual
    seconds. A ``get()`` from ordinary code that can never complete raises
    ``pykka.Timeout``. :meth:`chain` gives the future of a chain's last result.
    """

    _kernel: ClassVar[SimulationKernel]
    _callbacks: list[Callable[[Any], object]] | None = None

    def __init__(self) -> None:
        # pykka.Future.__init__ (and the Generic chain above it) sets only the first two:
        # one future per action, so they are set here instead of through three initialisers.
        self._get_hook = None
        self._get_hook_result = _UNSET
        self._has_result = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None
        self._waiters: list[_Waiter] = []

    def __repr__(self) -> str:
        return f"<SimulationFuture {'done' if self._ready() else 'pending'}>"

    def __await__(self) -> Generator[None, None, T]:
        """Refused: the kernel advances only while it runs, never from an asyncio loop."""
        raise RuntimeError(
            "a simulation future cannot be awaited from asyncio: its value only comes "
            "while the simulation kernel runs; call .get() instead"
        )

    def _ready(self) -> bool:
        return self._has_result or self._get_hook is not None

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value, waiting up to ``timeout`` virtual seconds (``None``: forever)."""
        if not self._ready() and not self._kernel.wait(self._ready, self._waiters.append, timeout):
            raise pykka.Timeout(f"{timeout} seconds" if timeout is not None else "deadlock")
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        value: T = outcome(self._value, self._exc_info)
        return value

    def done(self) -> bool:
        """Whether the value (or exception) is set."""
        return self._has_result

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(future)`` once the future is set (at once if it is), in the setter's
        greenlet: one OS thread runs the whole kernel, so no lock is needed."""
        if self._has_result:
            fn(self)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._kernel.fire(waiter)
        callbacks = self._callbacks
        if callbacks and self._has_result:
            self._callbacks = None
            for fn in callbacks:
                fn(self)

    def set(self, value: Any | None = None) -> None:
        """Set the value and wake the waiters; ``queue.Full`` if already set."""
        if self._has_result or self._get_hook is not None:  # _ready(), inline
            raise queue.Full
        self._has_result = True
        self._value = value
        if self._waiters or self._callbacks:
            self._wake()

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (default: the one being handled) to raise from ``get()``."""
        if self._ready():
            raise queue.Full
        self._has_result = True
        self._exc_info = sys.exc_info() if exc_info is None else exc_info
        self._wake()

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        """Make ``get()`` return ``func(timeout)``; ``queue.Full`` if a result is set."""
        if self._has_result:
            raise queue.Full
        super().set_get_hook(func)
        self._wake()


class SimulationEvent:
    """``threading.Event`` on the kernel; ``wait(timeout)`` counts virtual seconds."""

    def __init__(self, kernel: SimulationKernel) -> None:
        self._kernel = kernel
        self._flag = False
        self._waiters: list[_Waiter] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._kernel.fire(waiter)

    def clear(self) -> None:
        self._flag = False

    def _register(self, waiter: _Waiter) -> None:
        waiters = self._waiters
        if waiters and waiters[0].done:  # drop those that timed out
            waiters[:] = [w for w in waiters if not w.done]
        waiters.append(waiter)

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        self._kernel.wait(self.is_set, self._register, timeout)
        return self._flag


class _Inbox:
    """An actor's mailbox: a deque, and the actor's greenlet parked on it when empty."""

    __slots__ = ("_items", "_kernel", "_waiter")

    def __init__(self, kernel: SimulationKernel) -> None:
        self._kernel = kernel
        self._items: deque[Envelope[Any]] = deque()
        self._waiter: _Waiter | None = None

    def put(self, envelope: Envelope[Any], /) -> None:
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done:  # fire(), inline: an inbox's waiter has no timeout
                waiter.done = True
                self._kernel._ready.append((waiter.glet, True))

    def _register(self, waiter: _Waiter) -> None:
        self._waiter = waiter

    def get(self) -> Envelope[Any]:
        items = self._items
        if items:
            return items.popleft()
        kernel = self._kernel
        glet = greenlet.getcurrent()
        if not isinstance(glet, _SimGreenlet) or glet.kernel is not kernel:  # current(), inline
            glet = None
        while not items:
            if glet is not None:  # the actor's own greenlet: park until a put fires us
                self._waiter = glet.waiter = _Waiter(glet)  # kernel.park(), inline (no timeout)
                try:
                    kernel._switch_out()
                finally:
                    glet.waiter = None
                if glet.pending is not None:
                    exc, glet.pending = glet.pending, None
                    raise exc
            elif not kernel.wait(lambda: bool(items), self._register, None):
                raise pykka.Timeout("deadlock: nothing will ever reach this inbox")
        return items.popleft()

    def empty(self) -> bool:
        return not self._items


_PYKKA_MESSAGES = (
    # what pykka's own _handle_receive answers (the rest goes to on_receive)
    pykka.messages._ActorStop, pykka.messages.ProxyCall,
    pykka.messages.ProxyGetAttr, pykka.messages.ProxySetAttr,
)

_pykka_log = logging.getLogger("pykka")


class _SimulationRef(pykka.ActorRef[Any]):
    """pykka's ref, with ``tell`` two calls shorter (the same check, the same envelope).

    A tell is most of a simulation's messages: the Site's batch, the dispatcher's
    wake-up. pykka's reads the stopped flag through ``is_alive`` and ``is_set``; this
    reads the actor's :class:`SimulationEvent` flag itself.
    """

    _stopped: SimulationEvent

    def tell(self, message: Any) -> None:
        if self._stopped._flag:
            raise pykka.ActorDeadError(f"{self} not found")
        self.actor_inbox.put(Envelope(message))


class SimulationActor(pykka.Actor):
    """A pykka actor whose loop is a kernel greenlet; its inbox is a deque.

    Use the ``actor_base`` of a :class:`SimulationRuntime` (bound to its
    kernel), not this class itself. A greenlet killed with ``GreenletExit``
    ends the actor quietly (unregistered, asks answered with
    ``ActorDeadError``) without stopping the other actors.

    Its ref's ``tell`` and its message loop are pykka's, shortened for the
    kernel's one thread (the same steps in the same order, fewer calls per
    message): a simulation's speed is mostly its messages' cost.
    """

    _sim_kernel: ClassVar[SimulationKernel]
    _sim_future: ClassVar[type[SimulationFuture[Any]]]
    _sim_stopped: SimulationEvent
    actor_greenlet: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # pykka makes a threading.Event, whose wait() would block without running the
        # kernel: a SimulationEvent runs it. The ref, made after, holds the same one.
        stopped = self._sim_stopped = SimulationEvent(self._sim_kernel)
        self.actor_stopped = cast("threading.Event", stopped)
        ref = self._actor_ref = _SimulationRef(self)
        ref._stopped = stopped

    @classmethod
    def _create_actor_inbox(cls) -> ActorInbox:
        return cast("ActorInbox", _Inbox(cls._sim_kernel))

    @classmethod
    def _create_future(cls) -> pykka.Future[Any]:
        return cls._sim_future()

    def _start_actor_loop(self) -> None:
        self.actor_greenlet = self._sim_kernel.spawn(self._sim_run)

    def _sim_run(self) -> None:
        try:
            self._actor_loop()
        except greenlet.GreenletExit:
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            self._actor_loop_teardown()

    def _actor_loop_running(self) -> None:
        # pykka's loop, step for step, with what it looks up per message looked up once.
        stopped = self._sim_stopped
        inbox = self.actor_inbox
        get = inbox.get
        items = inbox._items if type(inbox) is _Inbox else None  # the deque, read inline
        handle = self._handle_receive
        while not stopped._flag:
            envelope = items.popleft() if items else get()
            reply_to = envelope.reply_to
            try:
                response = handle(envelope.message)
                if reply_to is not None:
                    reply_to.set(response)
            except Exception:  # noqa: BLE001 - as pykka: the asker's, or the actor's failure
                if reply_to is not None:
                    _pykka_log.info(f"Exception returned from {self} to caller:",
                                    exc_info=sys.exc_info())
                    reply_to.set_exception()
                else:
                    self._handle_failure(*sys.exc_info())
                    try:
                        self.on_failure(*sys.exc_info())
                    except Exception:  # noqa: BLE001 - as pykka: logged, the actor stops
                        self._handle_failure(*sys.exc_info())
            except BaseException:  # noqa: BLE001 - as pykka: every actor stops
                _pykka_log.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
                self._stop()
                pykka.ActorRegistry.stop_all()

    def _handle_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, _PYKKA_MESSAGES):  # one check where pykka makes four
                return super()._handle_receive(message)
            return self.on_receive(message)
        except greenlet.GreenletExit as exc:
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise pykka.ActorDeadError(f"{self} was killed while handling a message") from exc


class InjectedCrash(Exception):
    """Raised out of an actor's message handling by :class:`Faults` (a simulated crash)."""


def _not_supervisor(actor: pykka.Actor) -> bool:
    return not any(cls.__name__ == "Supervisor" for cls in type(actor).__mro__)


class Faults:
    """Faults to inject into a simulation: seeded, bounded, off unless asked for.

    Given to :class:`SimulationRuntime` (``faults=``), it draws for each
    message an actor handles whether to crash it ``crash_before`` (the
    message is lost with the actor, as when a handler fails on its first
    line) or ``crash_after`` it was handled (its effects stay), and for each
    message sent to an actor whether to ``delay`` its delivery by up to
    ``max_delay`` virtual seconds (the messages sent after it to that actor
    wait behind it: a mailbox keeps its order). A crash raises
    :class:`InjectedCrash` from inside the actor's message handling, so pykka
    and supervisors see an ordinary crash: the actor stops with that error
    and its supervisor restarts it. At most ``max_crashes`` crashes and
    ``max_delays`` delays happen per run, so that a run ends.

    ``match(actor)`` picks the actors that may fail (default: all but
    supervisors); :meth:`kinds` builds one from class names (``"Site"``,
    ``"Dispatcher"``, ``"_LifeActor"``). Crashes hit messages that were told;
    with ``asks`` (True, or a predicate like ``match``) also asked ones: the
    asker then gets the error as the actor dies. Whatever was injected is
    listed in :attr:`injected` as ``(virtual time, fault, actor class,
    message type)``.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        crash_before: float = 0.0,
        crash_after: float = 0.0,
        delay: float = 0.0,
        max_delay: float = 1.0,
        match: Callable[[pykka.Actor], bool] | None = None,
        asks: bool | Callable[[pykka.Actor], bool] = False,
        max_crashes: int = 10,
        max_delays: int = 100,
    ) -> None:
        for name, p in (("crash_before", crash_before), ("crash_after", crash_after),
                        ("delay", delay)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p!r}")
        if max_delay < 0 or max_crashes < 0 or max_delays < 0:
            raise ValueError("max_delay, max_crashes and max_delays must be >= 0")
        self.seed = seed
        self.crash_before = crash_before
        self.crash_after = crash_after
        self.delay = delay
        self.max_delay = max_delay
        self.match = match if match is not None else _not_supervisor
        self.asks: Callable[[pykka.Actor], bool] = asks if callable(asks) else (lambda _: asks)
        self.max_crashes = max_crashes
        self.max_delays = max_delays
        self.crashes = 0
        self.delays = 0
        self.injected: list[tuple[float, str, str, str]] = []
        self._random = random.Random(f"{seed}:faults")
        self._kernel: SimulationKernel | None = None

    @staticmethod
    def kinds(*names: str) -> Callable[[pykka.Actor], bool]:
        """A ``match`` for actors of these classes (or of subclasses of them), by name."""
        wanted = frozenset(names)
        return lambda actor: any(cls.__name__ in wanted for cls in type(actor).__mro__)

    def __repr__(self) -> str:
        return f"<Faults seed={self.seed} crashes={self.crashes} delays={self.delays}>"

    def _attach(self, kernel: SimulationKernel) -> None:
        if self._kernel is not None and self._kernel is not kernel:
            raise ValueError("a Faults serves one SimulationRuntime; make one per run")
        self._kernel = kernel

    def _note(self, fault: str, actor: pykka.Actor, message: Any) -> None:
        assert self._kernel is not None
        self.injected.append(
            (self._kernel.now, fault, type(actor).__name__, type(message).__name__)
        )

    def _crash(self, p: float, fault: str, actor: pykka.Actor, message: Any) -> None:
        if p and self.crashes < self.max_crashes and self._random.random() < p:
            self.crashes += 1
            self._note(fault, actor, message)
            raise InjectedCrash(f"{fault} {type(message).__name__} in {type(actor).__name__}")

    def _delay(self, actor: pykka.Actor, message: Any) -> float:
        """Virtual seconds to hold ``message`` back (0: deliver now)."""
        if self.delay and self.delays < self.max_delays and self._random.random() < self.delay:
            self.delays += 1
            self._note("delay", actor, message)
            return self._random.uniform(0.0, self.max_delay)
        return 0.0


class _FaultyInbox(_Inbox):
    """An inbox that may hold messages back; remembers the envelope last taken."""

    __slots__ = ("_held", "actor", "last")

    def __init__(self, kernel: SimulationKernel) -> None:
        super().__init__(kernel)
        self._held: deque[Envelope[Any]] | None = None
        self.actor: _FaultyActor | None = None
        self.last: Envelope[Any] | None = None

    def put(self, envelope: Envelope[Any], /) -> None:
        held = self._held
        if held is not None:
            held.append(envelope)
            return
        actor = self.actor
        if actor is not None and actor._sim_fault_target():
            wait = actor._sim_faults._delay(actor, envelope.message)
            if wait > 0:
                self._held = deque([envelope])
                self._kernel.call_at(self._kernel.now + wait, self._release)
                return
        super().put(envelope)

    def _release(self) -> None:
        held, self._held = self._held, None
        actor = self.actor
        if actor is not None and actor.actor_stopped.is_set():
            # Too late: answered as pykka answers what a stopped actor's inbox still held.
            for envelope in held or ():
                reply = envelope.reply_to
                if reply is None:
                    continue
                if type(envelope.message).__name__ == "_ActorStop":
                    reply.set(None)
                else:
                    exc = pykka.ActorDeadError(f"{actor} stopped before handling the message")
                    reply.set_exception((pykka.ActorDeadError, exc, None))
            return
        for envelope in held or ():
            super().put(envelope)

    def get(self) -> Envelope[Any]:
        envelope = super().get()
        self.last = envelope
        return envelope


class _FaultyActor(SimulationActor):
    """A SimulationActor that crashes, or has its mail held back, as its Faults draw."""

    _sim_faults: ClassVar[Faults]
    _sim_fault_matched: bool | None = None
    _sim_fault_asks: bool | None = None

    @classmethod
    def _create_actor_inbox(cls) -> ActorInbox:
        return cast("ActorInbox", _FaultyInbox(cls._sim_kernel))

    def _start_actor_loop(self) -> None:
        cast("_FaultyInbox", self.actor_inbox).actor = self
        super()._start_actor_loop()

    def _sim_fault_target(self) -> bool:
        matched = self._sim_fault_matched
        if matched is None:
            matched = self._sim_fault_matched = bool(self._sim_faults.match(self))
        return matched

    def _handle_receive(self, message: Any) -> Any:
        faults = self._sim_faults
        kind = type(message)
        if not self._sim_fault_target() or (  # pykka's own control messages (stop) pass
            kind.__name__.startswith("_") and kind.__module__.startswith("pykka")
        ):
            return super()._handle_receive(message)
        envelope = cast("_FaultyInbox", self.actor_inbox).last
        asked = envelope is not None and envelope.reply_to is not None
        if asked:
            if self._sim_fault_asks is None:
                self._sim_fault_asks = bool(faults.asks(self))
            if not self._sim_fault_asks:
                return super()._handle_receive(message)
        try:
            faults._crash(faults.crash_before, "crash_before", self, message)
            result = super()._handle_receive(message)
            faults._crash(faults.crash_after, "crash_after", self, message)
        except InjectedCrash:
            if asked:  # pykka would answer the asker and carry on: die as a crash instead
                self._handle_failure(*sys.exc_info())
            raise
        return result


class SimulationScheduler:
    """Timers on the kernel's heap: ``call_later`` in virtual seconds."""

    def __init__(self, kernel: SimulationKernel) -> None:
        self._kernel = kernel
        self.timers: set[_Timer] = set()
        self._stopped = False

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> _Timer:
        """Run ``fn(*args)`` in ``delay`` virtual seconds; returns a handle with ``cancel()``."""
        if self._stopped:
            raise RuntimeError("scheduler is stopped")
        timer = self._kernel.call_at(self._kernel.now + max(0.0, delay), fn, *args)
        timer.owner = self
        self.timers.add(timer)
        return timer

    def pending(self) -> int:
        """Timers neither run nor cancelled yet."""
        return sum(1 for timer in self.timers if not timer.cancelled)

    def stop(self) -> None:
        """Drop the pending timers."""
        self._stopped = True
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class _Origin:
    """Ids from the seeded stream ``"action-ids"`` and times from the virtual clock."""

    __slots__ = ("_bits", "_kernel")

    def __init__(self, kernel: SimulationKernel) -> None:
        self._kernel = kernel
        self._bits = kernel.random("action-ids").getrandbits

    def new_id(self) -> str:
        # The same 32 hex digits as f"{bits:032x}", in a third of its time.
        return self._bits(128).to_bytes(16, "big").hex()

    def now(self) -> float:
        return self._kernel.now


class SimulationRuntime:
    """Deterministic actors on a virtual clock (see the module's docstring).

    ``seed`` seeds every generator :meth:`random` hands out. Read the clock
    with :meth:`monotonic`; let plan functions wait with :meth:`sleep`.
    :meth:`record` keeps an event log stamped with virtual times.

    While its kernel runs, and inside ``with runtime:`` (for a script's own
    code), new actions take their ids from the seeded stream
    ``"action-ids"`` and ``created_at`` from the virtual clock: the same
    seed gives the same ids and timestamps.

    For deterministic simulation testing: ``shuffle`` runs the ready
    greenlets in an order drawn from ``seed`` instead of first come, first
    served (one interleaving per seed), and ``faults`` injects crashes and
    message delays (see :class:`Faults`). Both are off by default and then
    cost nothing.
    """

    name = "simulation"
    actor_base: type[pykka.Actor]

    def __init__(
        self, seed: int = 0, *, shuffle: bool = False, faults: Faults | None = None
    ) -> None:
        self.seed = seed
        self.kernel = SimulationKernel(seed, shuffle=shuffle)
        self.faults = faults
        namespace = {"_kernel": self.kernel, "__module__": __name__}
        self._future_class = cast(
            "type[SimulationFuture[Any]]", type("SimulationFuture", (SimulationFuture,), namespace)
        )
        self.future: Callable[[], ActionFuture[Any]] = self._future_class  # one call, not two
        base: type[SimulationActor] = SimulationActor
        attributes: dict[str, Any] = {
            "_sim_kernel": self.kernel, "_sim_future": self._future_class, "__module__": __name__,
        }
        if faults is not None:
            faults._attach(self.kernel)
            base, attributes["_sim_faults"] = _FaultyActor, faults
        self.actor_base = type("SimulationActor", (base,), attributes)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.kernel.action_source = _Origin(self.kernel)
        self._outer: list[ActionSource | None] = []
        # The kernel's own, not the one-line method below: a model sleeps twice a customer.
        self.sleep = self.kernel.sleep  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return f"<SimulationRuntime seed={self.seed} now={self.kernel.now}>"

    def __enter__(self) -> SimulationRuntime:
        """Make this simulation the source of new actions' ids and ``created_at`` in this
        thread until the block ends (the kernel does so by itself while it runs)."""
        self._outer.append(set_action_source(self.kernel.action_source))
        return self

    def __exit__(self, *_exc: object) -> None:
        set_action_source(self._outer.pop())

    @property
    def shuffle(self) -> bool:
        """Whether the ready greenlets run in a seeded random order (see the class)."""
        return self.kernel.shuffle

    def event(self) -> SimulationEvent:
        """A :class:`SimulationEvent`."""
        return SimulationEvent(self.kernel)

    def scheduler(self) -> SimulationScheduler:
        """A new :class:`SimulationScheduler`."""
        return SimulationScheduler(self.kernel)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (others run meanwhile)."""
        self.kernel.sleep(seconds)

    def monotonic(self) -> float:
        """The virtual clock, in seconds since the runtime was made."""
        return self.kernel.now

    def spawn(self, fn: Callable[..., object], /, *args: Any) -> Any:
        """Run ``fn(*args)`` in a new kernel greenlet (after those ready already)."""
        return self.kernel.spawn(fn, *args)

    def random(self, name: str = "") -> random.Random:
        """A generator seeded from ``seed`` and ``name`` (and how many came before)."""
        return self.kernel.random(name)

    def run(self, seconds: float | None = None) -> None:
        """Run the simulation for ``seconds`` of virtual time, or until nothing can happen."""
        if seconds is None:
            self.kernel.run_until(None)
        else:
            self.kernel.sleep(seconds)

    def record(self, event: str, **fields: Any) -> None:
        """Append ``(now, event, fields)`` to :attr:`events`, the event log."""
        self.events.append((self.kernel.now, event, fields))

    def threadsafe(self) -> Callable[..., None]:
        """Refused: nothing may enter the simulation from another thread."""
        raise RuntimeError(
            "the simulation runtime cannot take calls from other threads (no asyncio: "
            "async def functions and hooks need the thread or gevent runtime)"
        )

    def call_with_timeout(self, seconds: float | None, fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
        """Return ``fn(*args)``, interrupted with ``TimeoutError`` at the virtual deadline.

        The interruption happens where ``fn`` waits (sleep, future, event);
        code that never waits takes no virtual time, so it is never cut short.
        Outside the kernel's greenlets, ``fn`` runs to completion and its
        result is dropped if it took longer than ``seconds``.
        """
        if seconds is None:
            return fn(*args)
        kernel = self.kernel
        glet = kernel.current()
        started = kernel.now
        if glet is None:
            result = fn(*args)
            if kernel.now - started > seconds:
                raise TimeoutError(f"{fn!r} did not finish within {seconds} s")
            return result
        interrupt = _Interrupt()
        timer = kernel.call_at(started + max(0.0, seconds), kernel.interrupt, glet, interrupt)
        try:
            return fn(*args)
        except _Interrupt as exc:
            if exc is not interrupt:
                raise
            raise TimeoutError(f"{fn!r} did not finish within {seconds} s") from None
        finally:
            timer.cancel()
            if glet.pending is interrupt:
                glet.pending = None
