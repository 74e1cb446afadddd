# SPDX-License-Identifier: MIT
"""Action: pure data with unique ids, JSON/MessagePack round trips and strict decoding."""

from __future__ import annotations

import gc
import math
import os
import re
import threading

import msgspec
import pytest

from echo_actors import Action, DecodeError, EncodeError, ValidationError
from echo_actors.action import MAX_CHAIN, MAX_NAME_LENGTH, new_id

pytestmark = pytest.mark.timeout(30)

FORMATS = ["json", "msgpack"]


def _chain_of_three() -> Action:
    third = Action("Third", {"n": 3}, metadata={"step": 3})
    second = Action("Second", next=third, hooks=("audit",), after=("log",))
    return Action(
        "First",
        {"path": "/etc/hostname", "limit": 80},
        metadata={"trace": "abc"},
        delay=0.5,
        next=second,
        license="sig",
        attempt=2,
        key="k",
        ordered=True,
    )


def _encode_raw(value: object, format: str) -> bytes:
    return msgspec.json.encode(value) if format == "json" else msgspec.msgpack.encode(value)


def test_ids_are_unique() -> None:
    """Every new Action gets an id of its own."""
    ids = {Action("A").id for _ in range(10_000)}
    assert len(ids) == 10_000


def test_ids_drawn_by_many_threads_at_once_are_all_distinct() -> None:
    """Eight threads taking ids together, across several refills of the pool, never share
    one; a forked child draws its own (none of the parent's pool)."""
    barrier = threading.Barrier(8)
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(mine: list[str]) -> None:
        barrier.wait(10)
        mine.extend(new_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(mine,)) for mine in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    ids = [i for mine in drawn for i in mine]
    assert len(ids) == len(set(ids)) == 24_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    if hasattr(os, "fork"):
        new_id()  # the parent's pool holds ids now
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: write its next id and leave at once
            os.write(writer, new_id().encode())
            os._exit(0)
        os.close(writer)
        child = os.read(reader, 64).decode()
        os.close(reader)
        os.waitpid(pid, 0)
        assert re.fullmatch(r"[0-9a-f]{32}", child) and child != new_id()


