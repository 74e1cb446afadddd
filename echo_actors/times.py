# SPDX-License-Identifier: MIT
"""Times: when an action was accepted, started and finished, on its runtime's clock."""

from __future__ import annotations

import msgspec

__all__ = ["Times"]


class Times(msgspec.Struct, frozen=True, gc=False):
    """An action's life on its runtime's clock, read from ``future.times`` once it ended.

    ``accepted``: when ``submit`` (or ``requeue``, or the parent's completion
    for a chained action) took it in; ``started``: when the attempt that
    ended it began on a Site (``None``: it never started, e.g. cancelled);
    ``finished``: when it ended (completed, dead-lettered or cancelled).
    Seconds of ``runtime.monotonic()``: the virtual clock on the simulation
    runtime, so modellers read waits and service times here.

    Untracked by the garbage collector (``gc=False``): it holds floats only, so it
    can never be part of a reference cycle, and one is made per action.
    """

    accepted: float
    started: float | None
    finished: float

    @property
    def wait(self) -> float:
        """Seconds from acceptance to the start (to the end, if it never started)."""
        return (self.finished if self.started is None else self.started) - self.accepted

    @property
    def service(self) -> float | None:
        """Seconds from the start to the end (``None`` if it never started)."""
        return None if self.started is None else self.finished - self.started
