# SPDX-License-Identifier: MIT
"""Submitting to a stream (any process): assign, submit, and the futures of results."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import redis

from echo_actors.action import Action
from echo_actors.admission import check_limits
from echo_actors.errors import EchoError, EncodeError, ValidationError
from echo_actors.fate import Fate
from echo_actors.production.redis._results import RedisFuture
from echo_actors.production.redis._wire import _CHUNK, _chain_ids, _decode_wire, _encode_wire, _text

__all__ = ["AssignError", "Submitting"]


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


class _Direct:
    """One connection of a production's own for its single commands (one XADD per
    ``assign``) or its writer's transactions, taken when free: for a single command,
    half the time and CPU of going through redis-py's client, whose connection pool,
    retry wrapper and command hooks cost as much as the round trip on loopback.

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

    def transaction(self, commands: list[tuple[Any, ...]]) -> bool:
        """Run ``commands`` in one MULTI/EXEC on the connection, in one round trip, when it
        is free; False (nothing was sent, or the connection failed) when the caller must
        use a pipeline of the client instead, whose retries and reconnections take over.

        A third less CPU than redis-py's transaction pipeline for a writer's batch (43 µs
        against 69 µs for 8 acknowledgements: its command stack, pool and reply checks).

        Raises:
            redis.ResponseError: the first error among the replies (a command refused
                when queued, which aborts the transaction, or one that failed in it).
        """
        pool = getattr(self._client, "connection_pool", None)
        if pool is None or not self._lock.acquire(blocking=False):
            return False
        try:
            connection = self._connection
            if connection is None or self._pid != os.getpid():
                connection = self._connection = pool.connection_class(**pool.connection_kwargs)
                self._pid = os.getpid()
            first: redis.ResponseError | None = None
            try:
                connection.send_packed_command(
                    connection.pack_commands([("MULTI",), *commands, ("EXEC",)])
                )
                for _ in range(len(commands) + 1):  # MULTI's and each command's QUEUED
                    try:
                        connection.read_response()
                    except redis.ResponseError as exc:  # read: the replies stay in step
                        first = first or exc
                try:
                    replies = connection.read_response()  # EXEC's: one reply per command
                except redis.ResponseError as exc:  # EXECABORT: a command was refused
                    raise first or exc from None
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                return False
            for reply in replies or ():
                if isinstance(reply, redis.ResponseError):
                    raise reply
            if first is not None:
                raise first
            return True
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.disconnect()
            self._connection = None


class Submitting:
    """The submitting side of :class:`RedisProduction` (any process): encode and add
    actions, return the futures of their results."""

    # Set by RedisProduction.__init__.
    _client: Any
    _direct: _Direct
    _park: Any
    cluster: bool
    delayed_key: str
    fate: Fate
    group: str
    max_action_bytes: int
    stream: str
    tag: str

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
        self._add_one(action, reply=False)

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
        self._add_one(action, reply=True)
        return self.future(action)

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

    def _add_one(self, action: Action, reply: bool) -> None:
        """:meth:`_add` for one action, the path of ``assign`` and ``submit`` one by one:
        its refusal raised as it is, and an undelayed one added with one plain XADD."""
        payload = self.encode(action, reply=reply)  # a refusal raises: nothing is added
        if action.delay > 0:
            self._add_encoded([(action.delay, payload)])
        else:
            self._direct("XADD", self.stream, "*", "a", payload)

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
        if len(good) == 1 and good[0][0] <= 0:  # one undelayed action: one plain XADD
            added = [_text(self._direct("XADD", self.stream, "*", "a", good[0][1]))]
        else:
            added = self._add_encoded(good)
        if not refused:
            return added
        ids: list[str | None] = []
        taken = iter(added)
        for item in items:
            ids.append(None if item is None else next(taken))
        raise AssignError(ids, refused)

    def _add_encoded(self, good: list[tuple[float, bytes]]) -> list[str]:
        """Add encoded actions ``(delay, payload)`` in pipelines; their entry ids ('' for
        delayed ones, which go to the sorted set)."""
        added: list[str] = []
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
        return added
