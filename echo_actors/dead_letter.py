# SPDX-License-Identifier: MIT
"""DeadLetter: an action that ran out of attempts or failed for good, with why."""

from __future__ import annotations

import msgspec

from echo_actors.action import Action

__all__ = ["DeadLetter"]


class DeadLetter(msgspec.Struct, frozen=True):
    """The action, the error's kind and message, the attempts made and when.

    ``first_at`` is when the action was created, ``failed_at`` when it was
    given up (both Unix seconds). Encodes like an Action, so dead letters can
    be stored or shipped as they are.
    """

    action: Action
    error_kind: str
    message: str
    attempts: int
    first_at: float
    failed_at: float
    admission: str | None = None
    """The submission it failed in: a requeue is that submission again, not a replay."""
