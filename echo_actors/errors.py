# SPDX-License-Identifier: MIT
"""Echo's error kinds, each saying whether it is worth retrying."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ActionTimeoutError",
    "CancellationError",
    "CrashError",
    "DecodeError",
    "EchoError",
    "EncodeError",
    "ExecutionError",
    "LicenseError",
    "RoutingError",
    "ValidationError",
    "error_class",
    "error_kind",
]


class EchoError(Exception):
    """Base of every error echo_actors raises about an action.

    ``kind`` names the error in dead letters and logs; ``retryable`` says
    whether another attempt could succeed.
    """

    kind: ClassVar[str] = "echo"
    retryable: ClassVar[bool] = False


class LicenseError(EchoError):
    """The action's license is missing or does not verify: never executed."""

    kind = "license"


class ExecutionError(EchoError):
    """The plan's function (or a hook) failed; worth another attempt.

    Any other exception raised by a user function is wrapped in one, with the
    original chained as ``__cause__``.
    """

    kind = "execution"
    retryable = True


class ActionTimeoutError(ExecutionError):
    """The action ran past its signature's ``timeout``; worth another attempt."""

    kind = "timeout"


class CrashError(ExecutionError):
    """The Site running the action crashed; the action goes back to the queue."""

    kind = "crash"


class RoutingError(EchoError):
    """No function serves the action's name: retrying cannot help."""

    kind = "routing"


class CancellationError(EchoError):
    """The action was cancelled (shutdown without drain) before it started."""

    kind = "cancellation"


class ValidationError(EchoError):
    """The action's content does not fit its signature (the message names the field)."""

    kind = "validation"


class DecodeError(ValidationError):
    """Bytes that are not a valid encoded Action (malformed, wrong type, too big)."""

    kind = "decode"


class EncodeError(ValidationError, ValueError):
    """An action that cannot be encoded: a value the format cannot carry, too big, too deep.

    Also a ValueError, as the size check it replaces was.
    """

    kind = "encode"


def error_kind(exc: BaseException) -> str:
    """The kind recorded for ``exc``: its own for EchoErrors, ``"execution"`` otherwise."""
    return exc.kind if isinstance(exc, EchoError) else ExecutionError.kind


def error_class(kind: str) -> type[EchoError]:
    """The error class of ``kind`` (the inverse of :func:`error_kind`), for an error that
    crossed a process boundary as its kind; ``ExecutionError`` for a kind unknown here."""
    return _BY_KIND.get(kind, ExecutionError)


_BY_KIND: dict[str, type[EchoError]] = {
    cls.kind: cls for cls in (
        EchoError, LicenseError, ExecutionError, ActionTimeoutError, CrashError, RoutingError,
        CancellationError, ValidationError, DecodeError, EncodeError,
    )
}
