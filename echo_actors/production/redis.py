# SPDX-License-Identifier: MIT
"""RedisProduction: a durable Production on Redis Streams, shared by many worker processes.

Layout (``stream`` defaults to ``"echo"``):

- ``echo``: the stream of pending actions, one entry each (field ``a``, the
  wire format below; ``w=1`` marks an entry that has waited its delay
  already). Workers read it as consumers of one consumer group.
- ``echo:delayed``: a sorted set of actions waiting for their delay or retry
  backoff, scored by their due time on the Redis server's clock. Every worker
  runs a mover (a Lua script, so exactly one mover moves each action) that
  puts due actions back on the stream.
- ``echo:dead``: the dead letters, one entry each, with the error kind,
  message and attempts (and the raw bytes for entries that did not decode).

Delivery is **at-least-once**. An entry is acknowledged (XACK, then deleted)
only after its action completed, was dead-lettered or was parked in the
sorted set. A worker that dies leaves its entries pending; once they have been
idle for ``visibility_timeout`` seconds another worker claims them
(XAUTOCLAIM: the cross-machine form of work stealing) and runs them again. So
an action may run more than once: after a crash between running it and the
acknowledgement, or when it ran longer than the visibility timeout although a
heartbeat keeps claims on running entries fresh. ``Action.id`` is the
idempotency key: it survives retries, redelivery, requeues and moves through
the sorted set, so a function with side effects can record the ids it has done.

Wire format (``FORMAT_VERSION`` 2): a MessagePack array ``[version, attempt,
action, admission, reply]`` (``reply``: whether the submitter waits for the
result; an action may carry ``trace``). ``attempt`` and ``admission`` are the workers'
bookkeeping: :meth:`RedisProduction.assign` always writes 1 and ``""``, so
what a submitter puts in ``Action.attempt`` never counts; a worker that parks
a retry or gives an entry back writes the attempt it counted and the
admission (the id of the entry the action was first read from), which is what
a license's nonce is recorded against. An action from a writer of the same or
an older version is decoded strictly (an unknown field is a mistake: dead
letter naming it); one from a newer version has the fields this version does
not know dropped. Rolling upgrade rule: **upgrade the workers first**, then
the submitters, so that no worker meets a field it would drop. Entries
written before the envelope (a bare Action map) are still read, attempt 1.

Entries are decoded with typed msgspec decoding (never pickle); an entry that
is malformed, larger than ``Fate.max_action_bytes`` or chains more than
``Fate.max_chain`` actions is dead-lettered with kind ``"decode"``. When it
is first read, an action is admitted: ``created_at`` is reset, a delay over
``Fate.max_delay`` is dead-lettered (kind ``"validation"``) and, with license
keys, its license is verified and its nonce claimed in Redis for this
admission (kind ``"license"`` when refused: an expired or replayed license, or
a nonce the store could not record). Whoever can write to the Redis server
directly is trusted as much as a worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar

import msgspec
import redis

from echo_actors._logging import get_logger
from echo_actors._ticket import Ticket
from echo_actors.action import Action
from echo_actors.admission import admit, check_limits
from echo_actors.dead_letter import DeadLetter
from echo_actors.errors import (
    ActionTimeoutError,
    CancellationError,
    CrashError,
    DecodeError,
    EchoError,
    EncodeError,
    ExecutionError,
    LicenseError,
    RoutingError,
    ValidationError,
)
from echo_actors.fate import Fate
from echo_actors.license import verify
from echo_actors.nonces import DEFAULT_WINDOW, NonceStore, NonceStoreError
from echo_actors.production import Production

__all__ = [
    "FORMAT_VERSION",
    "AssignError",
    "ConsumerStats",
    "RedisFuture",
    "RedisNonceStore",
    "RedisProduction",
    "RedisStats",
    "StoredDeadLetter",
    "WorkerStats",
    "decode_outcome",
]

FORMAT_VERSION = 2
"""The version of the wire format this module writes (see the module's docstring)."""

_log = get_logger("echo_actors.redis")

_RAW_KEPT = 1024
"""Bytes of an undecodable entry kept in its dead letter (the rest is only counted)."""

_CHUNK = 1000
"""Most ids or entries sent in one command (XACK, XADD pipelines, scripts)."""

_HORIZON = 0.05
"""Seconds of work at its recent pace a worker reads ahead beyond one action per Site."""


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


class ConsumerStats(msgspec.Struct, frozen=True):
    """One consumer of the group: its pending (unacknowledged) entries and idle time."""

    name: str
    pending: int
    idle_ms: int


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


class AssignError(ValidationError):
    """Some actions given to :meth:`RedisProduction.assign_many` were refused; the rest were added.

    ``ids`` has one stream entry id per action given, in order (``""`` for a
    delayed one, None for a refused one); ``refused`` lists ``(index, action,
    error)`` for each refused action.
    """

    def __init__(
        self, ids: list[str | None], refused: list[tuple[int, Any, EchoError]]
    ) -> None:
        self.ids = ids
        self.refused = refused
        shown = "; ".join(f"#{index}: {error}" for index, _, error in refused[:5])
        more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
        super().__init__(f"{len(refused)} of {len(ids)} actions refused: {shown}{more}")


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


# KEYS[1]=the nonce's key; ARGV[1]=admission, ARGV[2]=time to keep it (ms). 1: recorded
# now or already for this admission; 0: another admission holds it.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""


class RedisNonceStore:
    """License nonces recorded in Redis (SET NX with a TTL), shared by every worker.

    ``prefix`` is shared by every stream by default, so a license used on one
    stream cannot be replayed on another. Any Redis error is raised as a
    :class:`NonceStoreError`: the action is refused (fail closed).
    """

    def __init__(
        self, client: Any, prefix: str = "echo_actors:nonce:", window: float = DEFAULT_WINDOW
    ) -> None:
        if not window > 0:
            raise ValueError("window must be > 0 seconds")
        self.window = window
        self.prefix = prefix
        self._client = client
        self._claim = client.register_script(_CLAIM)

    def claim(self, nonce: str, admission: str, expires_at: float) -> bool:
        """Record ``nonce`` for ``admission`` until the expiry plus the window."""
        keep_ms = max(1, int((expires_at + self.window - time.time()) * 1000))
        try:
            return bool(self._claim(keys=[self.prefix + nonce], args=[admission, keep_ms]))
        except redis.RedisError as exc:
                raise NonceStoreError(f"Redis: {exc}") from exc

    def holds(self, nonce: str, admission: str) -> bool:
        """Whether ``nonce`` is recorded for ``admission``."""
        try:
            held = self._client.get(self.prefix + nonce)
        except redis.RedisError as exc:
            raise NonceStoreError(f"Redis: {exc}") from exc
        return held is not None and _text(held) == admission


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

# KEYS[1]=delayed, KEYS[2]=stream; ARGV[1]=most to move. Moves due actions (server
# clock) back to the stream; atomic, so no action is moved twice. Returns
# {moved, next due score or '', server time}.
_MOVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'a', member, 'w', '1')
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or '', tostring(now)}
"""

# KEYS[1]=delayed, KEYS[2]=stream; ARGV[1]=group, ARGV[2]=delete acked (0/1),
# then triples (delay seconds, payload, receipt or ''). Parks actions until due
# (server clock) and acknowledges the entries they came from, atomically.
_PARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 3, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])
  local r = ARGV[i + 2]
  if r ~= '' then
    redis.call('XACK', KEYS[2], ARGV[1], r)
    if ARGV[2] == '1' then redis.call('XDEL', KEYS[2], r) end
  end
end
return (#ARGV - 2) / 3
"""

# KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer, ARGV[3]=delete acked (0/1),
# then triples (receipt or '', payload, waited 0/1). Gives entries back: each
# one still pending on this consumer is acknowledged and added anew at the end.
_RELEASE = """
local n = 0
for i = 4, #ARGV, 3 do
  local r = ARGV[i]
  local owned = true
  if r ~= '' then
    owned = #redis.call('XPENDING', KEYS[1], ARGV[1], r, r, 1, ARGV[2]) > 0
    if owned then
      redis.call('XACK', KEYS[1], ARGV[1], r)
      if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], r) end
    end
  end
  if owned then
    if ARGV[i + 2] == '1' then
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 1], 'w', '1')
    else
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 1])
    end
    n = n + 1
  end
end
return n
"""

# KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer, then receipts. The heartbeat:
# resets the idle time of entries this consumer still owns, so that running
# actions are not claimed by others.
_TOUCH = """
local n = 0
for i = 3, #ARGV do
  local r = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], r, r, 1, ARGV[2]) > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, r, 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS[1]=dead, KEYS[2]=stream; ARGV pairs (dead entry id, payload). Requeues
# dead letters; the XDEL check means two requeuers never both requeue one.
# Returns the dead entry ids requeued.
_REQUEUE = """
local done = {}
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'a', ARGV[i + 1], 'w', '1')
    done[#done + 1] = ARGV[i]
  end
end
return done
"""

# KEYS[1]=stream, KEYS[2]=delayed, then result and completion-mark keys;
# ARGV[1]=group, ARGV[2]=delete acked (0/1), ARGV[3]=result TTL (ms), ARGV[4]=dedup
# window (ms), then sextuples (receipt or '', result key index or 0, result,
# child delay or '' for none, child payload, completion-mark key index or 0).
# Ends completed attempts in one step: acknowledges the entry, stores the
# result, adds the ``next`` action (to the stream, or the sorted set when it
# has a delay) and marks the id completed: a crash cannot separate them.
_COMPLETE = """
local now = nil
for i = 5, #ARGV, 6 do
  local r = ARGV[i]
  if r ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], r)
    if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], r) end
  end
  local rk = tonumber(ARGV[i + 1])
  if rk > 0 then
    redis.call('DEL', KEYS[rk])
    redis.call('RPUSH', KEYS[rk], ARGV[i + 2])
    redis.call('PEXPIRE', KEYS[rk], ARGV[3])
  end
  local d = ARGV[i + 3]
  if d ~= '' then
    if tonumber(d) > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
      end
      redis.call('ZADD', KEYS[2], now + tonumber(d), ARGV[i + 4])
    else
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 4])
    end
  end
  local dk = tonumber(ARGV[i + 5])
  if dk > 0 then redis.call('SET', KEYS[dk], '1', 'PX', ARGV[4]) end
