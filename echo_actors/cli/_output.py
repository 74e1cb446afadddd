# SPDX-License-Identifier: MIT
"""Where the command's words go: log configuration (to stderr) and closed outputs.

The command is an application, so it configures logging, unlike the library:
one handler on the root logger renders every event (the library's, and the
user's plan's) as console lines or JSON, at ``--log-level``. Writing to a
closed stream (``| head``, a quit pager) must neither kill a thread nor print
a traceback: the handler drops what it cannot write, and :func:`silence`
points both streams at ``/dev/null`` so that the interpreter's last flush is
quiet too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import IO, Any

import structlog

__all__ = ["LEVELS", "configure_logging", "silence"]

LEVELS = ("debug", "info", "warning", "error")


class _QuietHandler(logging.StreamHandler[IO[str]]):
    """A stream handler that stops writing, without a word, once its stream is closed."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None or getattr(self.stream, "closed", False):
            return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # A closed pipe (or a record that would not format) must not print a
        # traceback from whichever thread logged: drop the record.
        return


def configure_logging(level: str, fmt: str, stream: IO[str]) -> Callable[[], None]:
    """Render log events at ``level`` as ``fmt`` (console or json) on ``stream``.

    Returns the function that undoes it (the command calls it when done, so
    that ``main`` can run in-process, e.g. in tests).
    """
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_terminal(stream))
        final = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        # the library's records carry their fields in `extra`
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _QuietHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # structlog.get_logger() users (a plan's own logging) go to the same handler.
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved)

    return undo


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):
        return False


def silence() -> None:
    """Point stdout and stderr at /dev/null: nothing more is written, nothing complains."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
