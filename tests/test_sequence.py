# SPDX-License-Identifier: MIT
"""Sequence: every step of an action's life, its outcomes, and the figures that count them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pykka
import pytest
from logs import capture_events

from echo_actors import (
    Action,
    ActionTimeoutError,
    CancellationError,
    DeadLetter,
    ExecutionError,
    Fate,
    LicenseError,
    Life,
    Plan,
    Production,
    RetryPolicy,
    RoutingError,
    Sequence,
    Signature,
    Site,
    ValidationError,
    sign,
)
from echo_actors.runtime import Runtime, get_runtime

pytestmark = pytest.mark.timeout(30)

LIMIT = 10.0
FAST = Fate(backoff_base=0.001, backoff_cap=0.01)
"""Default settings with retries that come back at once."""

MakeLife = Callable[..., Life]
MakeSequence = Callable[..., Sequence]
Spawn = Callable[..., "pykka.Future[Any]"]


def _plan(**functions: Callable[..., Any]) -> Plan:
    plan = Plan()
    for name, function in functions.items():
        plan.with_signature(Signature(name)).with_function(name, function)
    return plan.build()


class Point(msgspec.Struct):
    """Content type of the validation tests."""

    x: int
    y: int


def _identity(content: Any) -> Any:
    return content


def _raise_value_error(content: Any) -> Any:
    raise ValueError(f"boom {content}")


# Success, retries, dead letters


def test_success_result(runtime: str, make_sequence: MakeSequence) -> None:
    """A submitted action's future gets the function's result."""
    sequence = make_sequence(_plan(Add=lambda n: n + 1), sites=2, runtime=runtime)
    assert sequence.submit(Action("Add", 41)).get(timeout=LIMIT) == 42
    futures = sequence.submit_many([Action("Add", n) for n in range(100)])
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(1, 101))
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.dead_lettered) == (101, 101, 0)
    assert (stats.cancelled, stats.retried, stats.outstanding) == (0, 0, 0)


def test_submit_starts_the_sequence(make_sequence: MakeSequence) -> None:
    """Submitting to a Sequence that was not started starts it."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, start=False)
    assert sequence.submit(Action("Echo", "x")).get(timeout=LIMIT) == "x"