end
return (#ARGV - 4) / 6
"""

# KEYS[1]=heartbeats (sorted set), KEYS[2]=workers (hash); ARGV[1]=consumer,
# ARGV[2]=its description, or '' when it leaves. Stamps with the server's clock.
_BEAT = """
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return redis.call('HDEL', KEYS[2], ARGV[1])
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
return redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS[1]=heartbeats, KEYS[2]=workers; ARGV[1]=seconds after which a silent worker is
# forgotten. Returns {server time, consumer, last beat, description, ...} of the live ones.
_WORKERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))
for _, c in ipairs(gone) do
  redis.call('ZREM', KEYS[1], c)
  redis.call('HDEL', KEYS[2], c)
end
local out = {tostring(now)}
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return out
"""

# KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer. Leaves the group only with
# nothing pending (deleting a consumer would drop its pending entries).
_LEAVE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """Entries of one stream from an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not response:
        return []
    if isinstance(response, dict):
        out: list[tuple[Any, Any]] = []
        for value in response.values():
            wrapped = bool(value) and isinstance(value[0], list)  # redis-py's RESP3 shape
            out.extend(tuple(entry) for entry in (value[0] if wrapped else value))
        return out
    return [tuple(entry) for _, entries in response for entry in entries]


_RESULT_ENCODER = msgspec.msgpack.Encoder()
_ERRORS: dict[str, type[EchoError]] = {
    cls.kind: cls for cls in (
        EchoError, LicenseError, ExecutionError, ActionTimeoutError, CrashError, RoutingError,
        CancellationError, ValidationError, DecodeError, EncodeError,
    )
}


def _ok_outcome(action: Action, result: Any, limit: int) -> bytes:
    """A stored outcome for ``result``: ``[1, result]``, or an ``encode`` error outcome
    when the result cannot be encoded or is bigger than ``limit`` bytes."""
    try:
        value = _RESULT_ENCODER.encode(result)
    except RecursionError:
        return _error_outcome(EncodeError.kind,
                              f"the result of {action.name} is nested too deeply",
                              action.attempt)
    except (TypeError, ValueError, OverflowError) as exc:
        return _error_outcome(EncodeError.kind,
                              f"the result of {action.name} cannot be encoded: {exc}",
                              action.attempt)
    if len(value) > limit:
        return _error_outcome(EncodeError.kind, f"the result of {action.name} encodes to "
                              f"{len(value)} bytes, over the limit of {limit}", action.attempt)
    return _RESULT_ENCODER.encode((1, msgspec.Raw(value)))


