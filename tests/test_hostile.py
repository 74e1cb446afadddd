# SPDX-License-Identifier: MIT
"""Hostile input at the door: whatever comes in is refused with an EchoError or accepted.

Property tests throw arbitrary JSON and MessagePack documents, arbitrary bytes
and arbitrary Actions at decoding, admission and signing; named tests pin
each limit (delay, chain, size) and the reset of what a sender may not choose.
"""

from __future__ import annotations

import gc
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from echo_actors import (
    Action,
    DecodeError,
    EchoError,
    EncodeError,
    Fate,
    LicenseError,
    Plan,
    Signature,
    ValidationError,
    sign,
    verify,
)
from echo_actors.action import MAX_CHAIN
from echo_actors.admission import admit, check_admissible
from echo_actors.nonces import MemoryNonceStore, NonceStoreError
from echo_actors.production.redis import (
    FORMAT_VERSION,
    AssignError,
    RedisNonceStore,
)
from echo_actors.production.redis._wire import _decode_wire, _encode_wire, _entries

LIMIT = 20.0

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(PROPERTY, max_examples=100)

FIELDS = list(Action.__struct_fields__)

# JSON-like values, with the awkward ones: NaN, inf, huge ints, control characters.
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from([*FIELDS, "x", "dealy", ""]) | st.text(max_size=5),
                      inner, max_size=5),
    max_leaves=20,
)
# Documents shaped like actions, so that decoding gets past the first field.
_action_like = st.fixed_dictionaries(
    {"name": st.text(max_size=8) | st.integers()},
    optional={field: _json_values for field in FIELDS if field != "name"},
)
_documents = _json_values | _action_like | st.recursive(
    _action_like, lambda inner: st.fixed_dictionaries({"name": st.just("A"), "next": inner}),
    max_leaves=5,
)


def _encode_document(document: Any, format: str) -> bytes | None:
    """The document in ``format``, or None where the format cannot carry it."""
    try:
        if format == "json":
            return msgspec.json.encode(document)
        return msgspec.msgpack.encode(document)
    except (OverflowError, TypeError, ValueError):
        return None