def test_retry_then_success(runtime: str, make_sequence: MakeSequence) -> None:
    """A function that fails twice then succeeds, with 3 attempts: result delivered, 2 retries."""
    attempts: list[int] = []

    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return n * 10

    fate = FAST.replace(max_attempts=3)
    sequence = make_sequence(_plan(Flaky=flaky), sites=1, fate=fate, runtime=runtime)
    with capture_events() as logs:
        assert sequence.submit(Action("Flaky", 4)).get(timeout=LIMIT) == 40
        assert sequence.join(LIMIT)
    assert attempts == [4, 4, 4]
    stats = sequence.stats()
    assert stats.retried == 2
    assert (stats.completed, stats.dead_lettered, stats.outstanding) == (1, 0, 0)
    retries = [e for e in logs if e["event"] == "action_retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["action_name"] == "Flaky" and "action_id" in e for e in retries)
    assert sequence.dead_letters() == []


def test_retries_exhausted_dead_letter(runtime: str, make_sequence: MakeSequence) -> None:
    """Out of attempts: a dead letter of kind "execution", the original error as __cause__."""
    calls: list[int] = []

    def boom(n: int) -> int:
        calls.append(n)
        raise ValueError(f"boom {n}")

    fate = FAST.replace(max_attempts=3)
    sequence = make_sequence(_plan(Boom=boom), sites=2, fate=fate, runtime=runtime)
    action = Action("Boom", 7)
    with capture_events() as logs:
        future = sequence.submit(action)
        with pytest.raises(ExecutionError) as info:
            future.get(timeout=LIMIT)
        assert sequence.join(LIMIT)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "boom 7"
    assert calls == [7, 7, 7]
    [letter] = sequence.dead_letters()
    assert letter.error_kind == "execution"
    assert letter.attempts == 3
    assert letter.action.id == action.id
    assert "boom 7" in letter.message
    stats = sequence.stats()
    assert (stats.retried, stats.dead_lettered, stats.completed) == (2, 1, 0)
    [event] = [e for e in logs if e["event"] == "action_dead_lettered"]
    assert event["action_id"] == action.id and event["error_kind"] == "execution"
    assert event["attempt"] == 3 and event["action_name"] == "Boom"


def test_signature_retry_policy_overrides_fate(make_sequence: MakeSequence) -> None:
    """A signature's own retry policy wins over the Sequence's max_attempts."""
    calls: list[int] = []

    def boom(n: int) -> int:
        calls.append(n)
        raise ValueError("boom")

    policy = RetryPolicy(max_attempts=5, base=0.001, cap=0.01)
    plan = Plan().with_signature(Signature("Boom", retry=policy)).with_function("Boom", boom)
    sequence = make_sequence(plan.build(), sites=1, fate=FAST.replace(max_attempts=1))
    with pytest.raises(ExecutionError):
        sequence.submit(Action("Boom", 1)).get(timeout=LIMIT)
    assert len(calls) == 5
    assert sequence.dead_letters()[0].attempts == 5


def test_dead_letter_fields(runtime: str, make_sequence: MakeSequence) -> None:
    """A dead letter holds the action, the error kind and message, attempts and times."""
    fate = FAST.replace(max_attempts=2)
    sequence = make_sequence(_plan(Boom=_raise_value_error), sites=1, fate=fate, runtime=runtime)
    action = Action("Boom", "payload", metadata={"trace": "t-1"})
    with pytest.raises(ExecutionError):
        sequence.submit(action).get(timeout=LIMIT)
    [letter] = sequence.dead_letters()
    assert isinstance(letter, DeadLetter)
    assert letter.action.id == action.id
    assert letter.action.name == "Boom" and letter.action.content == "payload"
    assert letter.action.metadata == {"trace": "t-1"}
    assert letter.action.attempt == 2
    assert letter.error_kind == "execution"
    assert "boom payload" in letter.message
    assert letter.attempts == 2
    assert letter.first_at == action.created_at
    assert letter.first_at <= letter.failed_at
    decoded = msgspec.json.decode(msgspec.json.encode(letter), type=DeadLetter)
    assert decoded == letter


# Permanent errors


def test_unknown_name_is_a_routing_error_not_retried(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """An action no function serves fails with RoutingError at once."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, fate=FAST, runtime=runtime)
    with pytest.raises(RoutingError, match="Unknown"):
        sequence.submit(Action("Unknown", 1)).get(timeout=LIMIT)
    assert sequence.join(LIMIT)
    [letter] = sequence.dead_letters()
    assert (letter.error_kind, letter.attempts) == ("routing", 1)
    assert sequence.stats().retried == 0
    assert sequence.submit(Action("Echo", "still fine")).get(timeout=LIMIT) == "still fine"


def test_bad_content_is_a_validation_error_not_retried(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """Content that does not convert fails with ValidationError naming the field; no call."""
    calls: list[Any] = []
    plan = (
        Plan()
        .with_signature(Signature("Move", content_type=Point))
        .with_function("Move", lambda p: calls.append(p) or p.x + p.y)
        .build()
    )
    sequence = make_sequence(plan, sites=1, fate=FAST, runtime=runtime)
    with pytest.raises(ValidationError, match=r"\$\.y"):
        sequence.submit(Action("Move", {"x": 1, "y": "two"})).get(timeout=LIMIT)
    assert calls == []
    assert sequence.submit(Action("Move", {"x": 1, "y": 2})).get(timeout=LIMIT) == 3
    assert calls == [Point(1, 2)]
    assert sequence.join(LIMIT)
    [letter] = sequence.dead_letters()
    assert (letter.error_kind, letter.attempts) == ("validation", 1)
    assert sequence.stats().retried == 0


def test_license_checks(runtime: str, make_sequence: MakeSequence) -> None:
    """With a key: unsigned, tampered and wrongly signed actions fail, never run, never retried."""
    calls: list[Any] = []

    def record(content: Any) -> Any:
        calls.append(content)
        return content

    fate = FAST.replace(license_keys=("k1",))
    sequence = make_sequence(_plan(Echo=record), sites=2, fate=fate, runtime=runtime)
    unsigned = Action("Echo", "unsigned")
    tampered = sign(Action("Echo", "original"), "k1").replace(content="tampered")
    wrong_key = sign(Action("Echo", "wrong"), "not-the-key")
    for action in (unsigned, tampered, wrong_key):
        with pytest.raises(LicenseError):
            sequence.submit(action).get(timeout=LIMIT)
    assert sequence.submit(sign(Action("Echo", "signed"), "k1")).get(timeout=LIMIT) == "signed"
    assert calls == ["signed"]
    assert sequence.join(LIMIT)
    letters = sequence.dead_letters()
    assert sorted(letter.action.id for letter in letters) == sorted(
        a.id for a in (unsigned, tampered, wrong_key)
    )
    assert {(letter.error_kind, letter.attempts) for letter in letters} == {("license", 1)}
    stats = sequence.stats()
    assert (stats.retried, stats.dead_lettered, stats.completed) == (0, 3, 1)


def test_license_key_rotation(runtime: str, make_sequence: MakeSequence) -> None:
    """With keys ("new", "old"), an action signed with either verifies; another key does not."""
    fate = FAST.replace(license_keys=("new", "old"))
    sequence = make_sequence(_plan(Echo=_identity), sites=1, fate=fate, runtime=runtime)
    assert sequence.submit(sign(Action("Echo", 1), "new")).get(timeout=LIMIT) == 1
    assert sequence.submit(sign(Action("Echo", 2), "old")).get(timeout=LIMIT) == 2
    with pytest.raises(LicenseError):
        sequence.submit(sign(Action("Echo", 3), "older")).get(timeout=LIMIT)


def test_license_survives_a_retry(make_sequence: MakeSequence) -> None:
    """A signed action that fails once still verifies on its second attempt."""
    attempts: list[int] = []

    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise ConnectionError("once")
        return n

    fate = FAST.replace(license_keys=("k",))
    sequence = make_sequence(_plan(Flaky=flaky), sites=1, fate=fate)
    assert sequence.submit(sign(Action("Flaky", 5), "k")).get(timeout=LIMIT) == 5
    assert sequence.stats().retried == 1


# Hooks


def test_hooks_run_around_the_function(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """Before-hooks get the action, then the function runs, then after-hooks get the result."""
    events: list[Any] = []
    life = make_life(FAST, runtime=runtime)
    life.register_hook("before", lambda action: events.append(("before", action.id)))
    life.register_hook("after", lambda action, result: events.append(("after", action.id, result)))

    def double(n: int) -> int:
        events.append(("function", n))
        return n * 2

    sequence = make_sequence(_plan(Double=double), life=life, sites=1, runtime=runtime)
    action = Action("Double", 21, hooks=("before",), after=("after",))
    assert sequence.submit(action).get(timeout=LIMIT) == 42
    assert events == [("before", action.id), ("function", 21), ("after", action.id, 42)]


def test_hook_failure_stops_the_action(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """A before-hook that raises stops the action: the function is never called."""
    calls: list[Any] = []
    life = make_life(FAST.replace(max_attempts=2), runtime=runtime)

    def guard(action: Action) -> None:
        raise PermissionError(f"{action.name} refused")

    life.register_hook("guard", guard)
    sequence = make_sequence(_plan(Echo=calls.append), life=life, sites=1, runtime=runtime)
    with pytest.raises(ExecutionError) as info:
        sequence.submit(Action("Echo", 1, hooks=("guard",))).get(timeout=LIMIT)
    assert isinstance(info.value.__cause__, PermissionError)
    assert calls == []
    assert sequence.dead_letters()[0].error_kind == "execution"


def test_after_hook_failure_fails_the_action(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """An after-hook that raises fails the action: no result is delivered."""
    life = make_life(FAST.replace(max_attempts=1), runtime=runtime)

    def reject(action: Action, result: Any) -> None:
        raise RuntimeError(f"rejected {result}")

    life.register_hook("reject", reject)
    sequence = make_sequence(_plan(Echo=_identity), life=life, sites=1, runtime=runtime)
    with pytest.raises(ExecutionError, match="rejected 5"):
        sequence.submit(Action("Echo", 5, after=("reject",))).get(timeout=LIMIT)


def test_unknown_hook_is_a_routing_error(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """A hook name nobody registered fails with RoutingError, not retried, function not called."""
    calls: list[Any] = []
    life = make_life(FAST, runtime=runtime)
    sequence = make_sequence(_plan(Echo=calls.append), life=life, sites=1, runtime=runtime)
    with pytest.raises(RoutingError, match="missing"):
        sequence.submit(Action("Echo", 1, hooks=("missing",))).get(timeout=LIMIT)
    with pytest.raises(RoutingError, match="gone"):
        sequence.submit(Action("Echo", 2, after=("gone",))).get(timeout=LIMIT)
    assert calls == []  # every hook is looked up before the function runs
    assert sequence.stats().retried == 0


# Delay


def test_delayed_action_does_not_hold_a_site(
    every_runtime: Runtime, make_sequence: MakeSequence
) -> None:
    """A delayed action waits on a timer: on 1 Site, an action submitted after it runs first."""
    order: list[str] = []

    def record(content: str) -> str:
        order.append(content)
        return content

    sequence = make_sequence(_plan(Record=record), sites=1, runtime=every_runtime)
    delayed = Action("Record", "delayed", delay=10 * LIMIT)  # due long after this test
    future = sequence.submit(delayed)
    assert sequence.submit(Action("Record", "prompt")).get(timeout=LIMIT) == "prompt"
    stats = sequence.stats()
    assert (stats.completed, stats.waiting, stats.outstanding) == (1, 1, 1)
    assert order == ["prompt"]
    assert [a.id for a in sequence.shutdown(drain=False, timeout=LIMIT)] == [delayed.id]
    with pytest.raises(CancellationError):
        future.get(timeout=LIMIT)
    assert order == ["prompt"]


def test_delay_is_kept_in_virtual_time(make_sequence: MakeSequence) -> None:
    """On the simulation runtime a delayed action runs at its due time, after a prompt one."""
    rt = get_runtime("simulation")
    ran_at: list[tuple[str, float]] = []

    def record(content: str) -> str:
        ran_at.append((content, rt.monotonic()))
        return content

    sequence = make_sequence(_plan(Record=record), sites=1, runtime=rt)
    delayed = sequence.submit(Action("Record", "delayed", delay=30.0))
    assert sequence.submit(Action("Record", "prompt")).get(timeout=LIMIT) == "prompt"
    assert delayed.get(timeout=60.0) == "delayed"
    assert ran_at == [("prompt", 0.0), ("delayed", 30.0)]


# Chaining


def test_chain_of_three(runtime: str, make_sequence: MakeSequence) -> None:
    """Each next action gets the previous result as content when it has none of its own."""
    seen: list[int] = []

    def double(n: int) -> int:
        seen.append(n)
        return n * 2

    sequence = make_sequence(_plan(Double=double), sites=2, runtime=runtime)
    action = Action("Double", 3, next=Action("Double", next=Action("Double")))
    assert sequence.submit(action).get(timeout=LIMIT) == 6
    assert sequence.join(LIMIT)
    assert seen == [3, 6, 12]
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.outstanding) == (3, 3, 0)


def test_chain_keeps_its_own_content(runtime: str, make_sequence: MakeSequence) -> None:
    """A next action that has content of its own keeps it."""
    kept: list[Any] = []
    sequence = make_sequence(
        _plan(Double=lambda n: n * 2, Keep=kept.append), sites=1, runtime=runtime
    )
    action = Action("Double", 3, next=Action("Keep", "own"))
    assert sequence.submit(action).get(timeout=LIMIT) == 6
    assert sequence.join(LIMIT)
    assert kept == ["own"]


def test_chain_under_a_license(make_sequence: MakeSequence) -> None:
    """A signed action's next step runs under the license check too."""
    kept: list[Any] = []
    fate = FAST.replace(license_keys=("k",))
    sequence = make_sequence(_plan(Double=lambda n: n * 2, Keep=kept.append), sites=1, fate=fate)
    action = sign(Action("Double", 4, next=Action("Keep")), "k")
    assert sequence.submit(action).get(timeout=LIMIT) == 8
    assert sequence.join(LIMIT)
    assert kept == [8]
    assert sequence.stats().dead_lettered == 0


def test_failed_chain_step_is_dead_lettered(runtime: str, make_sequence: MakeSequence) -> None:
    """A next step that fails becomes a dead letter; the first step's result stands."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, fate=FAST, runtime=runtime)
    action = Action("Echo", 1, next=Action("Nowhere"))
    assert sequence.submit(action).get(timeout=LIMIT) == 1
    assert sequence.join(LIMIT)
    [letter] = sequence.dead_letters()
    assert letter.action.name == "Nowhere" and letter.action.content == 1
    assert letter.error_kind == "routing"


# Shutdown


def test_shutdown_without_drain_cancels_what_has_not_started(
    runtime: str, make_sequence: MakeSequence, spawn: Spawn
) -> None:
    """1 Site blocked, 10 actions queued: shutdown(drain=False) cancels and returns those 10."""
    rt = get_runtime(runtime)
    started, gate = rt.event(), rt.event()

    def work(n: int) -> int:
        if n == 0:
            started.set()
            assert gate.wait(LIMIT), "gate never opened"
        return n

    fate = Fate(mailbox_window=1)
    sequence = make_sequence(_plan(Work=work), sites=1, fate=fate, runtime=runtime)
    first = sequence.submit(Action("Work", 0))
    assert started.wait(LIMIT)
    queued = [Action("Work", n) for n in range(1, 11)]
    futures = [sequence.submit(action) for action in queued]
    stopping = spawn(runtime, sequence.shutdown, False, LIMIT)
    try:
        for future in futures:
            with pytest.raises(CancellationError):
                future.get(timeout=LIMIT)
    finally:
        gate.set()
    handed_back = stopping.get(timeout=LIMIT)
    assert first.get(timeout=LIMIT) == 0  # what was running finished
    assert len(handed_back) == 10
    assert {a.id for a in handed_back} == {a.id for a in queued}
    stats = sequence.stats()
    assert (stats.cancelled, stats.completed, stats.outstanding) == (10, 1, 0)
    with pytest.raises(RuntimeError):
        sequence.submit(Action("Work", 99))


def test_shutdown_without_drain_hands_back_a_blocked_sites_mailbox(
    every_runtime: Runtime, make_sequence: MakeSequence, spawn: Spawn
) -> None:
    """A Site blocked with a full mailbox: what waits in it is cancelled and handed back too."""
    rt = every_runtime
    started, gate = rt.event(), rt.event()

    def work(n: int) -> int:
        if n == 0:
            started.set()
            assert gate.wait(LIMIT), "gate never opened"
        return n

    sequence = make_sequence(_plan(Work=work), sites=1, fate=Fate(mailbox_window=4), runtime=rt)
    queued = [Action("Work", n) for n in range(1, 7)]
    first, *futures = sequence.submit_many([Action("Work", 0), *queued])
    try:
        assert started.wait(LIMIT)
        stats = sequence.stats()
        assert stats.queued > 0 and stats.sites[0].depth > 1  # some in the mailbox, some not
        stopping = spawn(rt, sequence.shutdown, False, 5.0)
        with pytest.raises(CancellationError):  # the last one never reached the mailbox
            futures[-1].get(timeout=LIMIT)
    finally:
        gate.set()  # the Site goes on to its mailbox while the shutdown cancels
    handed_back = stopping.get(timeout=LIMIT)
    assert first.get(timeout=LIMIT) == 0
    assert sorted(a.content for a in handed_back) == [1, 2, 3, 4, 5, 6]
    assert {a.id for a in handed_back} == {a.id for a in queued}
    for future in futures:
        with pytest.raises(CancellationError):
            future.get(timeout=LIMIT)
    stats = sequence.stats()
    assert (stats.cancelled, stats.completed, stats.outstanding) == (6, 1, 0)


def test_shutdown_with_drain_waits_for_retries_and_delays(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """shutdown(drain=True) returns once delayed and retried actions have completed."""
    attempts: list[int] = []

    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails")
        return n

    fate = Fate(backoff_base=0.05)
    sequence = make_sequence(
        _plan(Flaky=flaky, Echo=_identity), sites=2, fate=fate, runtime=runtime
    )
    delayed = sequence.submit(Action("Echo", "late", delay=0.1))
    retried = sequence.submit(Action("Flaky", 3))
    assert sequence.shutdown(drain=True, timeout=LIMIT) == []
    assert delayed.get(timeout=LIMIT) == "late"
    assert retried.get(timeout=LIMIT) == 3
    stats = sequence.stats()
    assert (stats.completed, stats.retried, stats.cancelled, stats.outstanding) == (2, 1, 0, 0)


def test_shutdown_without_drain_cancels_delayed_actions(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """An action still waiting on its delay is cancelled and handed back."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, runtime=runtime)
    action = Action("Echo", "never", delay=30.0)
    future = sequence.submit(action)
    handed_back = sequence.shutdown(drain=False, timeout=LIMIT)
    assert [a.id for a in handed_back] == [action.id]
    with pytest.raises(CancellationError):
        future.get(timeout=LIMIT)
    assert sequence.stats().cancelled == 1


def test_submit_after_shutdown_raises(runtime: str, make_sequence: MakeSequence) -> None:
    """A Sequence that was shut down takes no more actions and cannot be restarted."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, runtime=runtime)
    assert sequence.submit(Action("Echo", 1)).get(timeout=LIMIT) == 1
    assert sequence.shutdown(drain=True, timeout=LIMIT) == []
    with pytest.raises(RuntimeError):
        sequence.submit(Action("Echo", 2))
    with pytest.raises(RuntimeError):
        sequence.submit_many([Action("Echo", 3)])
    with pytest.raises(RuntimeError):
        sequence.requeue()
    assert sequence.shutdown(drain=True, timeout=LIMIT) == []  # a second shutdown is harmless


def test_start_after_shutdown_raises(make_sequence: MakeSequence) -> None:
    """start() on a Sequence that was shut down raises instead of pretending to run."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1)
    sequence.shutdown(drain=True, timeout=LIMIT)
    with pytest.raises(RuntimeError, match="shut down"):
        sequence.start()


def test_context_manager_drains(runtime: str, make_sequence: MakeSequence) -> None:
    """Leaving the with block drains: every action has completed afterwards."""
    sequence = make_sequence(_plan(Echo=_identity), sites=2, runtime=runtime, start=False)
    with sequence:
        futures = [sequence.submit(Action("Echo", n, delay=0.01 * (n % 3))) for n in range(30)]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(30))
    assert sequence.stats().completed == 30


@pytest.mark.timeout(15)
def test_run_blocks_until_shutdown(runtime: str, make_sequence: MakeSequence, spawn: Spawn) -> None:
    """run() starts the Sequence and returns once it is shut down."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, runtime=runtime, start=False)
    running = spawn(runtime, sequence.run)
    assert sequence.submit(Action("Echo", "x")).get(timeout=LIMIT) == "x"
    sequence.shutdown(drain=True, timeout=LIMIT)
    assert running.get(timeout=LIMIT) is None


# Bad input to the Sequence itself


def test_wrong_typed_submit_raises_and_the_sequence_keeps_working(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """Submitting something that is not an Action raises TypeError; nothing else changes."""
    sequence = make_sequence(_plan(Echo=_identity), sites=1, runtime=runtime)
    with pytest.raises(TypeError):
        sequence.submit({"name": "Echo"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sequence.submit(b'{"name": "Echo"}')  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sequence.submit_many([Action("Echo", 1), "not an action"])  # type: ignore[list-item]
    assert sequence.stats().accepted == 0
    assert sequence.submit(Action("Echo", "fine")).get(timeout=LIMIT) == "fine"
    assert sequence.join(LIMIT)
    assert sequence.stats().accepted == 1


def test_constructor_rejects_bad_arguments() -> None:
    """A Sequence needs a Plan, a Site class, a Production and a positive number of Sites."""
    plan = _plan(Echo=_identity)
    with pytest.raises(TypeError):
        Sequence("plan")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sequence(plan, site=object)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sequence(plan, production="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Sequence(plan, sites=0, fate=Fate())


# Production and dead letters


def test_assign_to_the_production_executes(runtime: str, make_sequence: MakeSequence) -> None:
    """Actions assigned to the Sequence's production run, with no future."""
    seen: list[int] = []
    all_three = get_runtime(runtime).event()

    def keep(n: int) -> None:
        seen.append(n)
        if len(seen) == 3:
            all_three.set()

    production = Production()
    production.assign(Action("Keep", 0))  # before the Sequence starts
    sequence = make_sequence(_plan(Keep=keep), production, sites=2, runtime=runtime)
    production.assign(Action("Keep", 1))
    production.assign(Action("Keep", 2))
    assert all_three.wait(LIMIT)
    assert sequence.join(LIMIT)
    assert sorted(seen) == [0, 1, 2]
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.outstanding) == (3, 3, 0)
    with pytest.raises(TypeError):
        production.assign("Keep")  # type: ignore[arg-type]


