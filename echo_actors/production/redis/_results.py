# SPDX-License-Identifier: MIT
"""Results across processes: the stored outcome of an action and the future that waits for it."""

from __future__ import annotations

from typing import Any

import msgspec

from echo_actors.action import Action
from echo_actors.errors import DecodeError, EncodeError, error_class

__all__ = ["RedisFuture", "decode_outcome"]


_RESULT_ENCODER = msgspec.msgpack.Encoder()


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
    error = error_class(kind)(message)
    error.attempts = attempts  # type: ignore[attr-defined]
    raise error
