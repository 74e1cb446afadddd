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
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

__all__ = ["Awaitable"]


class Awaitable:
    """Done-callbacks and a non-blocking ``__await__`` for a pykka future.

    The future class calls :meth:`_fire_callbacks` once its value or
    exception is set (after it is readable). ``_callbacks`` is a list that
    both sides ``pop`` from: each callback runs exactly once, without a lock,
    whichever of the setter and a late :meth:`add_done_callback` comes second.
    """

    _callbacks: list[Callable[[Any], object]]

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
                fn(self)

    def __await__(self) -> Generator[Any, None, Any]:
        return _wait(self).__await__()


async def _wait(future: Any) -> Any:
    if not future.done():
        if getattr(future, "_get_hook", None) is not None:  # pykka's map/filter: get() computes
            return await asyncio.to_thread(future.get)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_future: Any) -> None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_set, waiter)

        future.add_done_callback(wake)
        await waiter  # cancelled: only this wait ends; the action runs on
        if getattr(future, "_get_hook", None) is not None:  # hooked meanwhile
            return await asyncio.to_thread(future.get)
    return future.get(timeout=0)


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
