# SPDX-License-Identifier: MIT
"""Awaiting a runtime's future from asyncio without blocking the event loop.

pykka's own ``Future.__await__`` calls the blocking ``get()``, which freezes
the loop until the action ends. Futures that mix :class:`Awaitable` in
instead call back when they are set, from whatever thread sets them, and the
callback wakes the awaiting task with ``loop.call_soon_threadsafe``.

Cancelling the awaiting task (``asyncio.wait_for``, a ``TaskGroup``, a
client gone away) stops the wait only, never the action:
``Sequence.cancel(action_id)`` cancels an action that has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

__all__ = ["Awaitable", "wakeups_held"]


class Awaitable:
    """Done-callbacks and a non-blocking ``__await__`` for a pykka future.

    The future class calls :meth:`_fire_callbacks` once its value or
    exception is set (after it is readable). ``_callbacks`` is a list that
    both sides ``pop`` from: each callback runs exactly once, without a lock,
    whichever of the setter and a late :meth:`add_done_callback` comes second.
    """

    _callbacks: list[Any]
    """Callbacks, the waiters of awaits (asyncio futures of the awaiting loops), and the
    held locks of blocking ``get()`` calls that wait for it (released once set)."""

    if TYPE_CHECKING:  # provided by the future class

        def done(self) -> bool: ...

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(future)`` once the future is set (at once if it is).

        It runs in the thread (or greenlet) that sets the future, so it must
        be short and must not block: hand the work to where it belongs.
        """
        self._callbacks.append(fn)
        if self.done():
            self._fire_callbacks()

    def _fire_callbacks(self) -> None:
        callbacks = self._callbacks
        while callbacks:
            try:
                fn = callbacks.pop()
            except IndexError:  # the other side took the last one
                return
            with contextlib.suppress(Exception):  # a bad callback must not break the setter
                if isinstance(fn, asyncio.Future):  # an await's waiter (see __await__)
                    getattr(fn.get_loop(), _BRIDGE).wake(fn, self)
                elif callable(fn):
                    fn(self)
                else:  # the lock a blocking get() waits on (a lock is not callable)
                    fn.release()

    def __await__(self) -> Generator[Any, None, Any]:
        """Wait for the value without blocking the loop (a get hook's ``get()`` runs in a
        worker thread); cancelling the wait leaves the action running.

        Unset, it is an asyncio future of the awaiting loop's, given the outcome
        there once this one is set: the await is asyncio's own, no frame of ours.
        """
        if self.done() or getattr(self, "_get_hook", None) is not None:
            return self._await_now()
        loop = asyncio.get_running_loop()
        bridge: _Bridge | None = getattr(loop, _BRIDGE, None)
        if bridge is None:  # made by the loop's own thread: no race
            bridge = _Bridge(loop)
            setattr(loop, _BRIDGE, bridge)
        waiter: asyncio.Future[Any] = loop.create_future()
        self._callbacks.append(waiter)  # itself, not a callback made for it: fewer objects
        if self.done():
            self._fire_callbacks()
        return waiter.__await__()  # cancelled: only this wait ends; the action runs on

    def _await_now(self) -> Generator[Any, None, Any]:
        get = self.get  # type: ignore[attr-defined]
        if getattr(self, "_get_hook", None) is not None:  # pykka's map/filter: get() computes
            return (yield from asyncio.ensure_future(asyncio.to_thread(get)))
        return get(timeout=0)


_BRIDGE = "_echo_actors_bridge"

_held = threading.local()
"""``bridges``: the bridges to wake at the end of the :func:`wakeups_held` block this
thread is in (None outside one). Thread-local and scoped to a block: nothing shared."""


@contextlib.contextmanager
def wakeups_held() -> Generator[None, None, None]:
    """Within: the loops awaiting futures set in this thread are woken once, at the end.

    For whoever sets many futures in a row (a burst of endings): without it, each
    set may wake the awaiting loop, whose thread then takes the GIL to handle one
    result, and gives it back, once per future. Nested blocks wake at the outer end.
    """
    if getattr(_held, "bridges", None) is not None:
        yield
        return
    bridges: list[_Bridge] = []
    _held.bridges = bridges
    try:
        yield
    finally:
        _held.bridges = None
        for bridge in bridges:
            bridge.send()


class _Bridge:
    """Wakes the waiters of one event loop from other threads, one wake-up per burst:
    10,000 results set at once cost a handful of ``call_soon_threadsafe``, not 10,000."""

    __slots__ = ("_lock", "_loop", "_ready", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[tuple[asyncio.Future[Any], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def wake(self, waiter: asyncio.Future[Any], future: Any) -> None:
        self._ready.append((waiter, future))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        held = getattr(_held, "bridges", None)
        if held is not None:  # in a burst: woken once, at its end
            held.append(self)
            return
        self.send()

    def send(self) -> None:
        """Wake the loop (a wake-up is due: ``_scheduled`` is set)."""
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # that loop is closed: nobody waits any more
            with self._lock:
                self._scheduled = False

    def _run(self) -> None:
        with self._lock:
            self._scheduled = False
        ready = self._ready
        while ready:
            waiter, future = ready.popleft()
            if waiter.done():  # cancelled meanwhile
                continue
            try:
                value = future.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - the awaiting task's to raise
                waiter.set_exception(exc)
            else:
                waiter.set_result(value)