def _outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call, and turn an EchoError into a value: anything else raised fails the test."""
    try:
        return call(*args, **kwargs)
    except EchoError as exc:
        assert str(exc), "an EchoError must say what is wrong"
        return exc


@PROPERTY
@given(document=_documents, format=st.sampled_from(["json", "msgpack"]))
def test_arbitrary_documents_decode_or_are_refused(document: Any, format: str) -> None:
    """Any JSON or MessagePack document decodes to a valid Action or raises DecodeError."""
    data = _encode_document(document, format)
    if data is None:
        return
    for strict in (True, False):
        result = _outcome(Action.decode, data, format, strict=strict)
        if isinstance(result, EchoError):
            assert isinstance(result, DecodeError)
            continue
        assert isinstance(result, Action)
        assert result.chain()[-1] is not None and len(result.chain()) <= MAX_CHAIN
        for link in result.chain():
            assert math.isfinite(link.delay) and link.delay >= 0
        _check_admission(result)


@PROPERTY
@given(data=st.binary(max_size=200), format=st.sampled_from(["json", "msgpack"]))
def test_arbitrary_bytes_decode_or_are_refused(data: bytes, format: str) -> None:
    """Arbitrary bytes are a DecodeError or, rarely, a valid action."""
    result = _outcome(Action.decode, data, format)
    assert isinstance(result, DecodeError | Action)


@FEWER
@given(data=st.binary(max_size=200) | _documents.map(
    lambda d: _encode_document([FORMAT_VERSION, 1, d, ""], "msgpack") or b""
))
def test_arbitrary_redis_entries_decode_or_are_refused(data: bytes) -> None:
    """Any stream payload is a DecodeError or an action with a sane attempt."""
    result = _outcome(_decode_wire, data, 1 << 20, MAX_CHAIN)
    if isinstance(result, EchoError):
        assert isinstance(result, DecodeError)
        return
    action, attempt, admission, reply = result
    assert isinstance(action, Action) and attempt >= 1 and isinstance(admission, str)
    assert isinstance(reply, bool)


_names = st.text(min_size=1, max_size=12)
_contents = _json_values


@st.composite
def _actions(draw: st.DrawFn) -> Action | None:
    """An Action built in Python from arbitrary values, or None where the type refused it."""
    following = None
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        try:
            following = Action(draw(_names), draw(_contents), next=following)
        except (TypeError, ValueError):
            return None
    try:
        return Action(
            draw(_names), draw(_contents),
            metadata=draw(st.dictionaries(st.text(max_size=5), _json_values, max_size=3)),
            delay=draw(st.floats(allow_nan=True, allow_infinity=True)),
            hooks=tuple(draw(st.lists(_names, max_size=2))),
            next=following,
            attempt=draw(st.integers(min_value=-2, max_value=2**40)),
            key=draw(st.none() | _names),
            created_at=draw(st.floats(allow_nan=True, allow_infinity=True)),
        )
    except (TypeError, ValueError):
        return None  # refused at construction: the Python door


def _check_admission(action: Action) -> None:
    fate = Fate()
    checked = _outcome(check_admissible, action, fate)
    assert checked is None or isinstance(checked, ValidationError)
    admitted = admit(action)
    assert [link.attempt for link in admitted.chain()] == [1] * len(action.chain())


@PROPERTY
@given(action=_actions())
def test_arbitrary_actions_admit_encode_sign_and_verify(action: Action | None) -> None:
    """Admission, encoding, signing and verifying an arbitrary Action raise only EchoErrors."""
    if action is None:
        return
    _check_admission(action)
    for format in ("json", "msgpack"):
        encoded = _outcome(action.encode, format)
        if isinstance(encoded, EchoError):
            assert isinstance(encoded, EncodeError)
        else:
            decoded = _outcome(Action.decode, encoded, format)
            assert isinstance(decoded, Action | DecodeError)
    signed = _outcome(sign, action, "k")
    if isinstance(signed, EchoError):
        assert isinstance(signed, LicenseError)
        return
    store = MemoryNonceStore()
    assert _outcome(verify, signed, ["k"], nonces=store, admission="a") is None
    assert isinstance(_outcome(verify, signed, ["k"], nonces=store, admission="b"), LicenseError)
    assert isinstance(_outcome(verify, signed, ["other"]), LicenseError)


@FEWER
@given(action=_actions(), license=st.text(max_size=150))
def test_arbitrary_licenses_are_refused(action: Action | None, license: str) -> None:
    """Any license string that was not made by sign is a LicenseError, never a crash."""
    if action is None:
        return
    result = _outcome(verify, action.replace(license=license), ["k"])
    assert isinstance(result, LicenseError)


# Named tests: the limits at admission


@pytest.mark.parametrize("delay", [30 * 86400.0 + 1, 1e12, 1.7e308])
def test_huge_delay_refused_at_admission(delay: float) -> None:
    """A delay over Fate.max_delay (default 30 days) is a ValidationError naming it."""
    with pytest.raises(ValidationError, match="max_delay"):
        check_admissible(Action("A", delay=delay), Fate())
    check_admissible(Action("A", delay=30 * 86400.0), Fate())


@pytest.mark.parametrize("format", ["json", "msgpack"])
def test_huge_delay_refused_when_decoded_and_admitted(format: str) -> None:
    """A decoded delay of 1e12 decodes (finite, >= 0) and is refused at admission."""
    data = _encode_document({"name": "A", "delay": 1e12}, format)
    assert data is not None
    action = Action.decode(data, format)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="delay 1e\\+12 s"):
        check_admissible(action, Fate())
    chained = Action("A", next=action)
    with pytest.raises(ValidationError, match="max_delay"):
        check_admissible(chained, Fate(max_delay=60))


def test_10000_deep_chain_refused_clearly_at_admission() -> None:
    """A 10,000-deep chain built in Python is refused naming max_chain, not a RecursionError."""
    action = Action("Z")
    for _ in range(10_000):
        action = Action("A", next=action)
    with pytest.raises(ValidationError, match="more than 64 actions"):
        check_admissible(action, Fate())


def test_one_chain_limit_for_python_and_decoded_actions() -> None:
    """Fate.max_chain is the number both doors obey."""
    fate = Fate(max_chain=5)
    action = Action("E")
    for _ in range(4):
        action = Action("A", next=action)
    check_admissible(action, fate)
    longer = Action("A", next=action)
    with pytest.raises(ValidationError, match="more than 5"):
        check_admissible(longer, fate)
    with pytest.raises(DecodeError, match="limit of 5"):
        Action.decode(longer.encode(), max_chain=fate.max_chain)
    assert len(Action.decode(action.encode(), max_chain=fate.max_chain).chain()) == 5


def test_max_chain_and_max_delay_are_validated() -> None:
    """Fate refuses a chain limit beyond the ceiling and a non-finite max_delay."""
    for bad in ({"max_chain": 0}, {"max_chain": 10_000}, {"max_delay": math.inf},
                {"max_delay": 0.0}, {"max_delay": math.nan}):
        with pytest.raises(ValueError):
            Fate(**bad)  # type: ignore[arg-type]


def test_a_chain_at_the_ceiling_encodes_decodes_and_signs() -> None:
    """The longest allowed chain never meets Python's recursion limit."""
    fate = Fate(max_chain=256)
    action = Action("Z", {"deep": [[1]]})
    for n in range(255):
        action = Action("A", {"n": n}, next=action)
    check_admissible(action, fate)
    for format in ("json", "msgpack"):
        decoded = Action.decode(action.encode(format), format, max_chain=256)  # type: ignore[arg-type]
        assert decoded == action
    verify(sign(action, "k"), ["k"])


