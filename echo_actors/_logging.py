# SPDX-License-Identifier: MIT
"""How the library logs: structlog events on standard-library loggers ``echo_actors.*``.

Each module asks :func:`get_logger` for its logger once. Events are built
with structlog (bound context, keyword fields) but handed to a
``logging.Logger`` with the fields in ``extra``, and never through
structlog's global configuration: the application decides where they go and
at which level (``logging.basicConfig``, or structlog's ``ProcessorFormatter``
with ``ExtraAdder``). The package logger carries a ``NullHandler``, so a
program that configures nothing sees nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from structlog.typing import EventDict

__all__ = ["ROOT", "get_logger"]

ROOT = "echo_actors"
"""The package logger; every library logger is below it."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

# LogRecord's own attributes: ``extra`` may not overwrite them (logging raises KeyError).
_RECORD_KEYS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime"}


def _clear_of_record(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Rename fields that would collide with a LogRecord attribute (``name`` -> ``name_``)."""
    for key in _RECORD_KEYS.intersection(event_dict):
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


class _Logger(structlog.stdlib.BoundLogger):
    """A stdlib BoundLogger that builds nothing for a level its logger does not emit,
    and never raises: a handler that fails (a closed pipe, an unencodable field) loses
    that event, never the caller's work (an actor's loop, an action's ending)."""

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: Any, **event_kw: Any
    ) -> Any:
        if not self._logger.isEnabledFor(_LEVELS.get(method_name, logging.NOTSET)):
            return None
        try:
            return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)
        except Exception:  # noqa: BLE001 - see the class docstring
            return None


_PROCESSORS = (_clear_of_record, structlog.stdlib.render_to_log_kwargs)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger writing to the standard-library logger ``name`` (``echo_actors.*``).

    Independent of ``structlog.configure()``. Guard costly per-action events
    with ``logger.isEnabledFor(logging.DEBUG)``; a disabled level costs one
    cached check either way.

    Raises:
        ValueError: ``name`` is not ``echo_actors`` or below it.
    """
    if name != ROOT and not name.startswith(ROOT + "."):
        raise ValueError(f"library loggers live under {ROOT!r}, not {name!r}")
    return _Logger(logging.getLogger(name), processors=_PROCESSORS, context={})
