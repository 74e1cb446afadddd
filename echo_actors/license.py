# SPDX-License-Identifier: MIT
"""License: Echo's License made real, an HMAC-SHA256 over the action's canonical form."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgspec

from echo_actors.action import Action
from echo_actors.errors import LicenseError

__all__ = ["sign", "verify"]

_CANONICAL = msgspec.msgpack.Encoder(order="sorted")


def _digest(action: Action, key: str) -> str:
    # attempt changes on retry and license is the signature itself: neither is signed.
    body = _CANONICAL.encode(action.replace(license=None, attempt=1))
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def sign(action: Action, key: str) -> Action:
    """``action`` with its ``license`` set to the signature under ``key``.

    The chained ``next`` action is part of what is signed; sign it first if it
    must pass a check of its own when it runs.
    """
    if not key:
        raise ValueError("a license key must not be empty")
    return action.replace(license=_digest(action, key))


def verify(action: Action, keys: Sequence[str]) -> None:
    """Check ``action.license`` against any of ``keys`` (rotation: new and old keys).

    Raises:
        LicenseError: unsigned, tampered with, or signed with another key.
    """
    if action.license is None:
        raise LicenseError(f"action {action.id} ({action.name}) carries no license")
    for key in keys:
        if hmac.compare_digest(action.license, _digest(action, key)):
            return
    raise LicenseError(f"action {action.id} ({action.name}): license does not verify")
