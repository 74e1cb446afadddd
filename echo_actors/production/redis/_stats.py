# SPDX-License-Identifier: MIT
"""What :meth:`RedisProduction.stats` reports: the stream, its consumers, the live workers."""

from __future__ import annotations

import msgspec

__all__ = ["ConsumerStats", "RedisStats", "WorkerStats"]


class ConsumerStats(msgspec.Struct, frozen=True):
    """One consumer of the group: its pending (unacknowledged) entries and idle time."""

    name: str
    pending: int
    idle_ms: int


class WorkerStats(msgspec.Struct, frozen=True):
    """One live worker as its heartbeat describes it.

    ``heartbeat_age`` is seconds since its last heartbeat (server clock);
    ``fetched`` and ``acked`` are its running totals, its share of the work.
    """

    consumer: str
    heartbeat_age: float
    sites: int
    in_flight: int
    fetched: int
    acked: int
    pid: int
    host: str


class RedisStats(msgspec.Struct, frozen=True):
    """What waits where: stream entries, pending per consumer, delayed, dead letters."""

    stream: str
    group: str
    length: int
    pending: int
    consumers: list[ConsumerStats]
    delayed: int
    dead_letters: int
    lag: int | None = None
    """Entries the group has not read yet (None when the server does not say: before 7.0)."""
    entries_read: int | None = None
    """Entries the group has read so far (None before Redis 7.0): with ``pending``, a rate."""
    workers: list[WorkerStats] = []


class _Beat(msgspec.Struct, frozen=True):
    sites: int
    in_flight: int
    fetched: int
    acked: int
    pid: int
    host: str


_BEAT_DECODER = msgspec.msgpack.Decoder(_Beat)
