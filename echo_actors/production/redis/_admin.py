# SPDX-License-Identifier: MIT
"""Inspecting a stream and handling its dead letters (any process)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import redis

from echo_actors.production.redis._stats import (
    _BEAT_DECODER,
    ConsumerStats,
    RedisStats,
    WorkerStats,
)
from echo_actors.production.redis._wire import (
    _CHUNK,
    StoredDeadLetter,
    _decode_dead,
    _encode_wire,
    _text,
)

__all__ = ["Administering"]


class Administering:
    """What an operator asks of :class:`RedisProduction` (any process): what waits where,
    the live workers, the dead letters and their requeue."""

    # Set by RedisProduction.__init__.
    _client: Any
    _log: Any
    _requeue: Any
    _workers: Any
    beats_key: str
    dead_key: str
    delayed_key: str
    group: str
    stream: str
    visibility_timeout: float
    workers_key: str

    if TYPE_CHECKING:

        def _migrate(self) -> None: ...

    def stats(self) -> RedisStats:
        """Stream length, pending entries per consumer, delayed actions and dead letters."""
        self._migrate()
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.zcard(self.delayed_key)
        pipe.xlen(self.dead_key)
        length, delayed, dead = pipe.execute()
        consumers: list[ConsumerStats] = []
        try:
            for row in self._client.xinfo_consumers(self.stream, self.group):
                consumers.append(ConsumerStats(
                    name=_text(row["name"]), pending=int(row["pending"]),
                    idle_ms=int(row["idle"]),
                ))
        except redis.ResponseError:  # no stream or no group yet
            pass
        lag: int | None = None
        read: int | None = None
        try:
            for row in self._client.xinfo_groups(self.stream):
                if _text(row["name"]) == self.group:
                    lag = None if row.get("lag") is None else int(row["lag"])
                    read = None if row.get("entries-read") is None else int(row["entries-read"])
        except redis.ResponseError:
            pass
        return RedisStats(
            stream=self.stream, group=self.group, length=int(length),
            pending=sum(c.pending for c in consumers), consumers=consumers,
            delayed=int(delayed), dead_letters=int(dead), lag=lag,
            entries_read=read, workers=self.workers(),
        )

    def workers(self) -> list[WorkerStats]:
        """The live workers, by their heartbeats; one silent for longer than
        ``visibility_timeout`` is forgotten (its entries go to others anyway)."""
        reply = self._workers(keys=[self.beats_key, self.workers_key],
                              args=[repr(self.visibility_timeout)])
        now = float(reply[0])
        out: list[WorkerStats] = []
        for index in range(1, len(reply) - 2, 3):
            name, beat, raw = _text(reply[index]), float(reply[index + 1]), reply[index + 2]
            try:
                described = _BEAT_DECODER.decode(raw)
            except msgspec.DecodeError:
                continue  # a description from another version: not shown
            out.append(WorkerStats(
                consumer=name, heartbeat_age=max(0.0, now - beat), sites=described.sites,
                in_flight=described.in_flight, fetched=described.fetched,
                acked=described.acked, pid=described.pid, host=described.host,
            ))
        return out

    def dead_letters(self, limit: int | None = None) -> list[StoredDeadLetter]:
        """The dead letters, oldest first (unreadable dead entries are skipped and logged)."""
        self._migrate()
        out: list[StoredDeadLetter] = []
        for raw_id, fields in self._client.xrange(self.dead_key, count=limit):
            entry_id = _text(raw_id)
            try:
                letter = _decode_dead(fields[b"d"])
            except (KeyError, msgspec.DecodeError) as exc:
                self._log.warning("dead_letter_unreadable", entry_id=entry_id, error=str(exc))
                continue
            out.append(msgspec.structs.replace(letter, entry_id=entry_id))
        return out

    def requeue(self, ids: Iterable[str] | None = None) -> list[StoredDeadLetter]:
        """Put dead letters back on the stream (all, or those with these action or entry ids).

        Attempts start again at 1. Dead letters that never decoded cannot be
        requeued and stay. Returns the letters requeued (by this call: when two
        requeue at once, each letter is requeued by one of them).
        """
        wanted = None if ids is None else set(ids)
        chosen = [
            letter for letter in self.dead_letters()
            if letter.action is not None and (
                wanted is None or letter.action.id in wanted or letter.entry_id in wanted
            )
        ]
        done: list[StoredDeadLetter] = []
        for start in range(0, len(chosen), _CHUNK):
            chunk = chosen[start : start + _CHUNK]
            args: list[Any] = []
            for letter in chunk:
                assert letter.action is not None
                args.extend((letter.entry_id, _encode_wire(letter.action, 1, letter.admission)))
            requeued = {_text(i) for i in self._requeue(keys=[self.dead_key, self.stream],
                                                        args=args)}
            done.extend(letter for letter in chunk if letter.entry_id in requeued)
        return done