def test_requeue_dead_letters(runtime: str, make_sequence: MakeSequence) -> None:
    """Dead letters requeued after the cause is fixed complete; requeue by id or all."""
    healed = [False]

    def fragile(n: int) -> int:
        if not healed[0]:
            raise OSError("backend down")
        return n * 2

    fate = FAST.replace(max_attempts=2)
    sequence = make_sequence(_plan(Fragile=fragile), sites=2, fate=fate, runtime=runtime)
    futures = [sequence.submit(Action("Fragile", n)) for n in range(3)]
    for future in futures:
        with pytest.raises(ExecutionError):
            future.get(timeout=LIMIT)
    assert sequence.join(LIMIT)
    letters = sequence.dead_letters()
    assert len(letters) == 3
    healed[0] = True
    [one] = sequence.requeue([letters[0].action.id])
    assert one.get(timeout=LIMIT) == letters[0].action.content * 2
    assert len(sequence.dead_letters()) == 2
    [two] = sequence.requeue(sequence.dead_letters()[0])
    assert two.get(timeout=LIMIT) == letters[1].action.content * 2
    rest = sequence.requeue()
    assert [f.get(timeout=LIMIT) for f in rest] == [letters[2].action.content * 2]
    assert sequence.dead_letters() == []
    assert sequence.requeue() == []
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.dead_lettered) == (6, 3, 3)


