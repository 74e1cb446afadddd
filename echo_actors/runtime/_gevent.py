# SPDX-License-Identifier: MIT
"""The gevent runtime: every actor is a greenlet, every wait yields to the hub.

Works with and without ``gevent.monkey.patch_all()``: inboxes, futures, events
and timers are gevent's own objects, so a greenlet that blocks on an ask, a
future or an event switches to the hub instead of blocking the OS thread.
All of them belong to one hub, hence to one OS thread: do not share them with
other threads (gevent's primitives are not thread-safe).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, cast

import gevent
import gevent.event
import gevent.queue
import pykka

from echo_actors._logging import get_logger
from echo_actors.runtime._action_future import ActionFuture
from echo_actors.runtime._awaitable import Awaitable
from echo_actors.runtime._outcome import outcome
from echo_actors.runtime._streams import Streams

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

    from echo_actors.runtime import Event

__all__ = ["GeventActor", "GeventFuture", "GeventRuntime", "GeventScheduler", "hub_caller"]

_log = get_logger("echo_actors.runtime")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class GeventFuture(Awaitable, ActionFuture[T]):
    """A pykka future whose ``get()`` waits on a gevent Event, so it yields to the hub.

    Same contract as ``pykka.ThreadingFuture``: ``get(timeout=...)`` raises
    ``pykka.Timeout``, a set exception is re-raised with its traceback, and a
    second ``set()``/``set_exception()`` (or one after a get hook) raises
    ``queue.Full``. Awaiting it from asyncio (in another thread than its hub's)
    does not block that event loop (see :class:`Awaitable`); :meth:`chain` gives the
    future of a chain's last result.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks = []
        self._done: Any = gevent.event.Event()
        self._has_result = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None

    def __repr__(self) -> str:
        return f"<GeventFuture {'done' if self._done.is_set() else 'pending'}>"

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value, waiting up to ``timeout`` seconds (``None``: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._get_hook is None and not self._done.is_set():
            wait = _remaining(deadline)
            # A zero wait would still switch to the hub; just check the flag.
            if wait == 0.0 or not self._done.wait(wait):
                raise pykka.Timeout(f"{timeout} seconds")
        if self._get_hook is not None:
            # Set before we looked, or while we waited (set_get_hook wakes us).
            return super().get(timeout=_remaining(deadline))
        value: T = outcome(self._value, self._exc_info)
        return value

    def set(self, value: Any | None = None) -> None:
        """Set the value and wake every waiter; ``queue.Full`` if already set."""
        if self._has_result or self._get_hook is not None:
            raise queue.Full
        self._has_result = True
        self._value = value
        self._done.set()
        if self._callbacks:
            self._fire_callbacks()

    def done(self) -> bool:
        """Whether the value (or exception) is set."""
        return self._has_result

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (default: the one being handled) to raise from ``get()``."""
        assert exc_info is None or len(exc_info) == 3
        if self._has_result or self._get_hook is not None:
            raise queue.Full
        self._has_result = True
        self._exc_info = sys.exc_info() if exc_info is None else exc_info
        self._done.set()
        if self._callbacks:
            self._fire_callbacks()

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        """Make ``get()`` return ``func(timeout)``; ``queue.Full`` if a result is set."""
        if self._has_result:
            raise queue.Full
        super().set_get_hook(func)
        self._done.set()
        if self._callbacks:
            self._fire_callbacks()


class GeventActor(pykka.Actor):
    """A pykka actor whose loop runs in a greenlet, with a gevent queue as inbox.

    ``actor_greenlet`` is the loop's greenlet (``None`` until started): join it
    to wait for the actor to end, or kill it to end the actor abruptly. A
    killed actor unregisters, answers its queued asks with
    ``pykka.ActorDeadError`` and does not run ``on_stop``; other actors are
    left alone (pykka on its own would stop every actor on the
    ``GreenletExit``). A ``gevent.Timeout`` escaping a message handler is
    turned into a ``TimeoutError`` for the same reason.
    """

    actor_greenlet: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # pykka makes a threading.Event, whose wait() would block the whole hub
        # when threading is not monkey-patched; the ref holds its own copy.
        stopped: Any = gevent.event.Event()
        self.actor_stopped = stopped
        self.actor_ref.actor_stopped = stopped

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return cast("ActorInbox", gevent.queue.Queue())

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return GeventFuture()

    _actor_loop_ran = False

    def _start_actor_loop(self) -> None:
        greenlet: Any = gevent.spawn(self._actor_greenlet_run)
        # link() runs the callback in a new greenlet once the loop has ended,
        # whether it returned, raised, or was killed (even before it started).
        greenlet.link(self._actor_greenlet_ended)
        self.actor_greenlet = greenlet

    def _actor_greenlet_run(self) -> None:
        self._actor_loop_ran = True
        self._actor_loop()

    def _actor_greenlet_ended(self, greenlet: Any) -> None:
        if not self.actor_stopped.is_set():
            # Killed outside a message handler (idle, on_start, not started).
            self._actor_killed()
        if not self._actor_loop_ran:
            self.on_killed_before_start(greenlet.exception or gevent.GreenletExit())
        self._actor_loop_teardown()

    def on_killed_before_start(self, exc: BaseException) -> None:
        """Called (in a new greenlet) when the actor's greenlet was killed before its loop
        ran, so neither ``on_start`` nor ``on_stop`` nor ``on_failure`` ever will be:
        supervisors override it to hear of that exit. ``exc`` is what killed it."""

    def _actor_killed(self) -> None:
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        except gevent.Timeout as exc:
            raise TimeoutError(f"{exc!r} escaped a message handler of {self}") from exc
        except gevent.GreenletExit as exc:
            # Killed mid-message: end like a failure of this one message (the
            # asker gets ActorDeadError); the loop sees actor_stopped and ends.
            self._actor_killed()
            raise pykka.ActorDeadError(f"{self} was killed while handling a message") from exc


class _Timer:
    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the timer if it has not run yet (no effect afterwards)."""
        self.cancelled = True


class GeventScheduler:
    """One greenlet and a heap of due times: timers run in (due time, call order).

    The greenlet sleeps on a gevent Event with a timeout (a hub timer), so it
    costs nothing while idle; plain ``gevent.spawn_later`` would not keep the
    order of timers due at the same time. Started lazily by the first
    ``call_later``; ``stop()`` drops what is pending. Callbacks run in that
    greenlet, one at a time: a callback that raises is logged and skipped.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._wake: Any = gevent.event.Event()
        self._runner: Any = None
        self._stopped = False

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> _Timer:
        """Run ``fn(*args)`` in ``delay`` seconds; returns a handle with ``cancel()``."""
        if self._stopped:
            raise RuntimeError("scheduler is stopped")
        timer = _Timer(fn, args)
        due = time.monotonic() + max(0.0, delay)
        heapq.heappush(self._heap, (due, next(self._seq), timer))
        if self._runner is None:
            self._runner = gevent.spawn(self._loop)
        elif self._heap[0][2] is timer:
            self._wake.set()
        return timer

    def pending(self) -> int:
        """Timers neither run nor cancelled yet."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def stop(self) -> None:
        """Drop pending timers and end the greenlet (after a running callback)."""
        self._stopped = True
        self._heap.clear()
        self._wake.set()
        runner = self._runner
        if runner is not None and runner is not gevent.getcurrent():
            runner.join()

    def _loop(self) -> None:
        while True:
            while not self._stopped:
                if not self._heap:
                    self._wake.clear()
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    break
                # The hub's clock may lag time.monotonic(): re-check on wake-up.
                self._wake.clear()
                self._wake.wait(min(wait, 3600.0))  # far or infinite: look again hourly
            if self._stopped:
                return
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.fn(*timer.args)
                # Any error of one callback is logged; the later timers must still run.
                except (Exception, gevent.Timeout):  # noqa: BLE001
                    _log.exception("timer_failed", callback=repr(timer.fn))


def hub_caller() -> Callable[..., None]:
    """``call(fn, *args)``: from any OS thread, run ``fn(*args)`` in a new greenlet of the
    calling thread's hub (where gevent objects may be touched)."""
    loop = gevent.get_hub().loop

    def call(fn: Callable[..., object], /, *args: Any) -> None:
        loop.run_callback_threadsafe(gevent.spawn, fn, *args)

    return call


class GeventRuntime:
    """Actors on greenlets (:class:`GeventActor`); ``gevent`` must be installed.

    ``seed`` seeds :meth:`random` as on the thread runtime.
    """

    name = "gevent"
    actor_base: type[pykka.Actor] = GeventActor

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._streams = Streams(seed)

    def future(self) -> ActionFuture[Any]:
        """A :class:`GeventFuture`."""
        return GeventFuture()

    def event(self) -> Event:
        """A ``gevent.event.Event`` (waiting yields to the hub)."""
        event: Event = gevent.event.Event()
        return event

    def scheduler(self) -> GeventScheduler:
        """A new :class:`GeventScheduler`."""
        return GeventScheduler()

    def sleep(self, seconds: float) -> None:
        """``gevent.sleep``: lets other greenlets run meanwhile."""
        gevent.sleep(seconds)

    monotonic = staticmethod(time.monotonic)
    """``time.monotonic()`` (the C function itself: it is read three times per action)."""

    def spawn(self, fn: Callable[..., object], /, *args: Any) -> Any:
        """Run ``fn(*args)`` in a new greenlet; returns the ``gevent.Greenlet``."""
        return gevent.spawn(fn, *args)

    def random(self, name: str = "") -> random.Random:
        """A generator for ``name``: seeded from ``seed`` and ``name`` if there is a seed."""
        return self._streams.random(name)

    def threadsafe(self) -> Callable[..., None]:
        """A function that runs ``fn(*args)`` in a new greenlet of this thread's hub,
        called from any thread (gevent's own objects are not thread-safe)."""
        return hub_caller()

    def call_with_timeout(self, seconds: float | None, fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
        """Return ``fn(*args)``, interrupted after ``seconds`` with ``TimeoutError``.

        The interruption is a ``gevent.Timeout`` raised where ``fn`` next
        yields to the hub (so CPU-bound code that never yields is not cut
        short). A ``gevent.Timeout`` that ``fn`` raises of its own propagates
        unchanged. ``seconds=None`` means no limit.
        """
        if seconds is None:
            return fn(*args)
        timeout: Any = gevent.Timeout(max(0.0, seconds))
        timeout.start()
        try:
            return fn(*args)
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            raise TimeoutError(f"{fn!r} did not finish within {seconds} s") from exc
        finally:
            timeout.close()
