# SPDX-License-Identifier: MIT
"""Action: one unit of work, pure data that encodes to JSON or MessagePack."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Literal

import msgspec

from echo_actors.errors import DecodeError

__all__ = ["MAX_ACTION_BYTES", "Action", "new_id"]

MAX_ACTION_BYTES = 1 << 20
"""Default limit on the size of an encoded action accepted by :meth:`Action.decode`."""

_counter = itertools.count(1)
_prefix = os.urandom(6).hex()


def _new_prefix() -> None:
    global _prefix
    _prefix = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_prefix)


def new_id() -> str:
    """A new action id: unique across processes and cheap (random prefix + counter)."""
    return f"{_prefix}-{next(_counter):x}"


class Action(msgspec.Struct, frozen=True, omit_defaults=True):
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
    """

    name: str
    content: Any = None
    metadata: dict[str, Any] = {}
    delay: float = 0.0
    hooks: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    next: Action | None = None
    license: str | None = None
    attempt: int = 1
    key: str | None = None
    ordered: bool = False
    id: str = msgspec.field(default_factory=new_id)
    created_at: float = msgspec.field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Action name must be a non-empty str, not {self.name!r}")
        if self.delay < 0:
            raise ValueError(f"Action delay must be >= 0, not {self.delay!r}")
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
        """Encode as JSON (default) or MessagePack; ``next`` is encoded too."""
        return _JSON_ENCODER.encode(self) if format == "json" else _MSGPACK_ENCODER.encode(self)

    @classmethod
    def decode(
        cls,
        data: bytes | bytearray | str,
        format: Literal["json", "msgpack"] = "json",
        *,
        max_bytes: int = MAX_ACTION_BYTES,
    ) -> Action:
        """Decode an action, validating every field's type.

        Raises:
            DecodeError: the data is larger than ``max_bytes``, is not valid
                JSON/MessagePack, or does not describe an Action (the message
                names the offending field).
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if len(data) > max_bytes:
            raise DecodeError(f"encoded action is {len(data)} bytes, over the limit of {max_bytes}")
        decoder = _JSON_DECODER if format == "json" else _MSGPACK_DECODER
        try:
            return decoder.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a valid Action: {exc}") from exc
        except RecursionError:
            raise DecodeError("not a valid Action: nested too deeply") from None


_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_JSON_DECODER = msgspec.json.Decoder(Action)
_MSGPACK_DECODER = msgspec.msgpack.Decoder(Action)