def test_requeued_action_starts_from_attempt_one(make_sequence: MakeSequence) -> None:
    """A requeued dead letter gets all its attempts again."""
    calls: list[int] = []

    def boom(n: int) -> int:
        calls.append(n)
        raise ValueError("boom")

    sequence = make_sequence(_plan(Boom=boom), sites=1, fate=FAST.replace(max_attempts=2))
    with pytest.raises(ExecutionError):
        sequence.submit(Action("Boom", 1)).get(timeout=LIMIT)
    [again] = sequence.requeue()
    with pytest.raises(ExecutionError):
        again.get(timeout=LIMIT)
    assert len(calls) == 4
    assert sequence.dead_letters()[0].attempts == 2


# Stats


def test_stats_per_outcome_and_per_site(runtime: str, make_sequence: MakeSequence) -> None:
    """Stats count each outcome, and each Site's processed and failed executions."""
    fate = FAST.replace(max_attempts=2)
    sequence = make_sequence(
        _plan(Echo=_identity, Boom=_raise_value_error), sites=2, fate=fate, runtime=runtime
    )
    good = [sequence.submit(Action("Echo", n)) for n in range(20)]
    bad = [sequence.submit(Action("Unknown", n)) for n in range(2)]
    failing = sequence.submit(Action("Boom", 0))
    assert [f.get(timeout=LIMIT) for f in good] == list(range(20))
    for future in [*bad, failing]:
        with pytest.raises((RoutingError, ExecutionError)):
            future.get(timeout=LIMIT)
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert stats.accepted == 23
    assert stats.completed == 20
    assert stats.dead_lettered == 3
    assert stats.retried == 1
    assert stats.cancelled == 0
    assert (stats.outstanding, stats.queued, stats.waiting) == (0, 0, 0)
    assert [s.site for s in stats.sites] == [0, 1]
    assert all(s.alive for s in stats.sites)
    assert sum(s.processed for s in stats.sites) == 20
    assert sum(s.failed for s in stats.sites) == 4  # 2 routing + 2 attempts of Boom


