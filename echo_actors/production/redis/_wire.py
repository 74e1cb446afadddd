# SPDX-License-Identifier: MIT
"""The bytes on the stream: the wire format of an action, stored dead letters, reply shapes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from echo_actors.action import Action
from echo_actors.errors import (
    DecodeError,
    EncodeError,
)

__all__ = ["FORMAT_VERSION", "StoredDeadLetter"]


FORMAT_VERSION = 2
"""The version of the wire format this module writes (see the module's docstring)."""


_RAW_KEPT = 1024
"""Bytes of an undecodable entry kept in its dead letter (the rest is only counted)."""


_CHUNK = 1000
"""Most ids or entries sent in one command (XACK, XADD pipelines, scripts)."""


class StoredDeadLetter(msgspec.Struct, frozen=True):
    """A dead letter as kept in the dead stream.

    ``action`` is None when the entry never decoded (error kind ``"decode"``); then
    ``raw`` holds its first bytes and ``size`` its length. ``entry_id`` is the
    dead stream's entry, ``source`` the work stream's entry it came from,
    ``admission`` the entry it was first read from (kept when requeued).
    """

    error_kind: str
    message: str
    attempts: int
    failed_at: float
    action: Action | None = None
    raw: bytes | None = None
    size: int = 0
    source: str = ""
    consumer: str = ""
    entry_id: str = ""
    admission: str = ""


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    """The wire format: version, attempt, the action, admission, whether its submitter
    waits for its result (version 2); newer versions append."""

    v: int
    n: Annotated[int, msgspec.Meta(ge=1)]
    a: msgspec.Raw
    admission: Annotated[str, msgspec.Meta(max_length=64)] = ""
    r: bool = False


_WIRE_ENCODER = msgspec.msgpack.Encoder()


_ENVELOPE_DECODER = msgspec.msgpack.Decoder(_Envelope)


_MAP_MARKERS = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))


def _encode_wire(action: Action, attempt: int, admission: str, reply: bool = False) -> bytes:
    try:
        return _WIRE_ENCODER.encode((FORMAT_VERSION, attempt, action, admission, reply))
    except RecursionError:
        raise EncodeError(f"action {action.id} ({action.name}) is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"action {action.id} ({action.name}) cannot be encoded: {exc}") from exc


def _decode_wire(
    payload: bytes, max_bytes: int, max_chain: int
) -> tuple[Action, int, str, bool]:
    """The action, the attempt, the admission and the reply flag an entry's payload holds.

    Raises:
        DecodeError: malformed, too big, too deep, or an unknown field from a
            writer that is not newer than this version.
    """
    if len(payload) > max_bytes:
        raise DecodeError(f"encoded action is {len(payload)} bytes, over the limit of {max_bytes}")
    if payload and payload[0] in _MAP_MARKERS:  # a bare Action, written before the envelope
        action = Action.decode(payload, "msgpack", max_bytes=max_bytes, max_chain=max_chain)
        return action, 1, "", False
    try:
        envelope = _ENVELOPE_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not a valid entry: {exc}") from exc
    action = Action.decode(
        envelope.a, "msgpack", max_bytes=max_bytes, max_chain=max_chain,
        strict=envelope.v <= FORMAT_VERSION,
    )
    return action, envelope.n, envelope.admission, envelope.r


_DEAD_ENCODER = msgspec.msgpack.Encoder()


_DEAD_DECODER = msgspec.msgpack.Decoder(StoredDeadLetter)


def _decode_dead(data: bytes) -> StoredDeadLetter:
    """A stored dead letter, in this version's layout or 0.1's (``kind``, not ``error_kind``)."""
    try:
        return _DEAD_DECODER.decode(data)
    except msgspec.ValidationError:
        fields = msgspec.msgpack.decode(data)
        if not (isinstance(fields, dict) and "kind" in fields and "error_kind" not in fields):
            raise
    fields["error_kind"] = fields.pop("kind")
    return msgspec.convert(fields, StoredDeadLetter)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """Entries of one stream from an XREADGROUP reply (RESP2 list or RESP3 map), as
    ``(id, fields)`` with ``fields`` a dict: redis-py's parsed reply, or the bare RESP2
    one (each entry's fields a flat list, as a connection of our own reads it)."""
    if not response:
        return []
    if isinstance(response, dict):
        out: list[tuple[Any, Any]] = []
        for value in response.values():
            wrapped = bool(value) and isinstance(value[0], list)  # redis-py's RESP3 shape
            out.extend(tuple(entry) for entry in (value[0] if wrapped else value))
        return out
    return [
        (entry[0], _pairs(fields) if type(fields := entry[1]) is list else fields)
        for _, entries in response for entry in entries
    ]


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """``[k1, v1, k2, v2, ...]`` as a dict (an entry's fields in a bare RESP2 reply)."""
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def _chain_ids(action: Action) -> list[str]:
    """The ids of ``action`` and of every action chained after it, in order."""
    ids = []
    link: Action | None = action
    while link is not None:
        ids.append(link.id)
        link = link.next
    return ids


def _hash_tag(stream: str) -> str:
    """The prefix of a production's own keys: ``{stream}``, which hashes like ``stream``
    itself, so that on a Redis Cluster they all share the stream's slot."""
    return stream if "{" in stream else "{" + stream + "}"
