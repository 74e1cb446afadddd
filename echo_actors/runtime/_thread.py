# SPDX-License-Identifier: MIT
"""The default runtime: pykka's ThreadingActor, one OS thread per actor.

Also :func:`on_main_exit`: pykka's actor threads are not daemons, so a
program whose main thread ends while actors run would wait for them for
ever; a callback registered there can stop them.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

import pykka
from pykka._future import _Unset  # what pykka.Future.__init__ sets (pykka is pinned to 4.x)

from echo_actors._logging import get_logger
from echo_actors.runtime._action_future import ActionFuture
from echo_actors.runtime._awaitable import Awaitable
from echo_actors.runtime._outcome import outcome
from echo_actors.runtime._streams import Streams

_log = get_logger("echo_actors.runtime")

__all__ = ["MainExitHandle", "ThreadFuture", "ThreadRuntime", "ThreadScheduler", "on_main_exit"]

_UNSET = _Unset()

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Timer:
    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ThreadScheduler:
    """One daemon thread and a heap of due times: any number of timers, one thread.

    Started lazily by the first ``call_later``; ``stop()`` drops what is pending.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_later(self, delay: float, fn: Any, /, *args: Any) -> _Timer:
        timer = _Timer(fn, args)
        due = time.monotonic() + max(0.0, delay)
        with self._cond:
            if self._stopped:
                raise RuntimeError("scheduler is stopped")
            heapq.heappush(self._heap, (due, next(self._seq), timer))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="echo-actors-timers", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def pending(self) -> int:
        with self._cond:
            return sum(1 for _, _, t in self._heap if not t.cancelled)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(min(wait, 3600.0))  # far or infinite: look again hourly
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.fn(*timer.args)
                except Exception:  # noqa: BLE001 - a bad callback must not stop the timers
                    _log.exception("timer_failed", callback=repr(timer.fn))


class ThreadFuture(Awaitable, ActionFuture[T]):
    """A pykka Future for threads, lighter than ``pykka.ThreadingFuture``.

    It holds no lock of its own: a ``get()`` that must wait makes one, held,
    and leaves it among the done-callbacks, which the setter releases. So a
    future nobody blocks on (awaited, gathered, or read once done) costs no
    lock, and waiting is one acquisition. It honours pykka's contract:
    ``get(timeout=...)`` raises ``pykka.Timeout``, a set exception is re-raised,
    a second ``set`` raises ``queue.Full``. Awaiting it from asyncio does not
    block the event loop (see :class:`Awaitable`); :meth:`chain` gives the
    future of a chain's last result.
    """

    def __init__(self) -> None:
        # pykka.Future.__init__ (and the Generic chain above it) sets only these two: one
        # future per action, so they are set here instead of through three initialisers.
        self._get_hook = None
        self._get_hook_result = _UNSET
        self._callbacks = []
        self._is_set = False
        self._value: Any = None
        self._exc_info: Any = None

    def get(self, *, timeout: float | None = None) -> T:
        if not self._is_set and self._get_hook is None:
            ready = threading.Lock()
            ready.acquire()
            self._callbacks.append(ready)  # released by _fire_callbacks, once set
            if self.done():  # set meanwhile: its setter may have fired before the append
                self._fire_callbacks()
            if not ready.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                with contextlib.suppress(ValueError):  # polling with timeouts: no pile of locks
                    self._callbacks.remove(ready)
                raise pykka.Timeout(f"{timeout} seconds")
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if self._exc_info is None:
            value: T = self._value
            return value
        raised: T = outcome(None, self._exc_info)  # raises the exception
        return raised

    def _resolve(self, value: Any, exc_info: Any) -> None:
        if self._is_set or self._get_hook is not None:
            raise queue.Full
        self._value, self._exc_info, self._is_set = value, exc_info, True
        if self._callbacks:
            self._fire_callbacks()

    def done(self) -> bool:
        return self._is_set

    def set(self, value: Any | None = None) -> None:
        if self._is_set or self._get_hook is not None:  # _resolve, inline: every action's
            raise queue.Full
        self._value, self._is_set = value, True
        if self._callbacks:
            self._fire_callbacks()

    def set_exception(self, exc_info: Any = None) -> None:
        self._resolve(None, exc_info if exc_info is not None else sys.exc_info())

    def set_get_hook(self, func: Any) -> None:
        if self._is_set:
            raise queue.Full
        super().set_get_hook(func)
        if self._callbacks:
            self._fire_callbacks()


