# SPDX-License-Identifier: MIT
"""The messages echo_actors' own actors send each other: small frozen Structs."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Batch",
    "Done",
    "HandBack",
    "LifeChanged",
    "SiteExited",
    "SiteStarted",
    "StatsRequest",
    "Wake",
]


class Wake(msgspec.Struct, frozen=True):
    """Dispatcher: the production has new work."""


class Batch(msgspec.Struct, frozen=True):
    """Site ``site``: run these tickets, in order (those still owned by this batch)."""

    site: int
    tickets: list[Any]


class Done(msgspec.Struct, frozen=True):
    """Dispatcher: a Site finished a batch of ``count`` tickets in ``busy`` seconds."""

    site: int
    count: int
    failed: int
    busy: float


class LifeChanged(msgspec.Struct, frozen=True):
    """Site: Life's hooks or Fate changed; here is the new snapshot."""

    snapshot: Any


class SiteExited(msgspec.Struct, frozen=True):
    """Dispatcher: Site ``site`` died (``crashed``) or stopped; put back its work."""

    site: int
    crashed: bool


class SiteStarted(msgspec.Struct, frozen=True):
    """Dispatcher: Site ``site`` was (re)started; here is its ref."""

    site: int
    ref: Any


class StatsRequest(msgspec.Struct, frozen=True):
    """Dispatcher: reply with per-Site figures."""


class HandBack(msgspec.Struct, frozen=True):
    """Dispatcher: stop feeding Sites and return every ticket not yet sent."""
