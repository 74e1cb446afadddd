# SPDX-License-Identifier: MIT
"""Admission: what the door does to an action that comes in, before the core sees it.

Two calls, made once per submission (``Sequence.submit``/``submit_many``,
``Production.assign``, ``RedisProduction.assign`` and each first read of a
Redis entry):

- :func:`check_admissible` refuses what the configuration does not allow: a
  delay over ``Fate.max_delay``, a chain longer than ``Fate.max_chain``, an
  encoding over ``Fate.max_action_bytes`` (or one that cannot be encoded).
- :func:`admit` resets the fields a sender does not choose.

A sender controls ``name``, ``content``, ``metadata``, ``delay`` (up to
``max_delay``), ``hooks``, ``after``, ``next`` (up to ``max_chain`` actions),
``license``, ``key``, ``ordered`` and ``id`` (the idempotency key: a sender
who reuses an id shares it with itself). The system owns ``attempt`` (1 when
admitted, counted by the Sequence or the Redis workers) and ``created_at``
(the admission time), along the whole chain.
"""

from __future__ import annotations

import time

import msgspec
from msgspec.structs import force_setattr

from echo_actors.action import Action
from echo_actors.errors import EncodeError, ValidationError
from echo_actors.fate import Fate

__all__ = ["admit", "check_admissible", "check_limits"]

_ENCODER = msgspec.msgpack.Encoder()


def check_admissible(action: Action, fate: Fate) -> None:
    """Refuse ``action`` if ``fate`` does not allow it; costs one MessagePack encoding.

    Raises:
        ValidationError: not an Action, a chain longer than ``fate.max_chain``,
            a delay over ``fate.max_delay`` anywhere in the chain, or an
            encoding over ``fate.max_action_bytes`` (the message names which).
        EncodeError: a value MessagePack cannot carry (a ValidationError too).
    """
    if not isinstance(action, Action) or action.next is not None:
        check_limits(action, fate)
    elif action.delay > fate.max_delay:
        check_limits(action, fate)  # raises, naming the delay
    else:
        # Only a scalar (None, a bool, a float or a 64-bit int), no metadata, hooks, key,
        # license or trace: its size is bounded and it encodes, so it need not be encoded.
        # (Inline, not a helper: this is every submit's path.)
        content = action.content
        kind = type(content)
        if ((content is None or kind is bool or kind is float
             or (kind is int and -(1 << 63) <= content < (1 << 64)))
                and action.key is None and action.license is None
                and not (action.metadata or action.hooks or action.after or action.trace)
                and fate.max_action_bytes >= _SMALL_BOUND):
            return
    try:
        size = len(_ENCODER.encode(action))
    except RecursionError:
        raise EncodeError(f"action {action.id} ({action.name}) is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"action {action.id} ({action.name}) cannot be encoded: {exc}") from exc
    if size > fate.max_action_bytes:
        raise ValidationError(
            f"action {action.id} ({action.name}) encodes to {size} bytes, over the limit "
            f"of {fate.max_action_bytes} (Fate.max_action_bytes)"
        )


_SMALL_BOUND = 2048
"""Bytes a scalar action (see :func:`check_admissible`) encodes to at most (name and id are
bounded)."""


def check_limits(action: Action, fate: Fate) -> None:
    """:func:`check_admissible` without the size check (for callers that encode anyway).

    Raises:
        ValidationError: not an Action, a chain too long or a delay too long.
    """
    if not isinstance(action, Action):
        raise ValidationError(f"expected an Action, got {type(action).__name__}")
    length = 0
    link: Action | None = action
    while link is not None:
        length += 1
        if length > fate.max_chain:
            raise ValidationError(
                f"action {action.id} ({action.name}) chains more than {fate.max_chain} "
                "actions (Fate.max_chain)"
            )
        if link.delay > fate.max_delay:
            raise ValidationError(
                f"action {link.id} ({link.name}): delay {link.delay:g} s is over "
                f"{fate.max_delay:g} s (Fate.max_delay)"
            )
        link = link.next


def admit(action: Action, *, now: float | None = None, fresh: bool = False) -> Action:
    """``action`` as the system takes it in: ``attempt`` 1 and ``created_at`` now, chain included.

    The license does not cover these fields, so an admitted action still verifies.
    ``fresh``: the caller holds the only reference to ``action`` (just decoded), so an
    action without ``next`` is admitted in place instead of copied (and checked again).
    """
    moment = time.time() if now is None else now
    if action.next is None:
        if action.attempt == 1 and action.created_at == moment:
            return action
        if fresh:
            force_setattr(action, "attempt", 1)
            force_setattr(action, "created_at", moment)
            return action
        return action.replace(attempt=1, created_at=moment)
    admitted: Action | None = None
    for link in reversed(action.chain()):
        admitted = link.replace(next=admitted, attempt=1, created_at=moment)
    assert admitted is not None
    return admitted