def test_stats_before_start(make_sequence: MakeSequence) -> None:
    """A Sequence that never started reports zeros and what waits in its production."""
    production = Production()
    production.assign(Action("Echo", 1))
    sequence = make_sequence(_plan(Echo=_identity), production, sites=1, start=False)
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.queued) == (0, 0, 1)
    assert sequence.join(0) is True
    assert sequence.dead_letters() == []


def test_depth_counts_what_waits_for_a_site(runtime: str, make_sequence: MakeSequence) -> None:
    """A blocked Site's depth is what it holds (its mailbox window); the rest waits queued."""
    rt = get_runtime(runtime)
    started, gate = rt.event(), rt.event()

    def work(n: int) -> int:
        if n == 0:
            started.set()
            assert gate.wait(LIMIT), "gate never opened"
        return n

    sequence = make_sequence(_plan(Work=work), sites=1, fate=Fate(mailbox_window=4),
                             runtime=runtime)
    futures = sequence.submit_many([Action("Work", n) for n in range(10)])
    try:
        assert started.wait(LIMIT)
        stats = sequence.stats()
        [site] = stats.sites
        # The running action and three behind it fill the window; six wait in the production.
        assert (site.depth, site.in_mailbox, site.backlog) == (4, 4, 0)
        assert (stats.queued, stats.outstanding, stats.completed) == (6, 10, 0)
    finally:
        gate.set()
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(10))
    assert sequence.join(LIMIT)
    [site] = sequence.stats().sites
    assert (site.depth, site.in_mailbox, site.processed) == (0, 0, 10)