def _error_outcome(kind: str, message: str, attempts: int) -> bytes:
    """A stored outcome for a final error: ``[0, kind, message, attempts]``."""
    return _RESULT_ENCODER.encode((0, kind, message, attempts))


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


class _Direct:
    """One connection of a production's own for its single commands (one XADD per
    ``assign``), taken when free: half the time and CPU of going through redis-py's
    client, whose connection pool, retry wrapper and command hooks cost as much as
    the round trip on loopback.

    Whoever finds it busy (another thread or greenlet), or finds no plain client
    (a cluster), goes through the client; so does a command whose connection
    failed, after closing it: the client's retries and reconnections take over.
    A forked child never shares its parent's socket (the connection is remade).
    """

    __slots__ = ("_client", "_connection", "_lock", "_pid")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pid = 0

    def __call__(self, *args: Any) -> Any:
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None and self._lock.acquire(blocking=False):
            try:
                connection = self._connection
                if connection is None or self._pid != os.getpid():
                    connection = self._connection = pool.connection_class(
                        **pool.connection_kwargs
                    )
                    self._pid = os.getpid()
                try:
                    connection.send_command(*args)
                    return connection.read_response()
                except (redis.ConnectionError, redis.TimeoutError):
                    connection.disconnect()  # the client below retries, reconnecting
            finally:
                self._lock.release()
        return self._client.execute_command(*args)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.disconnect()
            self._connection = None


class RedisFuture:
    """The result of an action submitted with :meth:`RedisProduction.submit`.

    Whichever worker runs the action stores its outcome in Redis (for
    ``Fate.result_ttl`` seconds); :meth:`get` waits for it from any process,
    thread or greenlet (under gevent, with the process monkey-patched). For
    a chained action, :meth:`get` gives the head's own result, like
    ``Sequence.submit``'s future, and :meth:`chain` the future of the chain's
    last action.
    """

    __slots__ = ("_client", "_tag", "action_id", "chain_ids")

    def __init__(self, client: Any, tag: str, chain_ids: list[str]) -> None:
        self._client = client
        self._tag = tag
        self.action_id = chain_ids[0]
        self.chain_ids = chain_ids

    @property
    def key(self) -> str:
        """The Redis key its outcome is stored under."""
        return f"{self._tag}:result:{self.action_id}"

    def chain(self) -> RedisFuture:
        """The future of the last action of the chain (self for an action without ``next``).

        When a link of the chain fails for good, this future raises its error.
        """
        return RedisFuture(self._client, self._tag, self.chain_ids[-1:])

    def ready(self) -> bool:
        """Whether the outcome is stored (``get`` would not wait)."""
        return bool(self._client.exists(self.key))

    def get(self, timeout: float | None = None) -> Any:
        """The result, decoded from msgpack (wait at most ``timeout`` seconds; None: for ever).

        Raises:
            TimeoutError: no outcome within ``timeout``.
            EchoError: the action failed for good: the subclass of its error kind
                (``ExecutionError``, ``CrashError``, ``EncodeError`` for a result
                that could not be stored...), with ``attempts`` set.
        """
        key = self.key
        if timeout is not None and timeout <= 0:
            payload = self._client.lindex(key, 0)
            if payload is None:
                raise TimeoutError(f"no result for action {self.action_id} yet")
            return decode_outcome(payload)
        # One round trip, stored or not: a non-destructive blocking read that moves the
        # one element onto the same list (it returns at once when the outcome is there).
        payload = self._client.blmove(key, key, timeout or 0, "LEFT", "RIGHT")
        if payload is None:
            raise TimeoutError(f"no result for action {self.action_id} within {timeout} s")
        return decode_outcome(payload)

    def __repr__(self) -> str:
        return f"<RedisFuture {self.action_id}>"


def decode_outcome(payload: bytes) -> Any:
    """The result a stored outcome holds, or raise the error it records (see RedisFuture.get).

    Raises:
        DecodeError: not a stored outcome.
    """
    try:
        outcome = msgspec.msgpack.decode(payload)
        ok = outcome[0]
        if ok == 1:
            return outcome[1]
        kind, message, attempts = str(outcome[1]), str(outcome[2]), int(outcome[3])
    except (msgspec.DecodeError, IndexError, TypeError, ValueError) as exc:
        raise DecodeError(f"not a stored outcome: {exc}") from None
    error = _ERRORS.get(kind, ExecutionError)(message)
    error.attempts = attempts  # type: ignore[attr-defined]
    raise error


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