def test_an_action_in_a_reference_cycle_is_refused_at_admission() -> None:
    """Actions are untracked by the garbage collector, which is safe because one whose
    content or metadata refers back to it (a cycle) never passes the door."""
    assert not gc.is_tracked(Action("A", {"x": [1]}))
    content: dict[str, Any] = {}
    looped = Action("A", content)
    content["self"] = looped
    holder = type("Holder", (), {})()
    held = Action("B", [holder], metadata={"m": 1})
    holder.action = held
    inside: list[Any] = []
    via_metadata = Action("C", metadata={"list": inside})
    inside.append(via_metadata)
    for action in (looped, held, via_metadata):
        with pytest.raises(EncodeError):
            check_admissible(action, Fate())


def test_size_checked_for_python_built_actions() -> None:
    """An action built in Python and over max_action_bytes is refused at admission."""
    with pytest.raises(ValidationError, match="max_action_bytes"):
        check_admissible(Action("A", "x" * 2000), Fate(max_action_bytes=1000))
    with pytest.raises(EncodeError, match="cannot be encoded"):
        check_admissible(Action("A", 2**64), Fate())
    with pytest.raises(ValidationError, match="expected an Action"):
        check_admissible("A", Fate())  # type: ignore[arg-type]


def test_attempt_reset_on_admission() -> None:
    """attempt=99 and an old created_at from a sender are reset along the whole chain."""
    action = Action("A", attempt=99, created_at=1.0, next=Action("B", attempt=5, created_at=2.0))
    admitted = admit(action, now=1000.0)
    assert [(a.attempt, a.created_at) for a in admitted.chain()] == [(1, 1000.0), (1, 1000.0)]
    assert [a.id for a in admitted.chain()] == [a.id for a in action.chain()]
    assert admitted.replace(attempt=1, created_at=0) == action.replace(
        attempt=1, created_at=0, next=admitted.next
    )


