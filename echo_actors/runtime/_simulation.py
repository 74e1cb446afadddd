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
import queue
import random
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, TypeVarTuple, cast

import greenlet  # type: ignore[import-untyped]
import pykka

from echo_actors._logging import get_logger
from echo_actors.runtime._outcome import outcome

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._envelope import Envelope
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

__all__ = [
    "SimulationActor",
    "SimulationEvent",
    "SimulationFuture",
    "SimulationKernel",
    "SimulationRuntime",
    "SimulationScheduler",
]

_log = get_logger("echo_actors.runtime")

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
    """One parked greenlet; ``fire`` wakes it once (later fires are ignored)."""

    __slots__ = ("done", "glet", "timer")

    def __init__(self, glet: _SimGreenlet) -> None:
        self.glet = glet
        self.done = False
        self.timer: _Timer | None = None


class SimulationKernel:
    """The scheduler: ready greenlets (FIFO) and timers (by virtual time, then order).

    ``now`` is the virtual clock (seconds, from 0). ``steps`` counts what the
    kernel did: greenlet switches plus timers run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.now = 0.0
        self.steps = 0
        self._ready: deque[tuple[_SimGreenlet, Any]] = deque()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._hub: Any = None
        self._streams: dict[str, int] = {}

    # Greenlets

    def current(self) -> _SimGreenlet | None:
        """The running greenlet if it is one of this kernel's, else ``None``."""
        glet = greenlet.getcurrent()
        if isinstance(glet, _SimGreenlet) and glet.kernel is self:
            return glet
        return None

    def spawn(self, fn: Callable[..., object], /, *args: Any) -> _SimGreenlet:
        """Make ``fn(*args)`` a greenlet, ready to run after those ready already."""
        glet = _SimGreenlet(lambda *_: fn(*args), self)  # the first switch passes None
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
            value = self._hub.switch()
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

    def _next_timer(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

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
        glet = self.current()
        if glet is None:
            self.run_until(lambda: False, self.now + max(0.0, seconds))
            return
        waiter = _Waiter(glet)
        if seconds <= 0:
            self.fire(waiter, True)
            self.park(waiter)
        else:
            self.park(waiter, seconds)

    def run_until(self, done: Callable[[], bool], deadline: float | None = None) -> bool:
        """Run greenlets and timers until ``done()``; returns ``done()``.

        Stops at ``deadline`` (the clock is then moved to it) or when nothing
        is ready and no timer is pending.
        """
        previous, self._hub = self._hub, greenlet.getcurrent()
        hub = self._hub
        ready = self._ready
        heap = self._heap
        try:
            while not done():
                if ready:
                    glet, value = ready.popleft()
                    if glet.dead:
                        continue
                    if glet.parent is not hub:
                        glet.parent = hub
                    self.steps += 1
                    try:
                        glet.switch(value)
                    except Exception:  # noqa: BLE001 - logged; the others must still run
                        _log.exception("greenlet_failed", greenlet=repr(glet))
                    continue
                when = self._next_timer()
                if when is None or (deadline is not None and when > deadline):
                    if deadline is not None:
                        self.now = max(self.now, deadline)
                    return done()
                _, _, timer = heapq.heappop(heap)
                self.now = max(self.now, when)
                if timer.owner is not None:
                    timer.owner.timers.discard(timer)
                self.steps += 1
                try:
                    timer.fn(*timer.args)
                except Exception:  # noqa: BLE001 - a bad callback must not stop the clock
                    _log.exception("timer_failed", callback=repr(timer.fn))
            return True
        finally:
            self._hub = previous

    def random(self, name: str = "") -> random.Random:
        """A generator seeded by (seed, ``name``, how many of that name came before)."""
        count = self._streams.get(name, 0)
        self._streams[name] = count + 1
        return random.Random(f"{self.seed}:{name}:{count}")


class SimulationFuture(pykka.Future[T]):
    """A pykka future on the kernel: ``get()`` parks the greenlet or drives the kernel.

    Same contract as ``pykka.ThreadingFuture`` (``pykka.Timeout``, re-raised
    exceptions, ``queue.Full`` on a second set), with timeouts in virtual
    seconds. A ``get()`` from ordinary code that can never complete raises
    ``pykka.Timeout``.
    """

    _kernel: ClassVar[SimulationKernel]

    def __init__(self) -> None:
        super().__init__()
        self._has_result = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None
        self._waiters: list[_Waiter] = []

    def __repr__(self) -> str:
        return f"<SimulationFuture {'done' if self._ready() else 'pending'}>"

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

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._kernel.fire(waiter)

    def set(self, value: Any | None = None) -> None:
        """Set the value and wake the waiters; ``queue.Full`` if already set."""
        if self._ready():
            raise queue.Full
        self._has_result = True
        self._value = value
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
            self._kernel.fire(waiter)

    def _register(self, waiter: _Waiter) -> None:
        self._waiter = waiter

    def get(self) -> Envelope[Any]:
        items = self._items
        while not items:
            if not self._kernel.wait(lambda: bool(items), self._register, None):
                raise pykka.Timeout("deadlock: nothing will ever reach this inbox")
        return items.popleft()

    def empty(self) -> bool:
        return not self._items


class SimulationActor(pykka.Actor):
    """A pykka actor whose loop is a kernel greenlet; its inbox is a deque.

    Use the ``actor_base`` of a :class:`SimulationRuntime` (bound to its
    kernel), not this class itself. A greenlet killed with ``GreenletExit``
    ends the actor quietly (unregistered, asks answered with
    ``ActorDeadError``) without stopping the other actors.
    """

    _sim_kernel: ClassVar[SimulationKernel]
    _sim_future: ClassVar[type[SimulationFuture[Any]]]
    actor_greenlet: Any = None

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

    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        except greenlet.GreenletExit as exc:
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise pykka.ActorDeadError(f"{self} was killed while handling a message") from exc


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


class SimulationRuntime:
    """Deterministic actors on a virtual clock (see the module's docstring).

    ``seed`` seeds every generator :meth:`random` hands out. Read the clock
    with :meth:`monotonic`; let plan functions wait with :meth:`sleep`.
    :meth:`record` keeps an event log stamped with virtual times.
    """

    name = "simulation"
    actor_base: type[pykka.Actor]

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.kernel = SimulationKernel(seed)
        namespace = {"_kernel": self.kernel, "__module__": __name__}
        self._future_class = cast(
            "type[SimulationFuture[Any]]", type("SimulationFuture", (SimulationFuture,), namespace)
        )
        self.actor_base = type("SimulationActor", (SimulationActor,), {
            "_sim_kernel": self.kernel, "_sim_future": self._future_class, "__module__": __name__,
        })
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"<SimulationRuntime seed={self.seed} now={self.kernel.now}>"

    def future(self) -> pykka.Future[Any]:
        """A :class:`SimulationFuture` on this runtime's kernel."""
        return self._future_class()

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
            self.kernel.run_until(lambda: False)
        else:
            self.kernel.sleep(seconds)

    def record(self, event: str, **fields: Any) -> None:
        """Append ``(now, event, fields)`` to :attr:`events`, the event log."""
        self.events.append((self.kernel.now, event, fields))

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
