# SPDX-License-Identifier: MIT
"""``future.chain()``: waiting for the last result of a chain of actions.

A submitted action's future resolves with the head's own result. When the
head completes and its ``next`` is submitted, settle gives the child a
future of its own and records it on the parent's (:meth:`Chained._link`),
before the parent's is set; following those links from a resolved future
leads to the last one. Nothing is paid for actions without ``next``.
"""

from __future__ import annotations

import functools
from typing import Any, Self

__all__ = ["Chained"]


class Chained:
    """The ``chain()`` of a runtime's future (the class must offer ``add_done_callback``
    and keep its outcome in ``_value`` / ``_exc_info``)."""

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