def test_a_fresh_action_is_admitted_in_place_and_a_chain_copied() -> None:
    """admit(fresh=True) sets attempt and created_at on the decoded action itself; a chain
    is still rebuilt, so that every link is reset."""
    action = Action.decode(Action("A", 1, attempt=7, created_at=1.0).encode())
    admitted = admit(action, now=1000.0, fresh=True)
    assert admitted is action and (action.attempt, action.created_at) == (1, 1000.0)
    chain = Action.decode(Action("A", attempt=3, next=Action("B", attempt=4)).encode())
    admitted = admit(chain, now=5.0, fresh=True)
    assert [(a.attempt, a.created_at) for a in admitted.chain()] == [(1, 5.0), (1, 5.0)]
    assert chain.attempt == 3  # the chain was copied, not changed


def test_admit_keeps_what_the_sender_controls() -> None:
    """Name, content, metadata, delay, hooks, key, id and license pass through admit unchanged."""
    action = sign(Action("A", {"c": 1}, metadata={"m": 2}, delay=3.0, hooks=("h",),
                         after=("z",), key="k", ordered=True, id="my-id"), "secret")
    admitted = admit(action)
    for field in ("name", "content", "metadata", "delay", "hooks", "after", "key", "ordered",
                  "id", "license"):
        assert getattr(admitted, field) == getattr(action, field)


def test_read_replies_in_every_shape_give_the_same_entries() -> None:
    """An XREADGROUP reply as the fetcher's own connection reads it (RESP2, flat fields),
    as redis-py parses it (RESP2 or RESP3), or empty, gives the same ``(id, fields)``."""
    bare = [[b"s", [[b"1-0", [b"a", b"x", b"w", b"1"]], [b"2-0", [b"a", b"y"]]]]]
    parsed = [[b"s", [(b"1-0", {b"a": b"x", b"w": b"1"}), (b"2-0", {b"a": b"y"})]]]
    resp3 = {b"s": [[(b"1-0", {b"a": b"x", b"w": b"1"}), (b"2-0", {b"a": b"y"})]]}
    expected = [(b"1-0", {b"a": b"x", b"w": b"1"}), (b"2-0", {b"a": b"y"})]
    assert _entries(bare) == _entries(parsed) == _entries(resp3) == expected
    assert _entries(None) == _entries([]) == _entries({}) == []


def test_wire_envelope_round_trip_and_versions() -> None:
    """The Redis wire keeps the workers' attempt and admission; newer writers are tolerated."""
    action = Action("A", 1)
    decoded, attempt, admission, reply = _decode_wire(
        _encode_wire(action, 3, "1-0", True), 1 << 20, 64
    )
    assert (decoded, attempt, admission, reply) == (action, 3, "1-0", True)
    raw = {"name": "A", "ornament": "t"}
    newer = msgspec.msgpack.encode([FORMAT_VERSION + 1, 1, raw, "", False, "a field of v3"])
    assert _decode_wire(newer, 1 << 20, 64)[0].name == "A"
    version_1 = msgspec.msgpack.encode([1, 2, {"name": "A"}, "1-0"])
    assert _decode_wire(version_1, 1 << 20, 64)[1:] == (2, "1-0", False)
    same = msgspec.msgpack.encode([FORMAT_VERSION, 1, raw, ""])
    with pytest.raises(DecodeError, match="ornament"):
        _decode_wire(same, 1 << 20, 64)
    legacy = msgspec.msgpack.encode({"name": "A", "attempt": 99})
    assert _decode_wire(legacy, 1 << 20, 64)[1:] == (1, "", False)
    for bad in ([FORMAT_VERSION, 0, raw], [FORMAT_VERSION], "text", [FORMAT_VERSION, 1, 5]):
        with pytest.raises(DecodeError):
            _decode_wire(msgspec.msgpack.encode(bad), 1 << 20, 64)


