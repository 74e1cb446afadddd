# SPDX-License-Identifier: MIT
"""The messages echo_actors' own actors send each other: small frozen Structs.

The dispatcher's events (everything but :class:`Batch` and :class:`LifeChanged`)
go through its :class:`~echo_actors.dispatcher.Desk`, a queue that outlives a
crashed dispatcher, so that none is lost while it restarts.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Batch",
    "Cancel",
    "Done",
    "Grant",
    "Granted",
    "HandBack",
    "KeyFree",
    "LifeChanged",
    "Requeue",
    "SiteExited",
    "SiteStarted",
    "StatsRequest",
    "Wake",
]


class Wake(msgspec.Struct, frozen=True):
    """Dispatcher: there are events on the desk, or new work in the production."""


class Batch(msgspec.Struct, frozen=True):
    """Site ``site`` (incarnation ``urn``): run these tickets in order, those still SENT here."""

    site: int
    urn: str
    tickets: list[Any]
    direct: bool = False  # sent by a submitter under a Grant


class Done(msgspec.Struct, frozen=True):
    """Dispatcher: a Site finished a batch: ``ran`` tickets, ``failed`` of them failed."""

    site: int
    ran: int
    failed: int


class LifeChanged(msgspec.Struct, frozen=True):
    """Site: Life's hooks or Fate changed; here is the new snapshot."""

    snapshot: Any


class SiteExited(msgspec.Struct, frozen=True):
    """Dispatcher: the Site incarnation ``urn`` at ``site`` exited: ``"crash"``, ``"normal"``
    (stopped; both are restarted) or ``"shutdown"`` (by its supervisor)."""

    site: int
    urn: str | None
    reason: str


class SiteStarted(msgspec.Struct, frozen=True):
    """Dispatcher: Site ``site`` was (re)started; here is its ref."""

    site: int
    ref: Any


class Grant(msgspec.Struct, frozen=True):
    """A token the dispatcher leaves on its desk: Site ``site`` (``urn``) idles with nothing
    queued, so one submitter may send it one ticket directly (one hop instead of two)."""

    site: int
    urn: str
    ref: Any


class Granted(msgspec.Struct, frozen=True):
    """Dispatcher: a submitter sent ``ticket`` to a Site under ``grant``; track it."""

    grant: Grant
    ticket: Any


class Requeue(msgspec.Struct, frozen=True):
    """Dispatcher: the next attempt of an ordered action that holds its key: run it next."""

    ticket: Any


class KeyFree(msgspec.Struct, frozen=True):
    """Dispatcher: the action holding ordered key ``key`` ended for good; the next may run."""

    key: str


class Cancel(msgspec.Struct, frozen=True):
    """Dispatcher (asked): cancel action ``action_id`` if it has not started; reply whether."""

    action_id: str


class StatsRequest(msgspec.Struct, frozen=True):
    """Dispatcher (asked): reply with per-Site figures."""


class HandBack(msgspec.Struct, frozen=True):
    """Dispatcher: stop feeding Sites and cancel every ticket not yet started."""
