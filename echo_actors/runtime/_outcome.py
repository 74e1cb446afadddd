# SPDX-License-Identifier: MIT
"""What every runtime's future does once it is set: return the value or raise the error."""

from __future__ import annotations

from typing import Any

__all__ = ["outcome"]


def outcome(value: Any, exc_info: Any) -> Any:
    """``value``, or the exception of ``exc_info`` (a ``sys.exc_info()`` triple) raised
    with its original traceback."""
    if exc_info is None:
        return value
    exc_type, exc_value, exc_traceback = exc_info
    if exc_value is None:
        exc_value = exc_type()
    if exc_value.__traceback__ is not exc_traceback:
        raise exc_value.with_traceback(exc_traceback)
    raise exc_value
