# SPDX-License-Identifier: MIT
"""Progress of a run: a live bar on a terminal, plain periodic lines otherwise (tqdm).

tqdm draws the bar (rate, percentage, ETA) and formats the plain lines the
same way, so a log file gets ``1200/5000 done (24%), 950.3 actions/s, ETA 00:04``
every ``every`` seconds instead of carriage returns.
"""

from __future__ import annotations

import time
from typing import IO, Any

__all__ = ["Progress"]

_LINE = "{n_fmt}/{total_fmt} done ({percentage:.0f}%), {rate_fmt}, ETA {remaining}"


class Progress:
    """Show ``done`` out of ``total`` on ``stream``: ``mode`` is "bar", "lines" or "off"."""

    def __init__(self, stream: IO[str], mode: str, every: float) -> None:
        self._stream = stream
        self._mode = mode
        self._every = every
        self._started = time.monotonic()
        self._last = self._started
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm  # noqa: PLC0415 - only a run on a terminal draws a bar

            self._bar = tqdm(
                total=0, file=stream, unit=" actions", dynamic_ncols=True, leave=True,
                mininterval=0.2, smoothing=0.1,
            )

    def show(self, done: int, total: int) -> None:
        """Report the current figures (cheap: draws at most as often as it should)."""
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
        elif self._mode == "lines":
            now = time.monotonic()
            if now - self._last >= self._every:
                self._last = now
                self._line(done, total, now)

    def close(self, done: int, total: int) -> None:
        """The last figures: the bar is completed and ended, a last line is written."""
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.total = total
            bar.update(done - bar.n)
            bar.close()
        elif self._mode == "lines":
            if total:
                self._line(done, total, time.monotonic())
            self._mode = "off"

    def abandon(self) -> None:
        """Stop without another write (the stream may be closed)."""
        self._mode = "off"
        if self._bar is not None:
            self._bar.disable = True
            self._bar = None

    def _line(self, done: int, total: int, now: float) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - not imported by the other commands

        text = tqdm.format_meter(done, max(total, done), now - self._started,
                                 unit=" actions", bar_format=_LINE)
        print(f"progress: {text}", file=self._stream, flush=True)
