# SPDX-License-Identifier: MIT
"""License: Echo's License made real, an HMAC-SHA256 that can't be forged, replayed or re-aimed.

A license is the string ``"1.<key id>.<expires at>.<nonce>.<mac>"``: format
version 1, the id of the key that signed it (derived from the key, so keys
need no names), its expiry (Unix seconds), a random 128-bit nonce and the
HMAC-SHA256, under that key, of all of these and of everything a sender
controls: ``name``, ``content``, ``metadata``, ``delay``, ``hooks``,
``after``, ``key``, ``ordered``, ``id`` and the license of ``next``. The
chained action carries a license of its own (:func:`sign` signs the whole
chain), so the head's license covers the chain down to its last action.
``attempt`` and ``created_at`` are the system's (reset on admission) and are
not signed; neither is ``trace``, the tracing context rewritten at every hop
(a forged one can only put a span in the wrong trace, never change what runs).

What it protects: forgery and tampering (without a key no valid license can
be made), re-aiming (the name is signed), replay (with a nonce store, a
nonce is good for one admission until it expires) and stale captures (the
expiry). What it does not: confidentiality (content travels in clear), and
anyone holding a key can sign anything. Whoever can write to the Redis server
directly is trusted as a worker is.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from echo_actors._logging import get_logger
from echo_actors.action import Action
from echo_actors.errors import LicenseError
from echo_actors.nonces import NonceStore, NonceStoreError

__all__ = ["DEFAULT_TTL", "LICENSE_VERSION", "key_id", "sign", "verify"]

LICENSE_VERSION = 1
"""The license format this module writes and reads."""

DEFAULT_TTL = 300.0
"""Seconds a license made by :func:`sign` stays valid unless told otherwise."""

_log = get_logger("echo_actors.license")
_CANONICAL = msgspec.msgpack.Encoder(order="sorted")
_HEX = frozenset("0123456789abcdef")


def key_id(key: str) -> str:
    """The id a license names ``key`` by: 16 hex characters that reveal nothing of it."""
    return hmac.new(key.encode(), b"echo_actors license key id", hashlib.sha256).hexdigest()[:16]


def _mac(action: Action, key: str, head: str) -> str:
    """The MAC of ``head`` (version, key id, expiry, nonce) and the sender's fields."""
    following = action.next
    body: list[Any] = [
        head, action.name, action.content, action.metadata, float(action.delay),
        action.hooks, action.after, action.key, action.ordered, action.id,
        None if following is None else following.license,
    ]
    try:
        data = _CANONICAL.encode(body)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise LicenseError(
            f"action {action.id} ({action.name}) cannot be signed: {exc or 'nested too deeply'}"
        ) from None
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def sign(
    action: Action, key: str, *, expires_in: float = DEFAULT_TTL, now: float | None = None
) -> Action:
    """``action`` with a license under ``key`` on it and on every action it chains.

    Each license expires ``expires_in`` seconds from ``now`` and has its own
    nonce. Sign with an expiry that covers the action's delay: an expired
    license is refused when the action is admitted.

    Raises:
        ValueError: ``key`` is empty or ``expires_in`` is not a positive number.
        LicenseError: the content cannot be put in canonical form (a dict with
            keys that are not strings, an int of 2**64 or more).
    """
    if not key:
        raise ValueError("a license key must not be empty")
    if not (expires_in > 0 and math.isfinite(expires_in)):
        raise ValueError(f"expires_in must be a finite number of seconds > 0, not {expires_in!r}")
    expires_at = math.ceil((time.time() if now is None else now) + expires_in)
    prefix = f"{LICENSE_VERSION}.{key_id(key)}.{expires_at}."
    signed: Action | None = None
    for original in reversed(action.chain()):  # the tail first: a license covers the next one's
        link = original.replace(next=signed, license=None)
        head = prefix + os.urandom(16).hex()
        signed = link.replace(license=f"{head}.{_mac(link, key, head)}")
    assert signed is not None
    return signed


class _Parsed:
    __slots__ = ("expires_at", "head", "key_id", "mac", "nonce")

    def __init__(self, action: Action) -> None:
        text = action.license
        if text is None:
            raise LicenseError(f"action {action.id} ({action.name}) carries no license")
        parts = text.split(".")
        if len(parts) != 5 or parts[0] != str(LICENSE_VERSION):
            raise LicenseError(
                f"action {action.id} ({action.name}): license is not in format "
                f"version {LICENSE_VERSION}"
            )
        version, self.key_id, expires, self.nonce, self.mac = parts
        if not (
            len(self.key_id) == 16 and len(self.nonce) == 32 and len(self.mac) == 64
            and expires.isascii() and expires.isdigit() and len(expires) <= 12
            and _HEX.issuperset(self.key_id + self.nonce + self.mac)
        ):
            raise LicenseError(f"action {action.id} ({action.name}): license is malformed")
        self.expires_at = int(expires)
        self.head = f"{version}.{self.key_id}.{expires}.{self.nonce}"


def verify(
    action: Action,
    keys: Sequence[str],
    *,
    nonces: NonceStore | None = None,
    admission: str | None = None,
    now: float | None = None,
) -> None:
    """Check the license of ``action`` and of every action it chains, against ``keys``.

    Any of ``keys`` verifies (rotation: list the new key first, keep the old
    ones while their licenses live). Without ``nonces`` this is a check of
    validity at ``now`` (default: the current time). With ``nonces`` it is
    the check at the door, once per admission: the nonce of every action in
    the chain is claimed for ``admission`` (so a chained action taken out
    and sent alone is a replay too); the same admission passes again, even
    after the license expired while the store still holds its record;
    another admission is a replay.

    Raises:
        LicenseError: unsigned, malformed, signed with an unknown key,
            tampered with anywhere along the chain, expired, valid for longer
            than the store's window, replayed, or the store could not record
            the nonce (refused: fail closed; the reason is logged).
    """
    by_id = {key_id(key): key for key in keys if key}
    links: list[_Parsed] = []
    link: Action | None = action
    while link is not None:
        here = _Parsed(link)
        key = by_id.get(here.key_id)
        if key is None:
            raise LicenseError(
                f"action {link.id} ({link.name}): license signed with an unknown key "
                f"(id {here.key_id})"
            )
        if not hmac.compare_digest(here.mac, _mac(link, key, here.head)):
            raise LicenseError(f"action {link.id} ({link.name}): license does not verify")
        links.append(here)
        link = link.next
    first = links[0]
    moment = time.time() if now is None else now
    expired = moment > first.expires_at
    if nonces is None:
        if expired:
            raise LicenseError(f"action {action.id} ({action.name}): license expired")
        return
    if admission is None:
        raise ValueError("checking a nonce needs the admission it is recorded for")
    try:
        if expired:
            if nonces.holds(first.nonce, admission):
                return
            raise LicenseError(f"action {action.id} ({action.name}): license expired")
        if first.expires_at - moment > nonces.window:
            raise LicenseError(
                f"action {action.id} ({action.name}): license valid for longer than "
                f"{nonces.window:g} s"
            )
        # Every nonce of the chain: a chained action taken out and sent alone is a replay too.
        for here in links:
            if not nonces.claim(here.nonce, admission, here.expires_at):
                raise LicenseError(
                    f"action {action.id} ({action.name}): license already used by another "
                    "submission (replay)"
                )
    except NonceStoreError as exc:
        _log.warning("nonce_not_recorded", action_id=action.id, name=action.name, error=str(exc))
        raise LicenseError(
            f"action {action.id} ({action.name}): refused, its nonce could not be recorded: {exc}"
        ) from exc
