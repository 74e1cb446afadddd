# SPDX-License-Identifier: MIT
"""Two-stage stopping: the first signal asks for a graceful stop, the second leaves now.

The first SIGINT (Ctrl-C) or SIGTERM sets :attr:`Stopping.requested`: the
command stops taking work, lets what runs finish, prints its summary and
exits. A second one calls ``hurry`` (which says what is abandoned) and ends
the process at once with ``128 + signal``: threads still running an action
would otherwise keep it alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Stopping"]


class Stopping:
    """Installs the handlers for the ``with`` block (main thread only; elsewhere, inert)."""

    def __init__(
        self,
        signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
        hurry: Callable[[int], None] | None = None,
    ) -> None:
        self.requested = threading.Event()
        self.signum: int | None = None
        self._signals = signals
        self._hurry = hurry
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Stopping:
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def request(self, signum: int = 0) -> None:
        """Ask for the graceful stop, as the first signal does (``0``: not by a signal)."""
        if self.signum is None:
            self.signum = signum
        self.requested.set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested.is_set():
            self.request(signum)
            return
        if self._hurry is not None:
            with contextlib.suppress(Exception):  # leaving anyway; a closed stream may raise
                self._hurry(signum)
        os._exit(128 + signum)
