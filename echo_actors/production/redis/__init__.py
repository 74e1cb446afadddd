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

The package: ``_submit`` (any process adding actions), ``_production`` (the
consumer a Sequence reads from: fetching, acknowledging, claiming, heartbeats),
``_admin`` (stats and dead letters), ``_results`` (stored outcomes and their
futures), ``_wire`` (the formats), ``_scripts`` (the Lua, from ``lua/*.lua``).
"""

from __future__ import annotations

from echo_actors.production.redis._nonces import RedisNonceStore
from echo_actors.production.redis._production import RedisProduction
from echo_actors.production.redis._results import RedisFuture, decode_outcome
from echo_actors.production.redis._stats import ConsumerStats, RedisStats, WorkerStats
from echo_actors.production.redis._submit import AssignError
from echo_actors.production.redis._wire import FORMAT_VERSION, StoredDeadLetter

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