def test_depths_are_zero_once_everything_ended(runtime: str, make_sequence: MakeSequence) -> None:
    """1,250 actions, keyed and not, on 3 Sites: exact results, every Site empty at the end."""
    sequence = make_sequence(_plan(Echo=_identity), sites=3, runtime=runtime)
    futures: list[Any] = []
    expected: list[Any] = []
    for _ in range(5):
        futures += sequence.submit_many([Action("Echo", n) for n in range(200)])
        futures += [sequence.submit(Action("Echo", -n, key=f"k{n % 4}")) for n in range(50)]
        expected += [*range(200), *(-n for n in range(50))]
    assert [f.get(timeout=LIMIT) for f in futures] == expected
    assert sequence.join(LIMIT)
    final = sequence.stats()
    assert [(s.depth, s.in_mailbox, s.backlog) for s in final.sites] == [(0, 0, 0)] * 3
    assert sum(s.processed for s in final.sites) == final.completed == 1250


# Concurrency, Sites and isolation


def test_many_threads_submitting_at_once(make_sequence: MakeSequence, spawn: Spawn) -> None:
    """8 threads x 2,500 actions: every action runs exactly once and gets its own result."""
    threads, per_thread = 8, 2_500
    lock = threading.Lock()
    runs: Counter[str] = Counter()

    class CountingSite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            with lock:
                runs[action.id] += 1
            return super().receive(action, life)

    sequence = make_sequence(
        _plan(Echo=lambda content: f"done {content}"), site=CountingSite, sites=4
    )
    barrier = threading.Barrier(threads)

    def produce(t: int) -> list[tuple[str, str, Any]]:
        barrier.wait(LIMIT)
        submitted = []
        for i in range(per_thread):
            action = Action("Echo", f"{t}-{i}")
            submitted.append((action.id, action.content, sequence.submit(action)))
        return [(aid, content, f.get(timeout=LIMIT)) for aid, content, f in submitted]

    producers = [spawn("thread", produce, t) for t in range(threads)]
    outcomes = [row for producer in producers for row in producer.get(timeout=25)]
    assert len(outcomes) == threads * per_thread
    assert all(result == f"done {content}" for _, content, result in outcomes)
    ids = [aid for aid, _, _ in outcomes]
    assert len(set(ids)) == len(ids)
    assert set(runs) == set(ids)
    assert set(runs.values()) == {1}
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert stats.completed == threads * per_thread
    assert stats.accepted == threads * per_thread
    assert stats.outstanding == 0