class ThreadRuntime:
    """Actors on OS threads (``pykka.ThreadingActor``); the default runtime.

    With a ``seed``, :meth:`random` hands out generators seeded as the
    simulation runtime's are (``Fate.seed``): the draws repeat, the
    interleaving of threads does not.
    """

    name = "thread"
    actor_base: type[pykka.Actor] = pykka.ThreadingActor

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._streams = Streams(seed)

    future: Callable[[], ActionFuture[Any]] = ThreadFuture
    """A new :class:`ThreadFuture` (the class itself: one call fewer per action)."""

    def event(self) -> threading.Event:
        return threading.Event()

    def scheduler(self) -> ThreadScheduler:
        return ThreadScheduler()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    monotonic = staticmethod(time.monotonic)
    """``time.monotonic()`` (the C function itself: it is read three times per action)."""

    def spawn(self, fn: Any, /, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    def random(self, name: str = "") -> random.Random:
        """A generator for ``name``: seeded from ``seed`` and ``name`` if there is a seed."""
        return self._streams.random(name)

    def threadsafe(self) -> Callable[..., None]:
        """A function that runs ``fn(*args)`` from any thread: at once, in that thread.

        Under ``gevent.monkey.patch_all()`` threads are greenlets of one OS
        thread and their locks gevent's: calls from a real thread go through
        the hub instead.
        """
        monkey = sys.modules.get("gevent.monkey")
        if monkey is not None and monkey.is_module_patched("threading"):
            from echo_actors.runtime._gevent import hub_caller  # noqa: PLC0415 - patched: there

            return hub_caller()
        return _call

    def call_with_timeout(self, seconds: float | None, fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
        """Return ``fn(*args)``, or raise ``TimeoutError`` if it took over ``seconds``.

        A thread cannot be interrupted: ``fn`` always runs to completion (its
        side effects happen), and only then, if it ran longer than ``seconds``,
        its result is dropped and ``TimeoutError`` is raised. An exception
        ``fn`` raises propagates as is, however long it took. ``seconds=None``
        means no limit.
        """
        started = time.monotonic()
        result = fn(*args)
        if seconds is not None and time.monotonic() - started > seconds:
            raise TimeoutError(f"{fn!r} did not finish within {seconds} s")
        return result


def _call(fn: Callable[..., object], /, *args: Any) -> None:
    fn(*args)


class MainExitHandle:
    """What :func:`on_main_exit` returns: ``cancel()`` unregisters the callback."""

    __slots__ = ("_key",)

    def __init__(self, key: int) -> None:
        self._key = key

    def cancel(self) -> None:
        """Do not call the callback (no effect once it was called or cancelled)."""
        with _main_exit_lock:
            _main_exit_callbacks.pop(self._key, None)


_main_exit_lock = threading.Lock()
_main_exit_callbacks: dict[int, Callable[[], object]] = {}
_main_exit_keys = itertools.count()
_main_exit_installed = False


def _run_main_exit_callbacks() -> None:
    with _main_exit_lock:
        callbacks = list(_main_exit_callbacks.values())
        _main_exit_callbacks.clear()
    for callback in reversed(callbacks):  # the latest first, as atexit does
        try:
            callback()
        except Exception:  # noqa: BLE001 - the others must still run, and the process end
            _log.exception("main_exit_callback_failed", callback=repr(callback))


def _watch_main_thread() -> None:
    threading.main_thread().join()
    _run_main_exit_callbacks()


def on_main_exit(callback: Callable[[], object]) -> MainExitHandle:
    """Call ``callback()`` once the main thread has ended, before Python waits for other threads.

    When the main thread's code ends (or raises), Python joins every
    non-daemon thread before it exits; pykka's actor threads are such
    threads, so a program that forgets to stop its actors never exits. A
    callback registered here runs at that moment, in the main thread, before
    that join: it can warn and stop the actors so that the process ends.
    (``atexit`` handlers would come too late: they run after the join.)

    It rests on ``threading._register_atexit``, CPython's hook for exactly
    this (``concurrent.futures`` uses it); where that does not exist, a
    daemon thread that joins the main thread calls the callbacks instead.
    Callbacks run at most once, the latest registered first; one that raises
    is logged and the others still run. Keep them short, and cancel the
    returned handle when what they would stop was stopped some other way.

    Raises:
        RuntimeError: the interpreter is already shutting down.
    """
    global _main_exit_installed  # one hook per process, installed once
    with _main_exit_lock:
        if not _main_exit_installed:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                register(_run_main_exit_callbacks)  # RuntimeError once shutting down
            else:  # pragma: no cover - not CPython
                threading.Thread(
                    target=_watch_main_thread, name="echo-actors-main-exit", daemon=True
                ).start()
            _main_exit_installed = True
        key = next(_main_exit_keys)
        _main_exit_callbacks[key] = callback
    return MainExitHandle(key)
