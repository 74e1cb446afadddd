# SPDX-License-Identifier: MIT
"""Two-stage stopping: the first signal asks for a graceful stop, the second leaves now.

The first SIGINT (Ctrl-C) or SIGTERM sets :attr:`Stopping.requested`: the
command stops taking work, lets what runs finish, prints its summary and
exits. A second one calls ``hurry`` (which says what is abandoned) and ends
the process at once with ``128 + signal``: threads still running an action
would otherwise keep it alive.

The kernel may deliver a signal to any thread, and Python runs the handler in
the main thread only once that thread wakes: a blocking call made there (a
shutdown waiting for a running action) goes through :func:`interruptible`,
which keeps the main thread waking.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

__all__ = ["Stopping", "interruptible"]

T = TypeVar("T")

_TICK = 0.1
"""Seconds between the main thread's wake-ups in :func:`interruptible`."""


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


def interruptible(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a helper thread, while the calling thread waits in short
    timed joins, so that a signal delivered to any thread reaches its handler within
    ``_TICK`` (an untimed wait in the main thread would not wake for it). Returns what
    ``fn`` returns or raises what it raises."""
    outcome: list[tuple[bool, Any]] = []

    def call() -> None:
        try:
            outcome.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=call, name="echo-actors-interruptible", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_TICK)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