def test_custom_site_receive_is_used(runtime: str, make_sequence: MakeSequence) -> None:
    """A Site subclass's receive runs every action, and may call the default one."""

    class TaggingSite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            if action.name == "Custom":
                return f"custom on {self.site_index}"
            return (self.site_index, super().receive(action, life))

    sequence = make_sequence(_plan(Add=lambda n: n + 1), site=TaggingSite, sites=2, runtime=runtime)
    results = [f.get(timeout=LIMIT) for f in [sequence.submit(Action("Add", n)) for n in range(20)]]
    assert [value for _, value in results] == list(range(1, 21))
    ran_on = Counter(index for index, _ in results)
    custom = sequence.submit(Action("Custom")).get(timeout=LIMIT)
    ran_on[int(custom.removeprefix("custom on "))] += 1
    assert sequence.join(LIMIT)
    # Each Site reported its own index: the tally matches what each Site processed.
    assert [s.processed for s in sequence.stats().sites] == [ran_on[0], ran_on[1]]


def test_two_sequences_share_nothing(runtime: str, make_sequence: MakeSequence) -> None:
    """Two Sequences keep their own counts and Life; shutting one down leaves the other working."""
    plan = _plan(Echo=_identity)
    first = make_sequence(plan, sites=1, runtime=runtime)
    second = make_sequence(plan, sites=1, runtime=runtime)
    assert first.life is not second.life
    first.life.register_hook("only-first", lambda action: None)
    assert [f.get(timeout=LIMIT) for f in first.submit_many([Action("Echo", n) for n in range(5)])
            ] == list(range(5))
    assert [f.get(timeout=LIMIT) for f in second.submit_many([Action("Echo", n) for n in range(3)])
            ] == list(range(3))
    assert first.join(LIMIT) and second.join(LIMIT)
    assert (first.stats().completed, second.stats().completed) == (5, 3)
    with pytest.raises(RoutingError):
        second.submit(Action("Echo", 1, hooks=("only-first",))).get(timeout=LIMIT)
    assert first.shutdown(drain=True, timeout=LIMIT) == []
    assert second.submit(Action("Echo", "alive")).get(timeout=LIMIT) == "alive"
    assert second.join(LIMIT)
    assert (first.stats().completed, second.stats().completed) == (5, 4)
    assert second.stats().dead_lettered == 1 and first.stats().dead_lettered == 0


def test_ordered_actions_of_one_key_complete_in_order(
    runtime: str, make_sequence: MakeSequence
) -> None:
    """ordered=True actions of one key complete in submission order, amid other work."""
    order: list[int] = []

    def record(content: list[Any]) -> int:
        tag, n = content
        if tag == "k":
            order.append(n)
        return n

    sequence = make_sequence(_plan(Record=record), sites=4, runtime=runtime)
    futures = []
    for n in range(300):
        futures.append(sequence.submit(Action("Record", ["k", n], key="k", ordered=True)))
        futures.append(sequence.submit(Action("Record", ["x", n])))
        futures.append(sequence.submit(Action("Record", ["y", n], key=f"y{n % 7}")))
    assert [f.get(timeout=LIMIT) for f in futures] == [n for n in range(300) for _ in range(3)]
    assert sequence.join(LIMIT)
    assert order == list(range(300))


