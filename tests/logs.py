# SPDX-License-Identifier: MIT
"""Capture the library's log events in a test, as dicts: ``event``, ``log_level``, fields.

The library logs on standard-library loggers ``echo_actors.*`` (fields in
``extra``); :func:`capture_events` attaches a handler to the package logger
for the duration. Modules that still log through ``structlog.get_logger()``
are captured too (structlog's own capture, restored after), so a test does not
care which way a module logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.testing import LogCapture

_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime",
}


class _Collect(logging.Handler):
    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in record.__dict__.items() if k not in _RECORD_KEYS}
        self.events.append({
            "event": record.getMessage(), "log_level": record.levelname.lower(),
            "logger": record.name, **fields,
        })


@contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Every event the library logs inside the block, debug included, in order."""
    events: list[dict[str, Any]] = []
    logger = logging.getLogger("echo_actors")
    handler = _Collect(events)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    capture = LogCapture()
    capture.entries = events
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors.clear()
    processors.append(capture)
    structlog.configure(processors=processors)
    try:
        yield events
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)
        logger.removeHandler(handler)
        logger.setLevel(level)