# On Redis: the worker's door


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll state held by Redis until true, bounded (another process's state: no event)."""
    pause = threading.Event()
    deadline = time.monotonic() + LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.05)


FAST = Fate(backoff_base=0.001, backoff_cap=0.01, backoff_jitter=0.0)


class Runs:
    """What a plan function saw, and an event once ``expected`` runs succeeded."""

    def __init__(self, expected: int, failures: int = 0) -> None:
        self.expected, self.failures = expected, failures
        self.seen: list[Any] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, content: Any) -> Any:
        with self.lock:
            self.seen.append(content)
            if len(self.seen) <= self.failures:
                raise RuntimeError(f"failure {len(self.seen)}")
            if len(self.seen) - self.failures >= self.expected:
                self.done.set()
        return content


def _plan(runs: Runs) -> Plan:
    return Plan().with_signature(Signature("Job")).with_function("Job", runs).build()


@pytest.mark.timeout(60)
def test_redis_attempt_comes_from_the_workers_not_the_submitter(productions,
                                                                make_sequence) -> None:
    """attempt=99 from a submitter is ignored: the action gets its 3 attempts and succeeds."""
    runs = Runs(expected=1, failures=2)
    consumer = productions(fate=FAST, delay_poll=0.01)
    make_sequence(_plan(runs), consumer, fate=FAST)
    productions().assign(Action("Job", "x", attempt=99))
    assert runs.done.wait(LIMIT)
    assert runs.seen == ["x"] * 3
    assert consumer.counts["deferred"] == 2  # each retry went through the sorted set


@pytest.mark.timeout(60)
def test_redis_attempts_are_counted_across_parked_retries(productions, make_sequence) -> None:
    """An action that always fails runs max_attempts times, then is dead-lettered."""
    runs = Runs(expected=10**6, failures=10**6)
    consumer = productions(fate=FAST, delay_poll=0.01)
    make_sequence(_plan(runs), consumer, fate=FAST)
    productions().assign(Action("Job", "y"))
    wait_until(lambda: len(consumer.dead_letters()) == 1, "the dead letter")
    [letter] = consumer.dead_letters()
    assert (letter.error_kind, letter.attempts, len(runs.seen)) == ("execution", 3, 3)
    assert letter.admission and letter.admission != letter.source  # kept across parks


@pytest.mark.timeout(60)
def test_redis_replay_within_window_refused(productions, make_sequence) -> None:
    """The same signed action assigned twice runs once; the replay is a license dead letter."""
    fate = FAST.replace(license_keys=("k",))
    runs = Runs(expected=1)
    consumer = productions(fate=fate)
    make_sequence(_plan(runs), consumer, fate=fate)
    signed = sign(Action("Job", "pay"), "k")
    submitter = productions()
    submitter.assign(signed)
    submitter.assign(signed)
    assert runs.done.wait(LIMIT)
    wait_until(lambda: len(consumer.dead_letters()) == 1, "the refused replay")
    [letter] = consumer.dead_letters()
    assert letter.error_kind == "license" and "replay" in letter.message
    assert runs.seen == ["pay"]


@pytest.mark.timeout(60)
def test_redis_requeued_dead_letter_is_not_a_replay(productions, make_sequence) -> None:
    """A signed action dead-lettered after running, then requeued, passes its license again."""
    fate = FAST.replace(license_keys=("k",), max_attempts=1)
    runs = Runs(expected=1, failures=1)
    consumer = productions(fate=fate)
    make_sequence(_plan(runs), consumer, fate=fate)
    productions().assign(sign(Action("Job", "again"), "k"))
    wait_until(lambda: len(consumer.dead_letters()) == 1, "the dead letter")
    [letter] = consumer.dead_letters()
    assert letter.error_kind == "execution" and letter.admission
    assert len(consumer.requeue()) == 1
    assert runs.done.wait(LIMIT)
    assert runs.seen == ["again", "again"]
    wait_until(lambda: consumer.stats().dead_letters == 0, "no dead letter left")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("holder", ["same", "other"])
