# SPDX-License-Identifier: MIT
"""RedisProduction: the consumer side (reading, acknowledging, claiming, heartbeats) and
the class that puts the submitting and administering sides together."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import redis

from echo_actors._logging import get_logger
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.admission import admit, check_limits
from echo_actors.dead_letter import DeadLetter
from echo_actors.errors import (
    DecodeError,
    EchoError,
    EncodeError,
)
from echo_actors.fate import Fate
from echo_actors.license import verify
from echo_actors.nonces import NonceStore
from echo_actors.production import Production
from echo_actors.production.redis import _scripts
from echo_actors.production.redis._admin import Administering
from echo_actors.production.redis._nonces import RedisNonceStore
from echo_actors.production.redis._results import _RESULT_ENCODER, _error_outcome, _ok_outcome
from echo_actors.production.redis._stats import _Beat
from echo_actors.production.redis._submit import Submitting, _Direct
from echo_actors.production.redis._wire import (
    _CHUNK,
    _DEAD_ENCODER,
    _RAW_KEPT,
    StoredDeadLetter,
    _chain_ids,
    _decode_wire,
    _encode_wire,
    _entries,
    _hash_tag,
    _text,
)

__all__ = ["RedisProduction"]


_log = get_logger("echo_actors.redis")


_HORIZON = 0.05
"""Seconds of work at its recent pace a worker reads ahead beyond one action per Site."""


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisProduction(Submitting, Administering, Production):
    """A Production on a Redis stream and consumer group; durable and shared.

    ``assign(action)`` adds the action to the stream (or, when it has a delay,
    to the sorted set): that is how any process submits work. A Sequence
    bound to it becomes a consumer: a background fetcher reads up to
    ``batch`` entries per XREADGROUP and keeps at most ``read_ahead``
    actions in this process (queued, in Site mailboxes or running) that are
    not acknowledged yet. Given ``sites`` (the worker command passes its
    own) and unless ``fair=False``, it keeps fewer: one per Site plus what it
    finishes in 50 ms at its recent pace, so that workers share a backlog of
    slow actions evenly.
    Acknowledgements are batched by a writer thread.
    Delays and retry backoffs of actions read from Redis wait in the sorted
    set (so they survive a crash); dead letters go to the dead stream.

    ``url_or_client``: a ``redis://`` URL or a ``redis.Redis`` client (kept
    open on :meth:`close`; a URL's client is closed). ``fate`` supplies
    ``max_action_bytes`` (larger entries are refused) and ``max_attempts``
    (deliveries to workers that died count as attempts); default ``Fate()``
    (the environment is read only by :meth:`Fate.load`, where you ask).
    ``visibility_timeout``: seconds an entry may stay unacknowledged on a
    silent consumer before others claim it. ``nonces``:
    where license nonces are claimed when license keys are set (default: a
    :class:`RedisNonceStore` on the same server).

    Delivery is at-least-once; ``Action.id`` is the idempotency key. Under
    the gevent runtime, monkey-patch the process (the worker command does),
    so that the fetcher and writer threads are greenlets.
    """

    acknowledges: ClassVar[bool] = True
    stores_dead_letters: ClassVar[bool] = True
    verifies_licenses: ClassVar[bool] = True  # license, nonce and expiry, at the first read

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        stream: str = "echo",
        group: str = "echo",
        consumer: str | None = None,
        *,
        name: str | None = None,
        fate: Fate | None = None,
        batch: int = 128,
        read_ahead: int = 256,
        block: float = 0.1,
        visibility_timeout: float = 30.0,
        delay_poll: float = 0.05,
        delete_acked: bool = True,
        dead_maxlen: int | None = 100_000,
        nonces: NonceStore | None = None,
        sites: int = 0,
        fair: bool = True,
        cluster: bool = False,
    ) -> None:
        if not stream or not group:
            raise ValueError("stream and group must be non-empty")
        if batch < 1 or read_ahead < 1:
            raise ValueError("batch and read_ahead must be >= 1")
        if block <= 0 or visibility_timeout <= 0 or delay_poll <= 0:
            raise ValueError("block, visibility_timeout and delay_poll must be > 0 seconds")
        super().__init__(name if name is not None else stream)
        self._owns_client = isinstance(url_or_client, str)
        # Any: redis-py's own types mix sync and async replies.
        if isinstance(url_or_client, str):
            self._client: Any = (
                redis.RedisCluster.from_url(url_or_client, protocol=2) if cluster
                else redis.Redis.from_url(url_or_client, protocol=2)
            )
        else:
            self._client = url_or_client
        self.cluster = isinstance(self._client, redis.RedisCluster)
        """On a Redis Cluster (every key shares the stream's hash slot): scripts run
        outside pipelines, which a cluster pipeline refuses."""
        self.stream = stream
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.tag = _hash_tag(stream)
        self.delayed_key = f"{self.tag}:delayed"
        self.dead_key = f"{self.tag}:dead"
        self._migrated = False
        self.beats_key = f"{self.tag}:beats"
        self.workers_key = f"{self.tag}:workers"
        self.sites = sites
        """The Sites of the Sequence this worker feeds (0: unknown). Shown by :meth:`stats`;
        when known, read-ahead is bounded by them (see :meth:`_adapt`)."""
        self.fair = fair and sites > 0
        """Whether read-ahead adapts to the Sites (see :meth:`_adapt`); else it is fixed."""
        self._limit = min(read_ahead, sites) if self.fair else read_ahead
        self._finished = 0  # entries this worker ended (acknowledged, parked, given back)
        self._pace = 0.0  # entries ended per second, smoothed
        self._paced_at = time.monotonic()
        self._paced_count = 0
        self.fate = fate if fate is not None else Fate()
        self.max_action_bytes = self.fate.max_action_bytes
        self.batch = batch
        self.read_ahead = read_ahead
        self.block = block
        self.visibility_timeout = visibility_timeout
        self.delay_poll = delay_poll
        self.delete_acked = delete_acked
        self.dead_maxlen = dead_maxlen
        self.nonces: NonceStore = nonces if nonces is not None else RedisNonceStore(self._client)
        self.counts: Counter[str] = Counter()
        """Running totals: fetched, claimed, acked, dead_lettered, deferred, released, moved,
        parked, heartbeats and claim_scans (rounds of those two)."""
        self._counts_lock = threading.Lock()
        client = self._client
        self._move = client.register_script(_scripts.MOVE)
        self._park = client.register_script(_scripts.PARK)
        self._release = client.register_script(_scripts.RELEASE)
        self._touch = client.register_script(_scripts.TOUCH)
        self._requeue = client.register_script(_scripts.REQUEUE)
        self._leave = client.register_script(_scripts.LEAVE)
        self._complete = client.register_script(_scripts.COMPLETE)
        self._beat = client.register_script(_scripts.BEAT)
        self._workers = client.register_script(_scripts.WORKERS)
        self.failure: BaseException | None = None
        """Why a background thread died (then the worker must exit: it would idle), or None."""
        self.failed = threading.Event()
        """Set when :attr:`failure` is."""
        self._log = _log.bind(stream=stream, consumer=self.consumer)
        # Consumer state: _gate orders deliveries against bind/pause/hand_back.
        self._gate = threading.Lock()
        self._consuming = False
        self._held: set[str] = set()
        self._admissions: dict[str, str] = {}  # receipt -> admission, under _held_lock
        self._replies: set[str] = set()  # receipts whose submitter waits for the result
        self._held_lock = threading.Lock()
        self._room = threading.Event()
        self._active = threading.Event()
        self._stop = threading.Event()
        self._fetcher: threading.Thread | None = None
        self._group_ready = False
        self._claim_cursor: Any = "0-0"
        # Writer state: acknowledgements and dead letters waiting to be written.
        self._out_lock = threading.Lock()
        self._out_ids: list[str] = []
        self._out_letters: list[StoredDeadLetter] = []
        self._out_done: list[tuple[Any, ...]] = []  # completions for the complete.lua script
        self._out_results: list[tuple[str, bytes]] = []  # error outcomes of buried actions
        self._out_ready = threading.Event()
        self._written = threading.Condition(self._out_lock)
        self._writing = False
        self._writer: threading.Thread | None = None
        self._loaded = False  # whether the COMPLETE script is known to be loaded (see _write)
        self._direct = _Direct(self._client)
        self._out_direct = _Direct(self._client)  # the writer's (see _write)
        # The fetcher's reads on a connection of its own too (RESP2: _entries reads the
        # bare reply), for the same saving per read as ``_direct`` gives ``assign``.
        pool = getattr(self._client, "connection_pool", None)  # None: a cluster client
        resp2 = pool is not None and pool.connection_kwargs.get("protocol") in (None, 2, "2")
        self._reader = _Direct(self._client) if resp2 else None
        self._closed = False

    # Consuming (the Sequence bound to this production); submitting is in Submitting,
    # inspection and dead letters in Administering.

    def bind(
        self, wake: Callable[[], None] | None, accept: Callable[[int], None] | None = None
    ) -> None:
        """Attach a Sequence and start reading the stream (None detaches and stops reading).

        Raises:
            RuntimeError: another Sequence is attached, or the production is closed.
            redis.RedisError: the group could not be joined (nothing is attached).
        """
        if wake is not None:
            if self._closed:
                raise RuntimeError(f"production {self.name!r} is closed")
            self._ensure_group(join=True)
        with self._gate:
            super().bind(wake, accept)
            if wake is None:
                self._consuming = False
                self._active.clear()
                return
            self._consuming = True
        self._start_threads()
        self._active.set()

    def pause(self) -> None:
        """Stop reading new entries (what was read stays; :meth:`bind` resumes)."""
        with self._gate:
            self._consuming = False
            self._active.clear()

    def hand_back(self) -> list[Ticket]:
        """Stop reading, then remove and return every waiting ticket (shutdown without drain)."""
        self.pause()
        return super().hand_back()

    def ack(self, tickets: list[Ticket]) -> None:
        """Queue the entries of completed tickets for XACK (batched by the writer thread)."""
        self._settle(tickets, [])

    def complete(self, ticket: Ticket, result: object, following: Action | None) -> bool:
        """End a completed attempt in Redis in one atomic step (the ``complete.lua`` script).

        The acknowledgement, the result (when its submitter waits for it), the
        ``next`` action and the completion mark (with ``Fate.dedup_window``)
        are queued for the writer thread, which writes them with one script:
        a worker killed before that leaves the entry pending, so the action
        runs again and its ``next`` is added then. Returns False (the Sequence
        acknowledges as usual) when there is nothing to write but the
        acknowledgement, or when ``next`` cannot be encoded (then it runs in
        this process), and for an action submitted in this process (with a future):
        its chain runs here, so that ``future.chain()`` sees its end.
        """
        receipt = ticket.receipt
        reply = receipt is not None and receipt in self._replies
        dedup = receipt is not None and self.fate.dedup_window > 0
        if ((following is None and not reply and not dedup) or self._closed
                or ticket.future is not None):
            return False
        action = ticket.action
        try:
            delay, child = "", b""
            if following is not None:
                child = self.encode(following, reply=reply)
                delay = repr(max(0.0, following.delay))
            outcome = _ok_outcome(action, result, self.fate.max_result_bytes) if reply else b""
        except (EchoError, ValueError, TypeError) as exc:
            self._log.warning("complete_failed", action_id=action.id, error=str(exc))
            return False
        done = (receipt or "", self._result_key(action.id) if reply else "", outcome, delay,
                child, f"{self.tag}:done:{action.id}" if dedup else "")
        with self._out_lock:
            self._out_done.append(done)
        self._forget([receipt] if receipt is not None else [])
        if not self._out_ready.is_set():  # set: the writer takes these on waking
            self._out_ready.set()
        return True

    def _result_key(self, action_id: str) -> str:
        return f"{self.tag}:result:{action_id}"

    def bury(self, ticket: Ticket, letter: DeadLetter) -> None:
        """``ticket`` became dead letter ``letter``: to the dead stream, and XACK its entry."""
        self._settle([ticket], [letter])

    def _settle(self, tickets: list[Ticket], letters: list[DeadLetter]) -> None:
        receipts = [t.receipt for t in tickets if t.receipt is not None]
        stored = [self._stored(letter, tickets) for letter in letters]
        if not receipts and not stored:
            return
        results: list[tuple[str, bytes]] = []
        for letter in stored:
            if letter.source in self._replies and letter.action is not None:
                results.extend(self._failed_outcomes(letter.action, letter.error_kind,
                                                     letter.message, letter.attempts))
        self._forget(receipts)
        with self._out_lock:
            self._out_ids.extend(receipts)
            self._out_letters.extend(stored)
            self._out_results.extend(results)
        if not self._out_ready.is_set():  # set: the writer takes these on waking
            self._out_ready.set()

    def _failed_outcomes(
        self, action: Action, kind: str, message: str, attempts: int
    ) -> list[tuple[str, bytes]]:
        """The error outcome of a failed action, stored for it and every link after it
        (which will not run), so that waiting on the chain's end sees the failure."""
        outcome = _error_outcome(kind, message, attempts)
        return [(self._result_key(i), outcome) for i in _chain_ids(action)]

    def _stored(self, letter: DeadLetter, tickets: list[Ticket]) -> StoredDeadLetter:
        source = next(
            (t.receipt for t in tickets if t.action is letter.action and t.receipt), ""
        )
        return StoredDeadLetter(
            error_kind=letter.error_kind, message=letter.message, attempts=letter.attempts,
            failed_at=letter.failed_at, action=letter.action, source=source,
            consumer=self.consumer, admission=self._admission_of(source),
        )

    def _admission_of(self, receipt: str | None) -> str:
        """The admission a held entry belongs to ('' for an action not read from the stream)."""
        if not receipt:
            return ""
        with self._held_lock:
            return self._admissions.get(receipt, "")

    def _wire(self, ticket: Ticket) -> bytes:
        """``ticket``'s action as workers write it back: attempt, admission and reply kept."""
        action = ticket.action
        receipt = ticket.receipt
        return _encode_wire(action, action.attempt, self._admission_of(receipt),
                            receipt is not None and receipt in self._replies)

    def defer(self, ticket: Ticket, delay: float) -> bool:
        """Park ``ticket``'s action in the sorted set for ``delay`` seconds and ack its entry.

        Tickets with a future (submitted in this process) wait on the
        Sequence's own timers instead: their result belongs to this process.
        """
        if ticket.future is not None or self._closed:
            return False
        receipt = ticket.receipt or ""
        try:
            self._park(keys=[self.delayed_key, self.stream], args=[
                self.group, "1" if self.delete_acked else "0",
                repr(max(0.0, delay)), self._wire(ticket), receipt,
            ])
        except (redis.RedisError, EncodeError) as exc:
            self._log.warning("defer_failed", action_id=ticket.action.id, error=str(exc))
            return False
        self._count("deferred", 1)
        self._forget([receipt] if receipt else [])
        return True

    def release(self, tickets: list[Ticket]) -> None:
        """Give tickets taken but not started back to the stream (shutdown without drain).

        Their entries are acknowledged and added anew, so other workers take
        them at once. Tickets submitted in this process (with a future) are
        handed back to the caller instead.
        """
        give = [t for t in tickets if t.receipt is not None or t.future is None]
        if not give:
            return
        args: list[Any] = []
        for ticket in give:
            try:
                args.extend((ticket.receipt or "", self._wire(ticket), "1"))
            except EncodeError as exc:  # built in this process; it cannot go to Redis
                self._log.warning("release_failed", action_id=ticket.action.id, error=str(exc))
        try:
            self._release_args(args)
        except redis.RedisError as exc:  # they stay pending: claimed after the timeout
            self._log.warning("release_failed", count=len(give), error=str(exc))
        self._count("released", len(give))
        self._forget([t.receipt for t in give if t.receipt is not None])

    def _release_args(self, args: list[Any]) -> None:
        for start in range(0, len(args), 3 * _CHUNK):
            self._release(keys=[self.stream], args=[
                self.group, self.consumer, "1" if self.delete_acked else "0",
                *args[start : start + 3 * _CHUNK],
            ])

    def _forget(self, receipts: list[str]) -> None:
        if not receipts:
            return
        with self._held_lock:
            self._held.difference_update(receipts)
            self._replies.difference_update(receipts)
            for receipt in receipts:
                self._admissions.pop(receipt, None)
            self._finished += len(receipts)
            room = self._limit - len(self._held)
        if room >= self._low_water() and not self._room.is_set():
            self._room.set()

    def _count(self, name: str, n: int) -> None:
        with self._counts_lock:
            self.counts[name] += n

    def _low_water(self) -> int:
        return max(1, min(self.batch, self._limit // 4))

    def _adapt(self, now: float) -> None:
        """Bound read-ahead by what this worker can start soon (when its Sites are known).

        The bound is its Sites plus what it finishes in :data:`_HORIZON` seconds
        at its recent pace, at most ``read_ahead``: a worker of slow actions
        holds about one per Site, so idle workers get the rest of a backlog;
        one of fast actions reads in big batches.
        """
        if not self.fair:
            return
        elapsed = now - self._paced_at
        if elapsed < _HORIZON:
            return
        finished = self._finished
        pace = (finished - self._paced_count) / elapsed
        self._paced_count, self._paced_at = finished, now
        self._pace = pace if pace > self._pace else 0.7 * self._pace + 0.3 * pace
        ahead = self.sites + int(self._pace * _HORIZON)
        self._limit = min(self.read_ahead, ahead)

    def in_flight(self) -> int:
        """Entries read by this process and not acknowledged yet."""
        return len(self._held)

    # Background threads

    def _start_threads(self) -> None:
        if self._fetcher is None:
            self._fetcher = threading.Thread(
                target=self._fetch_loop, name=f"echo-redis-fetch-{self.stream}", daemon=True
            )
            self._fetcher.start()
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"echo-redis-write-{self.stream}", daemon=True
            )
            self._writer.start()

    def _migrate(self) -> None:
        """Rename the keys of 0.2's layout (``stream:delayed``, ``stream:dead``) to this
        one's (``{stream}:...``, one hash slot), once per production; racing workers are
        fine (RENAME by one, nothing left for the others)."""
        if self._migrated:
            return
        self._migrated = True
        for old, new in ((f"{self.stream}:delayed", self.delayed_key),
                         (f"{self.stream}:dead", self.dead_key)):
            if old == new:
                continue
            try:
                if self._client.exists(old):
                    if self._client.exists(new):
                        self._log.warning("legacy_key_left", key=old, new_key=new)
                    else:
                        self._client.rename(old, new)
                        self._log.info("legacy_key_renamed", key=old, new_key=new)
            except (redis.ResponseError, redis.exceptions.RedisClusterException) as exc:
                self._log.warning("legacy_key_left", key=old, new_key=new, error=str(exc))

    def _ensure_group(self, join: bool) -> None:
        self._migrate()
        try:
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if join:  # now: a blocked read that returns nothing does not create the consumer
            self._client.xgroup_createconsumer(self.stream, self.group, self.consumer)
        self._group_ready = True

    def _fetch_loop(self) -> None:
        """Read, claim, move due actions and keep claims fresh, until closed.

        Redis errors (a restart, a network cut) are retried with a backoff and
        a warning; anything else ends the thread and sets :attr:`failure`.
        """
        try:
            self._fetch_rounds()
        except Exception as exc:  # noqa: BLE001 - the worker must exit, not idle for ever
            self._die("fetcher", exc)

    def _fetch_rounds(self) -> None:
        backoff = 0.0
        next_move = next_claim = 0.0
        next_touch = 0.0  # at once: the first heartbeat makes the worker visible
        claim_every = max(0.05, min(5.0, self.visibility_timeout / 4))
        while not self._stop.is_set():
            if not self._active.is_set():
                self._active.wait(self.block)
                continue
            try:
                now = time.monotonic()
                wait = self.block
                if now >= next_move:
                    due_in = self._move_due()
                    next_move = now + min(self.delay_poll, due_in)
                wait = max(0.0, min(wait, next_move - now))
                if now >= next_touch:
                    self._touch_held()
                    self._heartbeat()
                    next_touch = now + self.visibility_timeout / 3
                self._adapt(now)
                room = self._limit - len(self._held)
                if room < self._low_water():
                    self._room.clear()
                    if self._limit - len(self._held) < self._low_water():
                        self._room.wait(wait or 0.001)
                        continue
                    room = self._limit - len(self._held)
                if now >= next_claim:
                    want = min(room, self.batch)
                    claimed = self._claim(want)
                    next_claim = now if claimed >= want else now + claim_every
                    if claimed:
                        continue
                self._read(min(room, self.batch), wait)
                backoff = 0.0
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._log.warning("group_missing", error=str(exc))
                    self._ensure_group(join=True)
                    continue
                backoff = self._failed(exc, backoff)
            except redis.RedisError as exc:
                backoff = self._failed(exc, backoff)
                next_touch = 0.0  # back: say so at once

    def _failed(self, exc: Exception, backoff: float) -> float:
        backoff = min(5.0, backoff * 2 or 0.05)
        self._log.warning("redis_error", error=str(exc), retry_in=backoff)
        self._stop.wait(backoff)
        return backoff

    def _move_due(self) -> float:
        """Move due actions to the stream; seconds until the next one is due (inf: none)."""
        moved, next_due, now = self._move(
            keys=[self.delayed_key, self.stream], args=[_CHUNK]
        )
        if moved:
            self._count("moved", int(moved))
            return 0.0
        if not next_due:
            return float("inf")
        return max(0.0, float(next_due) - float(now))

    def _touch_held(self) -> None:
        with self._held_lock:
            held = list(self._held)
        self._count("heartbeats", 1)
        for start in range(0, len(held), _CHUNK):
            self._touch(keys=[self.stream],
                        args=[self.group, self.consumer, *held[start : start + _CHUNK]])

    def _claim(self, count: int) -> int:
        """Claim entries idle past the visibility timeout; returns how many."""
        self._count("claim_scans", 1)
        reply = self._client.xautoclaim(
            self.stream, self.group, self.consumer,
            min_idle_time=int(self.visibility_timeout * 1000),
            start_id=self._claim_cursor, count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = "0-0" if _text(cursor) == "0-0" else cursor
        entries = [(i, f) for i, f in entries if f is not None]
        if not entries:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        deliveries = [rows[0]["times_delivered"] if rows else 2 for rows in pipe.execute()]
        with self._held_lock:
            held = set(self._held)
        fresh = [
            (entry, count) for entry, count in zip(entries, deliveries, strict=True)
            if _text(entry[0]) not in held
        ]
        self._count("claimed", len(fresh))
        self._log.info("entries_claimed", count=len(fresh))
        self._deliver([entry for entry, _ in fresh], [n for _, n in fresh])
        return len(entries)

    def _read(self, count: int, wait: float) -> None:
        block = int(wait * 1000)
        if self._reader is not None:
            blocking = ("BLOCK", block) if block > 0 else ()
            reply = self._reader("XREADGROUP", "GROUP", self.group, self.consumer,
                                 "COUNT", count, *blocking, "STREAMS", self.stream, ">")
        else:
            reply = self._client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count,
                block=block if block > 0 else None,
            )
        entries = _entries(reply)
        if entries:
            self._deliver(entries, None)

    def _deliver(self, entries: list[tuple[Any, Any]], deliveries: list[int] | None) -> None:
        """Decode and admit entries and queue them; park delayed ones, dead-letter bad ones.

        The attempt comes from the workers' bookkeeping (the envelope's attempt
        plus the deliveries Redis counted), never from the submitted action.
        """
        tickets: list[Ticket] = []
        admissions: list[str] = []
        replies: list[bool] = []
        results: list[tuple[str, bytes]] = []
        parked: list[Any] = []
        dead: list[StoredDeadLetter] = []
        dead_ids: list[str] = []
        max_attempts = self.fate.max_attempts
        limit = self.max_action_bytes
        for index, (raw_id, fields) in enumerate(entries):
            entry_id = _text(raw_id)
            payload = fields.get(b"a")
            try:
                if payload is None:
                    raise DecodeError("stream entry has no 'a' field")
                action, attempt, admission, reply = _decode_wire(
                    payload, limit, self.fate.max_chain
                )
            except DecodeError as exc:
                dead.append(self._undecodable(entry_id, fields, payload, str(exc), deliveries,
                                              index))
                dead_ids.append(entry_id)
                continue
            if not admission:  # first read of a submitted action: this entry admits it
                admission = entry_id
                action = admit(action, fresh=True)  # decoded here: no one else holds it
            if deliveries is not None:
                attempt += deliveries[index] - 1
                if attempt > max_attempts:
                    message = (f"delivered {deliveries[index]} times without an "
                               "acknowledgement (the workers holding it stopped)")
                    if reply:
                        results.extend(self._failed_outcomes(action, "crash", message,
                                                             attempt - 1))
                    dead.append(StoredDeadLetter(
                        error_kind="crash", attempts=attempt - 1, failed_at=time.time(),
                        message=message, action=action, source=entry_id, consumer=self.consumer,
                        admission=admission,
                    ))
                    dead_ids.append(entry_id)
                    continue
            if action.attempt != attempt:
                action = action.replace(attempt=attempt)
            refusal = self._refusal(action, admission)
            if refusal is not None:
                if reply:
                    results.extend(self._failed_outcomes(action, refusal.kind, str(refusal),
                                                         attempt))
                dead.append(StoredDeadLetter(
                    error_kind=refusal.kind, message=str(refusal), attempts=attempt,
                    failed_at=time.time(), action=action, source=entry_id,
                    consumer=self.consumer, admission=admission,
                ))
                dead_ids.append(entry_id)
                continue
            if action.delay > 0 and b"w" not in fields:
                parked.extend((repr(action.delay),
                               _encode_wire(action, attempt, admission, reply), entry_id))
                continue
            tickets.append(Ticket(action, receipt=entry_id, admission=(admission, time.time())))
            admissions.append(admission)
            replies.append(reply)
        if tickets and self.fate.dedup_window > 0:
            tickets, admissions, replies = self._skip_done(tickets, admissions, replies)
        if dead or results:
            self._write(dead_ids, dead, results=results)
            self._log.warning("entries_dead_lettered", count=len(dead),
                              kinds=sorted({letter.error_kind for letter in dead}))
        if parked:
            self._park(keys=[self.delayed_key, self.stream],
                       args=[self.group, "1" if self.delete_acked else "0", *parked])
            self._count("parked", len(parked) // 3)
        if not tickets:
            return
        with self._gate:
            if self._consuming:
                with self._held_lock:
                    self._held.update(t.receipt for t in tickets)
                    self._admissions.update(
                        zip((t.receipt for t in tickets), admissions, strict=True)
                    )
                    self._replies.update(
                        t.receipt for t, r in zip(tickets, replies, strict=True) if r
                    )
                self._count("fetched", len(tickets))
                if self._accept is not None:
                    self._accept(len(tickets))
                self.put_many(tickets)
                return
        # Stopped reading meanwhile: give them back at once.
        args: list[Any] = []
        for ticket, admission, reply in zip(tickets, admissions, replies, strict=True):
            args.extend((ticket.receipt, _encode_wire(ticket.action, ticket.action.attempt,
                                                      admission, reply), "1"))
        self._release_args(args)

    def _skip_done(
        self, tickets: list[Ticket], admissions: list[str], replies: list[bool]
    ) -> tuple[list[Ticket], list[str], list[bool]]:
        """Acknowledge, without running them, the actions whose id completed within
        ``Fate.dedup_window`` (a redelivered copy); the others go on."""
        pipe = self._client.pipeline(transaction=False)
        for ticket in tickets:
            pipe.exists(f"{self.tag}:done:{ticket.action.id}")
        done = pipe.execute()
        skipped = [t.receipt for t, d in zip(tickets, done, strict=True) if d]
        if not skipped:
            return tickets, admissions, replies
        self._write(skipped, [])
        self._count("deduplicated", len(skipped))
        kept = [i for i, d in enumerate(done) if not d]
        return ([tickets[i] for i in kept], [admissions[i] for i in kept],
                [replies[i] for i in kept])

    def _refusal(self, action: Action, admission: str) -> EchoError | None:
        """Why the door refuses ``action`` (a delay too long, its license), or None."""
        try:
            check_limits(action, self.fate)
            keys = self.fate.license_keys
            if keys:
                verify(action, keys, nonces=self.nonces, admission=admission)
        except EchoError as exc:
            return exc
        return None

    def _undecodable(
        self, entry_id: str, fields: Any, payload: Any, message: str,
        deliveries: list[int] | None, index: int,
    ) -> StoredDeadLetter:
        raw = payload if isinstance(payload, bytes) else _DEAD_ENCODER.encode(
            {_text(k): v for k, v in fields.items()}
        )
        return StoredDeadLetter(
            error_kind=DecodeError.kind, message=message,
            attempts=deliveries[index] if deliveries is not None else 1,
            failed_at=time.time(), raw=raw[:_RAW_KEPT], size=len(raw), source=entry_id,
            consumer=self.consumer,
        )

    def _write_loop(self) -> None:
        """Write queued acknowledgements, completions and dead letters, many per round trip."""
        try:
            self._write_rounds()
        except Exception as exc:  # noqa: BLE001 - the worker must exit, not idle unacked
            self._die("writer", exc)

    def _take_out(self) -> tuple[list[str], list[StoredDeadLetter], list[Any], list[Any]]:
        """What waits to be written, taken (under ``_out_lock``)."""
        out = (self._out_ids, self._out_letters, self._out_done, self._out_results)
        self._out_ids, self._out_letters, self._out_done, self._out_results = [], [], [], []
        return out

    def _pending_out(self) -> bool:
        return bool(self._out_ids or self._out_letters or self._out_done or self._out_results)

    def _write_rounds(self) -> None:
        backoff = 0.0
        while True:
            self._out_ready.wait()
            self._out_ready.clear()
            with self._out_lock:
                ids, letters, done, results = self._take_out()
                self._writing = True
            try:
                if ids or letters or done or results:
                    self._write(ids, letters, done, results)
                backoff = 0.0
            except redis.RedisError as exc:
                backoff = min(2.0, backoff * 2 or 0.05)
                self._log.warning("ack_failed", count=len(ids) + len(done), error=str(exc),
                                  retry_in=backoff)
                with self._out_lock:  # try again on the next round
                    self._out_ids[:0] = ids
                    self._out_letters[:0] = letters
                    self._out_done[:0] = done
                    self._out_results[:0] = results
                    self._writing = False
                    self._written.notify_all()
                if self._stop.wait(backoff):
                    return  # closing: close() tries once more; else they are redelivered
                self._out_ready.set()
                continue
            with self._out_lock:
                self._writing = False
                self._written.notify_all()
            if self._stop.is_set():
                with self._out_lock:
                    if not self._pending_out():
                        return
                self._out_ready.set()

    def _write(
        self, ids: list[str], letters: list[StoredDeadLetter],
        done: list[Any] | tuple[()] = (), results: list[tuple[str, bytes]] | tuple[()] = (),
    ) -> None:
        """In one MULTI: XADD dead letters and store their error outcomes, XACK (and XDEL)
        ``ids`` and run the ``complete.lua`` script for ``done`` completions.

        One round trip, on a connection of the writer's own when it is free (see
        :meth:`_Direct.transaction`), else through a pipeline. The script goes into
        the MULTI as a bare EVALSHA, loaded once beforehand and again after any
        error (a restarted Redis has lost it), because redis-py would check a
        pipeline's scripts with a SCRIPT EXISTS round trip before every execute.
        """
        commands: list[tuple[Any, ...]] = []
        ttl = str(max(1, int(self.fate.result_ttl * 1000)))
        trim = () if self.dead_maxlen is None else ("MAXLEN", "~", self.dead_maxlen)
        for letter in letters:
            action = letter.action
            commands.append((
                "XADD", self.dead_key, *trim, "*", "d", _DEAD_ENCODER.encode(letter),
                "error_kind", letter.error_kind, "id", action.id if action is not None else "",
                "name", action.name if action is not None else "",
            ))
        for key, outcome in results:
            commands += (("DEL", key), ("RPUSH", key, outcome), ("PEXPIRE", key, ttl))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            commands.append(("XACK", self.stream, self.group, *chunk))
            if self.delete_acked:
                commands.append(("XDEL", self.stream, *chunk))
        window = str(max(1, int(self.fate.dedup_window * 1000)))
        for start in range(0, len(done), _CHUNK):
            keys: list[str] = [self.stream, self.delayed_key]
            args: list[Any] = [self.group, "1" if self.delete_acked else "0", ttl, window]
            for item in done[start : start + _CHUNK]:
                receipt, result_key, outcome, delay, child, done_key = item
                result_index = done_index = 0
                if result_key:
                    keys.append(result_key)
                    result_index = len(keys)
                if done_key:
                    keys.append(done_key)
                    done_index = len(keys)
                args.extend((receipt, result_index, outcome, delay, child, done_index))
            if self.cluster:  # a cluster pipeline refuses scripts: there it runs alone
                self._complete(keys=keys, args=args, client=self._client)
            else:
                if not self._loaded:
                    self._complete.sha = self._client.script_load(_scripts.COMPLETE)
                    self._loaded = True
                commands.append(("EVALSHA", self._complete.sha, len(keys), *keys, *args))
        if commands:
            try:
                if self.cluster or not self._out_direct.transaction(commands):
                    pipe = self._client.pipeline(transaction=True)
                    for command in commands:
                        pipe.execute_command(*command)
                    pipe.execute()
            except redis.RedisError:
                self._loaded = False  # perhaps NOSCRIPT: load it again before the next try
                raise
        self._count("acked", len(ids) + sum(1 for d in done if d[0]))
        self._count("dead_lettered", len(letters))
        if done:
            self._count("chained", sum(1 for d in done if d[3]))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued acknowledgements are written; False if ``timeout`` ran out."""
        if self._writer is None or not self._writer.is_alive():
            with self._out_lock:
                ids, letters, done, results = self._take_out()
            if ids or letters or done or results:
                self._write(ids, letters, done, results)
            return True
        self._out_ready.set()
        with self._written:
            return self._written.wait_for(
                lambda: not (self._pending_out() or self._writing), timeout
            )

    def _die(self, thread: str, exc: BaseException) -> None:
        """A background thread failed for a reason retrying cannot mend: record it, stop
        reading, and let the worker see :attr:`failure` (it exits non-zero)."""
        if self.failure is None:
            self.failure = exc
        self._log.error("thread_died", thread=thread, error=f"{type(exc).__name__}: {exc}")
        with self._gate:
            self._consuming = False
            self._active.clear()
        self.failed.set()

    def describe(self) -> bytes:
        """This worker's heartbeat description (Sites, in-flight, its share so far)."""
        with self._counts_lock:
            fetched, acked = self.counts["fetched"], self.counts["acked"]
        return _RESULT_ENCODER.encode(_Beat(
            sites=self.sites, in_flight=len(self._held), fetched=fetched, acked=acked,
            pid=os.getpid(), host=socket.gethostname(),
        ))

    def _heartbeat(self) -> None:
        self._beat(keys=[self.beats_key, self.workers_key], args=[self.consumer, self.describe()])

    def close(self) -> None:
        """Stop reading, give back what was read and not started, flush acks, leave the group.

        Call it after the Sequence bound to it has shut down. Entries still
        held (running elsewhere in this process) stay pending: other workers
        claim them after the visibility timeout.
        """
        if self._closed:
            return
        self.pause()
        self._closed = True
        left = super().hand_back()
        if left:
            self.release(left)
        self._stop.set()
        self._active.set()
        self._room.set()
        if self._fetcher is not None:
            self._fetcher.join()
        self._out_ready.set()
        if self._writer is not None:
            self._writer.join()
        try:
            self.flush()
        except redis.RedisError as exc:  # unacknowledged entries are redelivered later
            self._log.warning("ack_failed", error=str(exc))
        if self._group_ready:
            try:
                self._beat(keys=[self.beats_key, self.workers_key], args=[self.consumer, ""])
            except redis.RedisError as exc:
                self._log.warning("leave_failed", error=str(exc))
        if self._held:
            self._log.warning("closed_with_pending", count=len(self._held))
        elif self._group_ready:
            try:
                self._leave(keys=[self.stream], args=[self.group, self.consumer])
            except redis.RedisError as exc:
                self._log.warning("leave_failed", error=str(exc))
        self._direct.close()
        self._out_direct.close()
        if self._reader is not None:
            self._reader.close()
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RedisProduction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<RedisProduction {self.stream!r} group={self.group!r} consumer={self.consumer!r} "
            f"queued={len(self._queue)} held={len(self._held)}>"
        )
