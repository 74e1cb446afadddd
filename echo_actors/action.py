# SPDX-License-Identifier: MIT
"""Action: one unit of work, pure data that encodes to JSON or MessagePack."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from typing import Annotated, Any, Literal, Protocol

import msgspec

from echo_actors.errors import DecodeError, EncodeError

__all__ = [
    "CHAIN_CEILING",
    "MAX_ACTION_BYTES",
    "MAX_CHAIN",
    "MAX_NAME_LENGTH",
    "Action",
    "ActionSource",
    "chain_length",
    "new_id",
    "set_action_source",
]

MAX_ACTION_BYTES = 1 << 20
"""Default limit on the size of an encoded action accepted by :meth:`Action.decode`."""

MAX_CHAIN = 64
"""Default limit on the actions in one ``next`` chain (``Fate.max_chain``)."""

CHAIN_CEILING = 256
"""The largest ``Fate.max_chain`` allowed: a chain this long still encodes, decodes and
signs well clear of Python's recursion limit."""

MAX_NAME_LENGTH = 200
"""Longest action, hook or key name, in characters."""

_MAX_ID_LENGTH = 64
_MAX_LICENSE_LENGTH = 512
_FLOAT_MAX = sys.float_info.max

# Control characters (C0, DEL, C1) and lone surrogates: never in a hook or key name.
# Names and ids are checked with str.isprintable in __post_init__ (faster, and stricter:
# separators and format characters other than the space are refused too).
_PRINTABLE_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]*\\Z"

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH, pattern=_PRINTABLE_PATTERN)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID_LENGTH)]
_TraceKey = Annotated[str, msgspec.Meta(max_length=64)]
_TraceValue = Annotated[str, msgspec.Meta(max_length=512)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=_FLOAT_MAX)]  # finite: inf and NaN refused


class _Empty(dict[str, Any]):
    """The default ``metadata`` and ``trace`` of an Action: one empty dict, shared, read-only.

    One per Action would be two objects the garbage collector counts for each of
    the thousands in flight (an Action itself is not counted): enough to trigger
    its passes more often. Nothing can fill this one; an action with metadata is
    made with :meth:`Action.with_metadata` or by passing a dict of its own.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an Action's default metadata and trace are read-only: "
                        "make a new action with with_metadata() or replace()")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


_EMPTY: dict[str, Any] = _Empty()


# Random bytes are drawn from the OS in blocks (one system call per 1024 ids), as hex ids
# waiting in a deque: popleft is atomic, so taking one needs no lock; refilling takes one.
_IDS_PER_DRAW = 1024
_ids_lock = threading.Lock()
_ids: deque[str] = deque()


def _forget_ids() -> None:
    _ids.clear()  # a forked child must not reuse its parent's ids


os.register_at_fork(after_in_child=_forget_ids)


class ActionSource(Protocol):
    """Where new actions take their ``id`` and ``created_at`` from instead of the OS.

    The simulation runtime is one (:func:`set_action_source`): while its
    kernel runs, ids come from its seeded stream and ``created_at`` from its
    virtual clock, so the same seed gives the same ids and timestamps.
    """

    def new_id(self) -> str: ...
    def now(self) -> float: ...


def _thread_local() -> type[threading.local]:
    # Under gevent's monkey patching threading.local is per greenlet; a simulation's
    # greenlets must all see the source its kernel set, so take the OS thread's own.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("threading", "local")  # type: ignore[no-any-return]
    return threading.local


class _Context(_thread_local()):  # type: ignore[misc]
    source: ActionSource | None = None


_context = _Context()
"""Per OS thread: the source of ids and creation times (None: the OS, the wall clock)."""

_sourced = 0
"""How many threads have a source set: while 0, making an action never reads ``_context``."""
_sourced_lock = threading.Lock()


def set_action_source(source: ActionSource | None) -> ActionSource | None:
    """Make ``source`` this thread's source of action ids and ``created_at``; returns the
    previous one, to be restored. ``None``: random ids from the OS and wall-clock time."""
    global _sourced
    previous = _context.source
    with _sourced_lock:
        _sourced += (source is not None) - (previous is not None)
        _context.source = source
    return previous


def now() -> float:
    """The time a new action is created at: the source's clock, else ``time.time()``."""
    if _sourced:
        source = _context.source
        if source is not None:
            return source.now()
    return time.time()