def test_redis_redelivery_of_the_same_entry_passes(productions, make_sequence, client,
                                                   holder: str) -> None:
    """An entry redelivered after a worker died keeps its admission; another admission can't."""
    fate = FAST.replace(license_keys=("k",))
    runs = Runs(expected=1)
    submitter = productions()
    signed = sign(Action("Job", "once"), "k")
    [entry_id] = submitter.assign_many([signed])
    # A worker read the entry, claimed the nonce for it and died before acknowledging.
    client.xgroup_create(submitter.stream, submitter.group, id="0", mkstream=True)
    client.xreadgroup(submitter.group, "ghost", {submitter.stream: ">"}, count=1)
    nonce = (signed.license or "").split(".")[3]
    admission = entry_id if holder == "same" else "9-9"
    assert submitter.nonces.claim(nonce, admission, time.time() + 60)
    consumer = productions(fate=fate, visibility_timeout=0.2)
    make_sequence(_plan(runs), consumer, fate=fate)
    if holder == "same":
        assert runs.done.wait(LIMIT)
        assert consumer.counts["claimed"] == 1
    else:
        wait_until(lambda: len(consumer.dead_letters()) == 1, "the refused replay")
        assert consumer.dead_letters()[0].error_kind == "license" and runs.seen == []


@pytest.mark.timeout(60)
def test_redis_assign_many_refuses_bad_actions_one_by_one(productions, client) -> None:
    """A 2**64 int, a too long delay and a non-Action are refused; the good ones are added."""
    submitter = productions()
    actions: list[Any] = [Action("Job", 1), Action("Job", 2**64), Action("Job", delay=1e12),
                          "not an action", Action("Job", 4)]
    with pytest.raises(AssignError) as info:
        submitter.assign_many(actions)
    error = info.value
    assert [index for index, _, _ in error.refused] == [1, 2, 3]
    assert [type(exc).__name__ for _, _, exc in error.refused] == [
        "EncodeError", "ValidationError", "ValidationError"]
    assert actions[1].id in str(error.refused[0][2])
    assert error.ids[1:4] == [None, None, None] and all(error.ids[i] for i in (0, 4))
    assert client.xlen(submitter.stream) == 2
    with pytest.raises(EncodeError, match="cannot be encoded"):
        submitter.assign(Action("Job", 2**64))
    with pytest.raises(ValueError, match="over the limit"):  # still a ValueError too
        productions(fate=Fate(max_action_bytes=100)).assign(Action("Job", "x" * 200))


@pytest.mark.timeout(60)
def test_redis_unknown_fields_typo_refused_newer_version_tolerated(productions, make_sequence,
                                                                   client) -> None:
    """Same-version entry with an unknown field: dead letter naming it; a newer one runs."""
    runs = Runs(expected=1)
    consumer = productions()
    raw = {"name": "Job", "content": "new", "ornament": "abc"}
    client.xadd(consumer.stream, {"a": msgspec.msgpack.encode([FORMAT_VERSION, 1, raw, ""])})
    client.xadd(consumer.stream,
                {"a": msgspec.msgpack.encode([FORMAT_VERSION + 1, 1, raw, "", False, "later"])})
    make_sequence(_plan(runs), consumer)
    assert runs.done.wait(LIMIT)
    wait_until(lambda: len(consumer.dead_letters()) == 1, "the dead letter")
    [letter] = consumer.dead_letters()
    assert letter.error_kind == "decode" and "ornament" in letter.message
    assert runs.seen == ["new"]