def test_ids_are_random_and_32_hex_characters() -> None:
    """Ids are 128 random bits: 32 hex characters, with no shared prefix or counter."""
    ids = [Action("A").id for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len({i[:8] for i in ids}) > 990  # a per-process prefix would make this 1
    # Each of the 128 bits is set in some ids and clear in others.
    values = [int(i, 16) for i in ids]
    assert all(0 < sum(v >> bit & 1 for v in values) < len(values) for bit in range(128))


@pytest.mark.parametrize("format", FORMATS)
def test_decoded_ids_are_bounded(format: str) -> None:
    """A decoded id longer than 64 characters, empty or with control characters is refused."""
    for bad in ("x" * 65, "", "a\x00b"):
        with pytest.raises(DecodeError, match=r"\$\.id|Action id must be printable"):
            Action.decode(_encode_raw({"name": "A", "id": bad}, format), format)  # type: ignore[arg-type]
    assert Action.decode(_encode_raw({"name": "A", "id": "x" * 64}, format), format).id == "x" * 64  # type: ignore[arg-type]


def test_defaults() -> None:
    """An action made from a name alone has the documented defaults."""
    action = Action("A")
    assert action.content is None
    assert action.metadata == {}
    assert action.delay == 0.0
    assert action.hooks == () and action.after == ()
    assert action.next is None and action.license is None
    assert action.attempt == 1
    assert action.key is None and action.ordered is False
    assert action.created_at > 0


@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_with_a_chain_of_three(format: str) -> None:
    """Encoding then decoding gives back an equal action, its whole `next` chain included."""
    action = _chain_of_three()
    decoded = Action.decode(action.encode(format), format)  # type: ignore[arg-type]
    assert decoded == action
    assert [a.name for a in decoded.chain()] == ["First", "Second", "Third"]
    assert [a.id for a in decoded.chain()] == [a.id for a in action.chain()]
    assert decoded.next is not None and decoded.next.next is not None
    assert decoded.next.next.content == {"n": 3}
    assert decoded.next.hooks == ("audit",) and decoded.next.after == ("log",)


def test_json_encoding_is_json() -> None:
    """The JSON encoding is plain JSON that any decoder reads."""
    action = Action("A", [1, "two"], metadata={"m": True})
    data = msgspec.json.decode(action.encode("json"))
    assert data["name"] == "A" and data["content"] == [1, "two"]
    assert data["metadata"] == {"m": True} and data["id"] == action.id


def test_decode_accepts_str_and_minimal_input() -> None:
    """A JSON str with only a name decodes, with defaults filled in and a fresh id."""
    action = Action.decode('{"name": "A", "content": 1}')
    assert action.name == "A" and action.content == 1 and action.attempt == 1
    assert action.id and action.id != Action.decode('{"name": "A"}').id


def test_with_metadata_returns_a_new_action() -> None:
    """with_metadata copies: the original action is unchanged."""
    action = Action("A", metadata={"a": 1})
    changed = action.with_metadata("b", 2)
    assert changed is not action
    assert changed.metadata == {"a": 1, "b": 2}
    assert action.metadata == {"a": 1}
    assert changed.id == action.id and changed.name == "A"


def test_replace_returns_a_new_action() -> None:
    """replace copies with some fields changed and still validates them."""
    action = Action("A", 1)
    assert action.replace(content=2).content == 2
    assert action.content == 1
    with pytest.raises(ValueError):
        action.replace(attempt=0)


def test_actions_are_frozen() -> None:
    """An Action cannot be changed in place."""
    action = Action("A")
    with pytest.raises(AttributeError):
        action.name = "B"  # type: ignore[misc]


def test_default_metadata_and_trace_are_empty_read_only_and_cost_the_collector_nothing(
) -> None:
    """Unset, metadata and trace are one shared empty dict nobody can fill: a write is a
    TypeError naming the way to do it, and making actions allocates no collected objects."""
    action = Action("A")
    for mapping in (action.metadata, action.trace):
        assert mapping == {} and isinstance(mapping, dict)
        with pytest.raises(TypeError, match="with_metadata"):
            mapping["x"] = 1
        for write in (mapping.update, mapping.setdefault, mapping.pop, mapping.clear):
            with pytest.raises(TypeError):
                write("x")  # type: ignore[operator]
        with pytest.raises(TypeError):
            mapping.__init__({"x": 1})  # type: ignore[misc]
    assert Action("B").metadata == {} and Action.decode(action.encode()).metadata == {}
    assert action.with_metadata("k", 1).metadata == {"k": 1}
    own = Action("C", metadata={}).metadata
    own["x"] = 1  # a dict of the sender's own stays the sender's
    assert own == {"x": 1} and Action("D").metadata == {}
    gc.disable()
    try:
        before = gc.get_count()[0]
        kept = [Action("A", 0.5) for _ in range(1000)]
        counted = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert len(kept) == 1000 and counted < 500  # was 2000: two dicts for each


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, TypeError),
        ({"name": 5}, TypeError),
        ({"name": None}, TypeError),
        ({"name": "A", "delay": -0.1}, ValueError),
        ({"name": "A", "delay": math.nan}, ValueError),
        ({"name": "A", "delay": math.inf}, ValueError),
        ({"name": "A\x00"}, ValueError),
        ({"name": "A\nB"}, ValueError),
        ({"name": "\ud800"}, ValueError),
        ({"name": "A" * (MAX_NAME_LENGTH + 1)}, ValueError),
        ({"name": "A", "attempt": 0}, ValueError),
        ({"name": "A", "ordered": True}, ValueError),
    ],
    ids=["empty-name", "int-name", "none-name", "negative-delay", "nan-delay", "inf-delay",
         "nul-in-name", "newline-in-name", "lone-surrogate-name", "long-name", "attempt-0",
         "ordered-no-key"],
)
def test_invalid_construction_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bad names, a NaN, infinite or negative delay, attempt 0, ordered without a key: refused."""
    with pytest.raises(error, match=r"name|delay|attempt|key"):
        Action(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf, -1.0])
def test_replace_refuses_a_bad_delay_naming_it(delay: float) -> None:
    """A copy made with replace is checked like a new action, and the error names `delay`."""
    with pytest.raises(ValueError, match="delay"):
        Action("A").replace(delay=delay)


def test_printable_names_of_any_script_are_fine() -> None:
    """Names are checked for control characters only: spaces and other scripts are welcome."""
    for name in ("Send mail", "письмо", "メール", "a" * MAX_NAME_LENGTH):
        assert Action(name).name == name


def test_ordered_with_a_key_is_fine() -> None:
    """An ordered action with a key is valid."""
    assert Action("A", ordered=True, key="k").ordered


@pytest.mark.parametrize("format", FORMATS)
def test_decode_malformed_bytes(format: str) -> None:
    """Bytes that are not JSON/MessagePack at all raise DecodeError."""
    data = b"{nope" if format == "json" else b"\xc1"
    with pytest.raises(DecodeError):
        Action.decode(data, format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_truncated_input(format: str) -> None:
    """A valid encoding cut short raises DecodeError."""
    data = Action("A", {"x": 1}).encode(format)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        Action.decode(data[: len(data) // 2], format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_wrong_type_names_the_field(format: str) -> None:
    """A name that is an int raises DecodeError naming `$.name`."""
    with pytest.raises(DecodeError, match=r"\$\.name"):
        Action.decode(_encode_raw({"name": 5}, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_wrong_type_in_the_chain_names_the_field(format: str) -> None:
    """A bad field deep in the chain is named with its path."""
    raw = {"name": "A", "next": {"name": "B", "attempt": "two"}}
    with pytest.raises(DecodeError, match=r"\$\.next\.attempt"):
        Action.decode(_encode_raw(raw, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_missing_name(format: str) -> None:
    """An object without a name raises DecodeError."""
    with pytest.raises(DecodeError, match="name"):
        Action.decode(_encode_raw({"content": 1}, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_invalid_value_is_a_decode_error(format: str) -> None:
    """Well-typed but invalid values (attempt 0, empty name) raise DecodeError too."""
    for raw in ({"name": "A", "attempt": 0}, {"name": ""}, {"name": "A", "delay": -1}):
        with pytest.raises(DecodeError):
            Action.decode(_encode_raw(raw, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("value", [[1, 2], "text", 3, None], ids=["list", "str", "int", "null"])
def test_decode_unknown_shape(format: str, value: object) -> None:
    """Input that is not an object (a list, a string...) raises DecodeError."""
    with pytest.raises(DecodeError):
        Action.decode(_encode_raw(value, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_oversized(format: str) -> None:
    """Input over max_bytes raises DecodeError before it is parsed."""
    data = Action("A", "x" * 1000).encode(format)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="limit"):
        Action.decode(data, format, max_bytes=100)  # type: ignore[arg-type]
    assert Action.decode(data, format, max_bytes=len(data)).content == "x" * 1000  # type: ignore[arg-type]


def test_decode_oversized_by_default() -> None:
    """The default limit refuses a payload over 1 MiB."""
    data = b'{"name": "A", "content": "' + b"x" * (1 << 20) + b'"}'
    with pytest.raises(DecodeError):
        Action.decode(data)


def _nested(depth: int, format: str) -> bytes:
    """A chain of ``depth + 1`` actions, written by hand (no encoder involved)."""
    if format == "json":
        return ('{"name": "A", "next": ' * depth + '{"name": "Z"}' + "}" * depth).encode()
    # fixmap of 2 entries: "name": "A", "next": <the rest>
    return b"\x82\xa4name\xa1A\xa4next" * depth + b"\x81\xa4name\xa1Z"


@pytest.mark.parametrize("format", FORMATS)
def test_decode_10000_deep_chain_is_refused_clearly(format: str) -> None:
    """A 10,000-level `next` chain is a DecodeError saying it is nested too deeply."""
    with pytest.raises(DecodeError, match="nested too deeply"):
        Action.decode(_nested(10_000, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_decode_obeys_the_chain_limit(format: str) -> None:
    """A chain of MAX_CHAIN actions decodes; one more is refused naming the limit."""
    assert len(Action.decode(_nested(MAX_CHAIN - 1, format), format).chain()) == MAX_CHAIN  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=f"chain of {MAX_CHAIN + 1} actions"):
        Action.decode(_nested(MAX_CHAIN, format), format)  # type: ignore[arg-type]
    decoded = Action.decode(_nested(99, format), format, max_chain=100)  # type: ignore[arg-type]
    assert len(decoded.chain()) == 100


def test_encoding_a_10000_deep_chain_is_an_encode_error() -> None:
    """A chain built in Python too deep to encode raises EncodeError, not RecursionError."""
    action = Action("Z")
    for _ in range(10_000):
        action = Action("A", next=action)
    for format in FORMATS:
        with pytest.raises(EncodeError, match="nested too deeply"):
            action.encode(format)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"name": "A", "delay": 1e400}, r"\$\.delay"),  # JSON's way to say inf
        ({"name": "A", "delay": -1}, r"\$\.delay"),
        ({"name": "A\x00"}, r"Action name must be printable"),
        ({"name": "A", "next": {"name": "\u200b"}}, r"Action name must be printable.*\$\.next"),
        ({"name": "A", "hooks": ["ok", "b\x07d"]}, r"\$\.hooks"),
        ({"name": "A", "key": "k\x1b"}, r"\$\.key"),
        ({"name": "A" * (MAX_NAME_LENGTH + 1)}, r"\$\.name"),
        ({"name": "A", "next": {"name": "B", "delay": -5}}, r"\$\.next\.delay"),
    ],
    ids=["inf-delay", "negative-delay", "nul-name", "zero-width-name-in-next", "bell-in-hook",
         "escape-in-key", "long-name", "bad-delay-in-next"],
)
@pytest.mark.parametrize("format", FORMATS)
def test_decode_refuses_bad_controls_naming_the_field(
    raw: dict[str, object], pattern: str, format: str
) -> None:
    """Control fields out of range are a DecodeError naming the field (its path or its name)."""
    with pytest.raises(DecodeError, match=pattern):
        Action.decode(_encode_raw(raw, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_msgpack_nan_and_inf_delay_are_refused(delay: float) -> None:
    """MessagePack can carry NaN and inf: both are refused, naming `$.delay`."""
    with pytest.raises(DecodeError, match=r"\$\.delay"):
        Action.decode(msgspec.msgpack.encode({"name": "A", "delay": delay}), "msgpack")


def test_json_nan_literal_is_refused() -> None:
    """A bare NaN in JSON is not JSON: DecodeError."""
    with pytest.raises(DecodeError):
        Action.decode(b'{"name": "A", "delay": NaN}')


@pytest.mark.parametrize("format", FORMATS)
def test_unknown_fields_are_refused_naming_them(format: str) -> None:
    """Strict by default: a misspelt field, at the top or in the chain, is named in the error."""
    with pytest.raises(DecodeError, match="dealy"):
        Action.decode(_encode_raw({"name": "A", "dealy": 5}, format), format)  # type: ignore[arg-type]
    raw = {"name": "A", "next": {"name": "B", "bogus": 1}}
    with pytest.raises(DecodeError, match=r"bogus.*\$\.next"):
        Action.decode(_encode_raw(raw, format), format)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", FORMATS)
def test_lenient_decoding_drops_unknown_fields(format: str) -> None:
    """strict=False (data from a newer version) drops unknown fields along the chain."""
    raw = {"name": "A", "later": 1, "next": {"name": "B", "ornament": "x", "content": 2}}
    action = Action.decode(_encode_raw(raw, format), format, strict=False)  # type: ignore[arg-type]
    assert action.name == "A" and action.next is not None
    assert (action.next.name, action.next.content) == ("B", 2)
    with pytest.raises(DecodeError, match=r"\$\.next\.delay"):
        bad = {"name": "A", "next": {"name": "B", "delay": -1, "later": 1}}
        Action.decode(_encode_raw(bad, format), format, strict=False)  # type: ignore[arg-type]


def test_msgpack_cannot_carry_2_to_the_64_an_encode_error_names_the_action() -> None:
    """An int of 2**64 in content is an EncodeError (a ValidationError) naming the action."""
    action = Action("Big", {"n": 2**64})
    with pytest.raises(EncodeError, match=action.id) as info:
        action.encode("msgpack")
    assert isinstance(info.value, ValidationError)
    assert Action.decode(action.encode("json")).content == {"n": 2**64}  # JSON can


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\xfd", b'{"name": "\xff\xfe"}', b'{"name": "A", "content": "\xc3\x28"}'],
    ids=["garbage", "in-name", "in-content"],
)
def test_decode_non_utf8(data: bytes) -> None:
    """Bytes that are not UTF-8 raise DecodeError."""
    with pytest.raises(DecodeError):
        Action.decode(data)


def test_decode_error_is_a_validation_error() -> None:
    """DecodeError is a ValidationError (bad input, never retried)."""
    with pytest.raises(ValidationError) as info:
        Action.decode(b"[]")
    assert not info.value.retryable
    assert info.value.kind == "decode"