def new_id() -> str:
    """A new action id: 128 random bits from the OS as 32 hex characters (unguessable).

    While an :class:`ActionSource` is set for this thread (a simulation runs
    here), the id is the source's instead: reproducible, never drawn again.
    """
    if _sourced:
        source = _context.source
        if source is not None:
            return source.new_id()
    while True:
        try:
            return _ids.popleft()
        except IndexError:
            _draw_ids()


def _draw_ids() -> None:
    with _ids_lock:
        if not _ids:  # another thread may have drawn while this one waited for the lock
            pool = os.urandom(16 * _IDS_PER_DRAW).hex()
            _ids.extend([pool[i : i + 32] for i in range(0, 32 * _IDS_PER_DRAW, 32)])


class Action(
    msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True, gc=False,
):
    """One unit of work: a ``name`` the plan serves and its ``content``.

    Besides the payload it carries Echo's built-in controls: ``delay`` (seconds
    to wait before it runs, on a timer), ``hooks`` and ``after`` (names of
    before- and after-hooks registered in Life), ``next`` (the action to submit
    when this one completes; it receives the result as content when it has
    none), ``license`` (the signature checked when a license key is
    configured), ``attempt`` (1 for the first try), and for the dispatcher
    ``key`` (same key, same Site) and ``ordered`` (never stolen, so actions of
    one key complete in submission order). It holds no code: it can cross
    process boundaries, chain included.

    Checked in the type: names printable (no control characters) and at most
    ``MAX_NAME_LENGTH`` long, ``delay`` finite and >= 0, ``attempt`` >= 1; ids
    are random (:func:`new_id`). ``content`` and ``metadata`` are the sender's
    and are not inspected. Limits that depend on configuration (``max_delay``,
    ``max_chain``, ``max_action_bytes``) are checked at admission (see
    :mod:`echo_actors.admission`).

    Who chooses what: a sender controls ``name``, ``content``, ``metadata``,
    ``delay``, ``hooks``, ``after``, ``next``, ``license``, ``key``,
    ``ordered`` and ``id`` (the idempotency key); ``attempt`` and
    ``created_at`` are the system's, reset when an action is admitted.
    Under the simulation runtime, an action made while its kernel runs (or
    inside ``with runtime:``) takes its id from the seeded simulation and its
    ``created_at`` from the virtual clock.

    ``trace`` carries a tracing context (W3C ``traceparent``/``tracestate``,
    see :mod:`echo_actors.tracing`) from hop to hop. It is rewritten at every
    hop, so a license does not cover it: it says where a span belongs, never
    what runs, and a forged one can only mislabel a trace.

    Actions are not tracked by the garbage collector (``gc=False``: one object
    fewer for each of the thousands in flight to traverse). Frozen, an Action
    can be in a reference cycle only through its ``content`` or ``metadata``
    referring back to it, and such an action cannot be submitted (it does not
    encode: ``EncodeError`` at admission). The one cost: a cycle made through
    an Action anyway (say, its content mutated afterwards to hold it) is never
    collected; its memory stays until the process ends.
    """

    name: Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
    content: Any = None
    metadata: dict[str, Any] = _EMPTY
    delay: Seconds = 0.0
    hooks: tuple[Name, ...] = ()
    after: tuple[Name, ...] = ()
    next: Action | None = None
    license: Annotated[str, msgspec.Meta(max_length=_MAX_LICENSE_LENGTH)] | None = None
    attempt: Annotated[int, msgspec.Meta(ge=1)] = 1
    key: Name | None = None
    ordered: bool = False
    id: Id = msgspec.field(default_factory=new_id)
    created_at: Seconds = msgspec.field(default_factory=now)
    trace: Annotated[dict[_TraceKey, _TraceValue], msgspec.Meta(max_length=8)] = _EMPTY

    def __post_init__(self) -> None:
        # Decoding checks the annotations; these checks hold for actions built in Python too.
        name = self.name
        if not isinstance(name, str) or not name:
            raise TypeError(f"Action name must be a non-empty str, not {name!r}")
        if len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ValueError(
                f"Action name must be printable and at most {MAX_NAME_LENGTH} characters, "
                f"not {name[:MAX_NAME_LENGTH]!r}"
            )
        if not self.id.isprintable():
            raise ValueError(f"Action id must be printable, not {self.id!r}")
        delay = self.delay
        if not (delay >= 0 and math.isfinite(delay)):
            raise ValueError(f"Action delay must be a finite number >= 0, not {delay!r}")
        if self.attempt < 1:
            raise ValueError(f"Action attempt must be >= 1, not {self.attempt!r}")
        if self.ordered and self.key is None:
            raise ValueError("an ordered Action needs a key: order is kept per key")

    def with_metadata(self, key: str, value: Any) -> Action:
        """A copy of this action with ``metadata[key] = value``."""
        return msgspec.structs.replace(self, metadata={**self.metadata, key: value})

    def replace(self, **changes: Any) -> Action:
        """A copy of this action with some fields changed."""
        return msgspec.structs.replace(self, **changes)

    def chain(self) -> list[Action]:
        """This action and every ``next`` after it, in order."""
        out: list[Action] = []
        action: Action | None = self
        while action is not None:
            out.append(action)
            action = action.next
        return out

    def encode(self, format: Literal["json", "msgpack"] = "json") -> bytes:
        """Encode as JSON (default) or MessagePack; ``next`` is encoded too.

        Raises:
            EncodeError: a value the format cannot carry (an int of 2**64 or
                more in MessagePack, an object that is not JSON-like), or a
                chain or content nested too deeply.
        """
        try:
            return _JSON_ENCODER.encode(self) if format == "json" else _MSGPACK_ENCODER.encode(self)
        except RecursionError:
            raise EncodeError(
                f"action {self.id} ({self.name}) is nested too deeply to encode"
            ) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"action {self.id} ({self.name}) cannot be encoded: {exc}") from exc

    @classmethod
    def decode(
        cls,
        data: bytes | bytearray | memoryview | str,
        format: Literal["json", "msgpack"] = "json",
        *,
        max_bytes: int = MAX_ACTION_BYTES,
        max_chain: int = MAX_CHAIN,
        strict: bool = True,
    ) -> Action:
        """Decode an action, validating every field's type.

        ``strict`` (the default, for what people and clients write): a field
        an Action does not have is refused, naming it. ``strict=False`` drops
        unknown fields instead, along the whole chain: for data written by a
        newer version of echo_actors (see the Redis wire format).

        Raises:
            DecodeError: the data is larger than ``max_bytes``, is not valid
                JSON/MessagePack, does not describe an Action (the message
                names the offending field), or chains more than ``max_chain``
                actions.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if len(data) > max_bytes:
            raise DecodeError(f"encoded action is {len(data)} bytes, over the limit of {max_bytes}")
        try:
            if strict:
                decoder = _JSON_DECODER if format == "json" else _MSGPACK_DECODER
                action = decoder.decode(data)
            else:
                action = _lenient(data, format)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a valid Action: {exc}") from exc
        except RecursionError:
            raise DecodeError(
                "not a valid Action: nested too deeply (its content, or a chain: at most "
                f"{max_chain} actions)"
            ) from None
        length = chain_length(action)
        if length > max_chain:
            raise DecodeError(
                f"not a valid Action: a chain of {length} actions, over the limit of {max_chain}"
            )
        return action


def chain_length(action: Action) -> int:
    """How many actions ``action`` chains, itself included (no recursion)."""
    n = 0
    current: Action | None = action
    while current is not None:
        n += 1
        current = current.next
    return n


_FIELDS = frozenset(Action.__struct_fields__)


def _lenient(data: bytes | bytearray | memoryview, format: str) -> Action:
    """Decode, dropping fields an Action does not have (along ``next``), then convert."""
    raw = msgspec.json.decode(data) if format == "json" else msgspec.msgpack.decode(data)
    top = raw
    while isinstance(raw, dict):
        for unknown in [k for k in raw if k not in _FIELDS]:
            del raw[unknown]
        raw = raw.get("next")
    return msgspec.convert(top, Action)


_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_JSON_DECODER = msgspec.json.Decoder(Action)
_MSGPACK_DECODER = msgspec.msgpack.Decoder(Action)
