# SPDX-License-Identifier: MIT
"""ActionFuture: what ``Sequence.submit`` returns, whichever runtime the Sequence runs on.

A pykka future of the action's own result, plus its :class:`~echo_actors.Times` and
``chain()``. When the head of a chain completes and its ``next`` is submitted,
settle gives the child a future of its own and records it on the parent's
(:meth:`ActionFuture._link`), before the parent's is set; following those links
from a resolved future leads to the last one. Nothing is paid for actions
without ``next``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Self, TypeVar

import pykka

if TYPE_CHECKING:
    from echo_actors.times import Times

__all__ = ["ActionFuture"]

T = TypeVar("T")


class ActionFuture(pykka.Future[T]):
    """The future of a submitted action's result: ``get(timeout=...)``, awaitable, and
    pykka's helpers (``pykka.get_all``, ``map``, ...), plus :attr:`times` and
    :meth:`chain`.

    Each runtime has its own subclass (the class must offer ``add_done_callback``
    and keep its outcome in ``_value`` / ``_exc_info``).
    """

    times: Times | None = None
    """When its action was accepted, started and finished, on the runtime's clock (set
    before its result; None until then, and for a future not made by a Sequence)."""

    _next: Any = None
    """The future of the next link, once settle submitted it (set before this one resolves)."""

    def chain(self) -> Self:
        """A future of the last result of this action's chain (of its own for no ``next``).

        It fails with the error of the first link that failed for good (its
        dead letter's error), or with ``CancellationError`` when a link was
        cancelled (a shutdown with the chain in flight): it always ends when
        the chain does. Awaitable like this future.
        """
        tail = type(self)()
        self.add_done_callback(functools.partial(_follow, tail))  # type: ignore[attr-defined]
        return tail

    def _link(self) -> Self:
        """A new future for the next link, recorded as this one's (settle calls it)."""
        following = self._next = type(self)()
        return following


def _follow(tail: Any, link: Any) -> None:
    """``link`` resolved: go on to its next link, or end ``tail`` as ``link`` ended."""
    following = link._next  # the same family of futures: its own fields
    if following is not None:
        following.add_done_callback(functools.partial(_follow, tail))
        return
    tail.times = getattr(link, "times", None)  # the last link's: accepted when its parent ended
    if link._exc_info is not None:
        tail.set_exception(link._exc_info)
    else:
        tail.set(link._value)
