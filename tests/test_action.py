# SPDX-License-Identifier: MIT
"""Action: pure data with unique ids, JSON/MessagePack round trips and strict decoding."""

from __future__ import annotations

import msgspec
import pytest

from echo_actors import Action, DecodeError, ValidationError

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


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, TypeError),
        ({"name": 5}, TypeError),
        ({"name": None}, TypeError),
        ({"name": "A", "delay": -0.1}, ValueError),
        ({"name": "A", "attempt": 0}, ValueError),
        ({"name": "A", "ordered": True}, ValueError),
    ],
    ids=["empty-name", "int-name", "none-name", "negative-delay", "attempt-0", "ordered-no-key"],
)
def test_invalid_construction_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bad names, a negative delay, attempt 0 and an ordered action without a key are refused."""
    with pytest.raises(error):
        Action(**kwargs)  # type: ignore[arg-type]


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


def test_decode_deeply_nested_chain_does_not_crash() -> None:
    """A 10,000-level `next` chain, as JSON text, decodes or raises DecodeError: nothing else."""
    depth = 10_000
    text = '{"name": "A", "next": ' * depth + '{"name": "Z"}' + "}" * depth
    try:
        action = Action.decode(text.encode())
    except DecodeError:
        return
    assert len(action.chain()) == depth + 1


def test_decode_deeply_nested_msgpack_chain_does_not_crash() -> None:
    """The same 10,000-level chain as MessagePack decodes or raises DecodeError."""
    depth = 10_000
    # fixmap of 2 entries: "name": "A", "next": <the rest>
    prefix = b"\x82\xa4name\xa1A\xa4next"
    data = prefix * depth + b"\x81\xa4name\xa1Z"
    try:
        action = Action.decode(data, "msgpack")
    except DecodeError:
        return
    assert len(action.chain()) == depth + 1


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