def test_redis_nonce_store_claims_and_fails_closed(client) -> None:
    """SET NX PX: one admission per nonce; an unreachable server refuses (fail closed)."""
    store = RedisNonceStore(client, prefix=f"h-{uuid.uuid4().hex[:8]}:")
    assert store.claim("n1", "a", time.time() + 60)
    assert store.claim("n1", "a", time.time() + 60)
    assert not store.claim("n1", "b", time.time() + 60)
    assert store.holds("n1", "a") and not store.holds("n1", "b") and not store.holds("n2", "a")
    ttl = client.pttl(store.prefix + "n1")
    assert 0 < ttl <= (60 + store.window) * 1000
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    with pytest.raises(NonceStoreError):
        RedisNonceStore(dead).claim("n", "a", time.time() + 60)
    with pytest.raises(LicenseError, match="could not be recorded"):
        verify(sign(Action("A"), "k"), ["k"], nonces=RedisNonceStore(dead), admission="a")


# A running Sequence and the command line, under arbitrary input


_SIMULATED: dict[str, Any] = {}


def _simulated_sequence() -> Any:
    """One Sequence on the simulation clock for every example (delays cost no wall time)."""
    from echo_actors import Sequence  # noqa: PLC0415

    if "sequence" not in _SIMULATED:
        plan = (Plan().with_signature(Signature("A")).with_function("A", lambda x: x)
                .with_signature(Signature("B")).with_function("B", lambda x: [x, x]))
        sequence = Sequence(plan.build(), sites=2, runtime="simulation",
                            fate=Fate(runtime="simulation", backoff_base=0.001))
        _SIMULATED["sequence"] = sequence.start()
    return _SIMULATED["sequence"]


@pytest.fixture(scope="module", autouse=True)
def _stop_simulated() -> Iterator[None]:
    yield
    sequence = _SIMULATED.pop("sequence", None)
    if sequence is not None:
        sequence.shutdown(drain=False)


@PROPERTY
@given(action=_actions(), name=st.sampled_from(["A", "B", "C"]))
def test_arbitrary_actions_submitted_are_refused_or_end(action: Action | None, name: str) -> None:
    """Any Action submitted is refused with an EchoError, or ends: a value or an EchoError."""
    if action is None:
        return
    sequence = _simulated_sequence()
    action = action.replace(name=name)  # one the plan serves, or not (C)
    future = _outcome(sequence.submit, action)
    if isinstance(future, EchoError):
        assert isinstance(future, ValidationError)
        return
    # A value, or the final EchoError; the clock is virtual: a delay of up to max_delay
    # (30 days) and its retries pass in no wall time.
    ended = _outcome(future.get, timeout=100 * 86400.0)
    assert not isinstance(ended, EchoError) or ended.kind in {
        "routing", "license", "validation", "execution", "decode", "encode"}


def test_the_sequence_still_runs_after_the_hostile_examples() -> None:
    """After every hostile example: the same Sequence runs a plain action, nothing leaked."""
    sequence = _simulated_sequence()
    assert sequence.submit(Action("A", "still here")).get(timeout=LIMIT) == "still here"
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert stats.outstanding == 0
    assert stats.accepted == stats.completed + stats.dead_lettered + stats.cancelled


_lines = (
    _documents.map(lambda d: msgspec.json.encode(d).decode())
    | st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t)
)


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(_lines, min_size=1, max_size=60))
def test_arbitrary_files_cost_one_bad_line_each(lines: list[str], tmp_path_factory: Any) -> None:
    """`echo-actors run` on arbitrary lines: no traceback, and every line is counted once."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    lines = [line for line in lines if line.strip()] or ['{"name": "Read"}']
    path = tmp_path_factory.mktemp("hostile") / "actions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    script = Path(sys.executable).parent / "echo-actors"
    quickstart = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    done = subprocess.run(
        [str(script), "run", f"{quickstart}:plan", str(path), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=LIMIT, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stderr
    summary = msgspec.json.decode(done.stdout.splitlines()[-1])
    assert summary["completed"] + summary["dead_lettered"] + summary["bad_lines"] == len(lines)