class _Beat(msgspec.Struct, frozen=True):
    sites: int
    in_flight: int
    fetched: int
    acked: int
    pid: int
    host: str


_BEAT_DECODER = msgspec.msgpack.Decoder(_Beat)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisProduction(Production):
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
        self._move = client.register_script(_MOVE)
        self._park = client.register_script(_PARK)
        self._release = client.register_script(_RELEASE)
        self._touch = client.register_script(_TOUCH)
        self._requeue = client.register_script(_REQUEUE)
        self._leave = client.register_script(_LEAVE)
        self._complete = client.register_script(_COMPLETE)
        self._beat = client.register_script(_BEAT)
        self._workers = client.register_script(_WORKERS)
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
        self._out_done: list[tuple[Any, ...]] = []  # completions for _COMPLETE
        self._out_results: list[tuple[str, bytes]] = []  # error outcomes of buried actions
        self._out_ready = threading.Event()
        self._written = threading.Condition(self._out_lock)
        self._writing = False
        self._writer: threading.Thread | None = None
        self._loaded = False  # whether _COMPLETE is known to be loaded (see _write)
        self._direct = _Direct(self._client)
        self._closed = False

    # Submitting (any process)

    def encode(self, action: Action, *, reply: bool = False) -> bytes:
        """The bytes :meth:`assign` adds for ``action`` (attempt 1, not admitted yet).

        Raises:
            ValidationError: ``action`` is not an Action, chains more than
                ``Fate.max_chain`` actions or asks for a delay over ``Fate.max_delay``.
            EncodeError: it cannot be encoded (an int of 2**64 or more, too
                deep) or encodes to more than ``Fate.max_action_bytes``.
        """
        check_limits(action, self.fate)
        payload = _encode_wire(action, 1, "", reply)
        if len(payload) > self.max_action_bytes:
            raise EncodeError(
                f"action {action.id} ({action.name}) encodes to {len(payload)} bytes, "
                f"over the limit of {self.max_action_bytes}"
            )
        return payload

    def decode(self, payload: bytes) -> Action:
        """The action in a stream entry's payload, as :meth:`encode` wrote it.

        Raises:
            DecodeError: not a valid entry (the message says why).
        """
        return _decode_wire(payload, self.max_action_bytes, self.fate.max_chain)[0]

    def assign(self, action: Action) -> None:
        """Add ``action`` to the stream (to the sorted set when it has a delay).

        Raises:
            ValidationError: ``action`` is refused (see :meth:`encode`): nothing is added.
        """
        try:
            self.assign_many([action])
        except AssignError as exc:
            raise exc.refused[0][2] from None

    def assign_many(self, actions: Iterable[Action]) -> list[str]:
        """Add several actions in pipelines; returns the stream entry ids ('' for delayed ones).

        Each action is checked on its own (see :meth:`encode`): the good ones
        are added even when some are refused.

        Raises:
            AssignError: some were refused (after the others were added); it
                holds the entry ids and, per refused action, its index and error.
        """
        return self._add(actions, reply=False)

    def submit(self, action: Action) -> RedisFuture:
        """Add ``action`` like :meth:`assign`, and return the future of its result.

        Whichever worker runs it stores its outcome (result or final error)
        for ``Fate.result_ttl`` seconds; so does every action chained after
        it (see :meth:`RedisFuture.chain`).

        Raises:
            ValidationError: ``action`` is refused (see :meth:`encode`): nothing is added.
        """
        try:
            return self.submit_many([action])[0]
        except AssignError as exc:
            raise exc.refused[0][2] from None

    def submit_many(self, actions: Iterable[Action]) -> list[RedisFuture]:
        """Add several actions like :meth:`assign_many`; one future each, in order.

        Raises:
            AssignError: some were refused (after the others were added);
                ``futures`` holds a future per action given, None for a refused one.
        """
        given = list(actions)
        try:
            self._add(given, reply=True)
        except AssignError as exc:
            exc.futures = [  # type: ignore[attr-defined]
                None if entry is None else self.future(given[index])
                for index, entry in enumerate(exc.ids)
            ]
            raise
        return [self.future(action) for action in given]

    def future(self, action: Action) -> RedisFuture:
        """The future of an action submitted with :meth:`submit` (from any process)."""
        return RedisFuture(self._client, self.tag, _chain_ids(action))

    def arrived(
        self, futures: list[RedisFuture], timeout: float = 0.0
    ) -> list[tuple[RedisFuture, bytes]]:
        """Those of ``futures`` whose outcome is stored, with it (decode with
        :func:`decode_outcome`): one pipelined look; when none has arrived, wait
        up to ``timeout`` seconds for the first one. For waiting on many at once."""
        out: list[tuple[RedisFuture, bytes]] = []
        for start in range(0, len(futures), _CHUNK):
            chunk = futures[start : start + _CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for future in chunk:
                pipe.lindex(future.key, 0)
            out.extend((f, p) for f, p in zip(chunk, pipe.execute(), strict=True)
                       if p is not None)
        if out or not futures or timeout <= 0:
            return out
        first = futures[0]
        payload = self._client.blmove(first.key, first.key, timeout, "LEFT", "RIGHT")
        return [] if payload is None else [(first, payload)]

    def _add(self, actions: Iterable[Action], reply: bool) -> list[str]:
        items: list[tuple[float, bytes] | None] = []
        refused: list[tuple[int, Any, EchoError]] = []
        for index, action in enumerate(actions):
            try:
                payload = self.encode(action, reply=reply)
                items.append((action.delay, payload))
            except EchoError as exc:
                items.append(None)
                refused.append((index, action, exc))
        good = [item for item in items if item is not None]
        added: list[str] = []
        if len(good) == 1 and good[0][0] <= 0:  # one undelayed action: one plain XADD
            added.append(_text(self._direct("XADD", self.stream, "*", "a", good[0][1])))
            good = []
        for start in range(0, len(good), _CHUNK):
            chunk = good[start : start + _CHUNK]
            pipe = self._client.pipeline(transaction=False)
            parked: list[Any] = []
            for delay, payload in chunk:
                if delay > 0:
                    parked.extend((repr(delay), payload, ""))
                else:
                    pipe.xadd(self.stream, {"a": payload})
            if parked:  # a cluster pipeline refuses scripts: then on its own
                self._park(keys=[self.delayed_key, self.stream],
                           args=[self.group, "0", *parked],
                           client=self._client if self.cluster else pipe)
            replies = iter(pipe.execute())
            for delay, _ in chunk:
                added.append("" if delay > 0 else _text(next(replies)))
        if not refused:
            return added
        ids: list[str | None] = []
        taken = iter(added)
        for item in items:
            ids.append(None if item is None else next(taken))
        raise AssignError(ids, refused)

    # Consuming (the Sequence bound to this production)

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
        """End a completed attempt in Redis in one atomic step (see :data:`_COMPLETE`).

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
        if room >= self._low_water():
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
                action = admit(action)
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
        ``ids`` and run :data:`_COMPLETE` for ``done`` completions.

        One round trip: the script goes into the MULTI as a bare EVALSHA, loaded
        once beforehand and again after any error (a restarted Redis has lost
        it), because redis-py would check a pipeline's scripts with a SCRIPT
        EXISTS round trip before every execute.
        """
        pipe = self._client.pipeline(transaction=True)
        ttl = str(max(1, int(self.fate.result_ttl * 1000)))
        for letter in letters:
            action = letter.action
            pipe.xadd(self.dead_key, {
                "d": _DEAD_ENCODER.encode(letter), "error_kind": letter.error_kind,
                "id": action.id if action is not None else "",
                "name": action.name if action is not None else "",
            }, maxlen=self.dead_maxlen, approximate=True)
        for key, outcome in results:
            pipe.delete(key)
            pipe.rpush(key, outcome)
            pipe.pexpire(key, int(ttl))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            pipe.xack(self.stream, self.group, *chunk)
            if self.delete_acked:
                pipe.xdel(self.stream, *chunk)
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
                    self._complete.sha = self._client.script_load(_COMPLETE)
                    self._loaded = True
                pipe.evalsha(self._complete.sha, len(keys), *keys, *args)
        if len(pipe):
            try:
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
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RedisProduction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Inspection and dead letters (any process)

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

    def __repr__(self) -> str:
        return (
            f"<RedisProduction {self.stream!r} group={self.group!r} consumer={self.consumer!r} "
            f"queued={len(self._queue)} held={len(self._held)}>"
        )
