# SPDX-License-Identifier: MIT
"""Gathering: the results of many actions as one asyncio future, for ``Sequence.gather``.

Awaiting N runtime futures with ``asyncio.gather`` costs the awaiting loop a task,
a waiter and a wake-up per future. A Gathering stands in for all N futures
instead: each ticket gets a :class:`Slot` (what the one place that ends an
action sets, from whatever thread), and the awaiting loop is woken once, when
the last slot is set (or the first failure, unless exceptions are returned).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable
from typing import Any

import msgspec

from echo_actors.times import Times

__all__ = ["Gathering", "Slot"]


class Gathering:
    """N results in order, delivered to ``loop`` as one future (:attr:`future`)."""

    __slots__ = ("_count", "_error", "_loop", "_n", "_return_exceptions", "future", "values")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop, return_exceptions: bool) -> None:
        self.values: list[Any] = [None] * n
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self._loop = loop
        self._n = n
        self._count = itertools.count(1)  # next() is atomic: no lock between setters
        self._error: BaseException | None = None
        self._return_exceptions = return_exceptions
        if n == 0:
            self.future.set_result(self.values)

    def slots(self) -> Callable[[int], Slot]:
        """``slot(index)``: what the ticket of the ``index``-th action carries as its future
        (a partial, not a method: the Slot is made in C, no Python call per action)."""
        return functools.partial(Slot, self)

    def _set(self, index: int, value: Any, error: BaseException | None) -> None:
        if error is not None:
            if self._return_exceptions:
                value = error
            elif self._error is None:
                self._error = error
                self._wake()  # the first failure ends the wait, as asyncio.gather's
        self.values[index] = value
        if next(self._count) == self._n:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        future = self.future
        if future.done():  # cancelled meanwhile, or the failure came first
            return
        if self._error is not None:
            future.set_exception(self._error)
        else:
            future.set_result(self.values)


class Slot(msgspec.Struct, gc=False):
    """One action's place in a :class:`Gathering`; set once, like a runtime future.

    Not tracked by the garbage collector (one object fewer to traverse for each
    action in flight): nothing a Slot refers to can refer back to it (users never
    see a Slot; the results in the list are theirs), so it is never in a cycle.
    """

    _gathering: Gathering
    _index: int
    times: Times | None = None  # set by the settler, as on a runtime future

    def set(self, value: Any = None) -> None:
        gathering = self._gathering  # its _set(index, value, None), inline: once per action
        gathering.values[self._index] = value
        if next(gathering._count) == gathering._n:
            gathering._wake()

    def set_exception(self, exc_info: Any = None) -> None:
        exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        self._gathering._set(self._index, None, exc)