def test_idle_site_steals_from_a_busy_one(runtime: str, make_sequence: MakeSequence) -> None:
    """Actions of one (unordered) key all go to one Site: the idle Site steals some of them."""
    rt = get_runtime(runtime)
    gate, both_busy = rt.event(), rt.event()
    lock = threading.Lock()
    running = [0]

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            if running[0] >= 2:
                both_busy.set()
        assert gate.wait(LIMIT), "gate never opened"
        with lock:
            running[0] -= 1
        return n

    sequence = make_sequence(_plan(Work=work), sites=2, fate=Fate(steal=True), runtime=runtime)
    futures = sequence.submit_many([Action("Work", n, key="same") for n in range(40)])
    try:
        assert both_busy.wait(LIMIT), "no second Site ever ran an action of the key"
    finally:
        gate.set()
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(40))
    assert sequence.join(LIMIT)
    sites = sequence.stats().sites
    assert all(s.processed > 0 for s in sites)
    # All 40 were routed to the key's Site; the other one ran only what it stole. Each
    # Site processed what was routed to it, plus what it stole, less what was stolen from it.
    assert sorted(s.processed - s.steals_in + s.steals_out for s in sites) == [0, 40]


def test_no_stealing_when_disabled(runtime: str, make_sequence: MakeSequence) -> None:
    """With steal=False, actions of one key all run on their key's Site."""
    fate = Fate(steal=False)
    sequence = make_sequence(_plan(Echo=_identity), sites=2, fate=fate, runtime=runtime)
    futures = sequence.submit_many([Action("Echo", n, key="same") for n in range(100)])
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(100))
    assert sequence.join(LIMIT)
    sites = sequence.stats().sites
    assert sum(s.steals_in for s in sites) == 0
    assert sorted(s.processed for s in sites) == [0, 100]


def test_concurrent_shutdowns_stop_once(make_sequence: MakeSequence, spawn: Spawn) -> None:
    """Two threads shutting one Sequence down at once: both return, it stops once."""
    gate = threading.Event()
    sequence = make_sequence(_plan(Wait=lambda content: gate.wait(LIMIT)), sites=1)
    future = sequence.submit(Action("Wait"))
    with capture_events() as logs:
        first = spawn("thread", sequence.shutdown, True, LIMIT)
        second = spawn("thread", sequence.shutdown, True, LIMIT)
        gate.set()
        assert first.get(timeout=LIMIT) == [] and second.get(timeout=LIMIT) == []
    assert future.get(timeout=LIMIT) is True
    assert sequence.stats().completed == 1
    assert [e["event"] for e in logs].count("sequence_stopped") == 1
    assert not sequence.supervisor.is_alive()  # type: ignore[union-attr]


def test_signature_timeout_under_gevent(make_sequence: MakeSequence) -> None:
    """Under gevent a function past its timeout is interrupted: retried, then dead-lettered."""
    import gevent  # noqa: PLC0415 - this test is about the gevent runtime

    calls: list[int] = []

    def stuck(content: Any) -> None:
        calls.append(1)
        gevent.sleep(60)  # interrupted after 0.05 s: the test does not wait for it

    plan = (
        Plan()
        .with_signature(Signature("Stuck", timeout=0.05,
                                  retry=RetryPolicy(max_attempts=2, base=0.001)))
        .with_function("Stuck", stuck)
        .with_signature(Signature("Echo")).with_function("Echo", _identity)
        .build()
    )
    sequence = make_sequence(plan, runtime="gevent", sites=1)
    with pytest.raises(ActionTimeoutError, match="timeout"):
        sequence.submit(Action("Stuck")).get(timeout=LIMIT)
    assert len(calls) == 2
    assert sequence.dead_letters()[0].error_kind == "timeout"
    assert sequence.submit(Action("Echo", "alive")).get(timeout=LIMIT) == "alive"


def test_signature_timeout_under_threads(make_sequence: MakeSequence) -> None:
    """Under threads the function runs to completion, then the attempt fails as a timeout."""
    finished: list[str] = []

    def slow(content: str) -> str:
        start = time.monotonic()
        while time.monotonic() == start:  # the work: it lasts at least one tick of the clock
            pass
        finished.append(content)
        return content

    once = RetryPolicy(max_attempts=1)
    plan = (
        Plan()
        .with_signature(Signature("Slow", timeout=1e-9, retry=once))  # under one tick
        .with_function("Slow", slow)
        .with_signature(Signature("Roomy", timeout=LIMIT, retry=once))
        .with_function("Roomy", slow)
        .build()
    )
    sequence = make_sequence(plan, runtime="thread", sites=1)
    with pytest.raises(ActionTimeoutError):
        sequence.submit(Action("Slow", "slow")).get(timeout=LIMIT)
    assert finished == ["slow"]  # it ran to its end before the attempt failed
    assert sequence.submit(Action("Roomy", "roomy")).get(timeout=LIMIT) == "roomy"
    assert finished == ["slow", "roomy"]
    [letter] = sequence.dead_letters()
    assert (letter.error_kind, letter.action.name) == ("timeout", "Slow")
    assert sequence.stats().sites[0].alive
