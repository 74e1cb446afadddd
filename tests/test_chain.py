# SPDX-License-Identifier: MIT
"""``future.chain()``: the future of a chain's last result, on every runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from echo_actors import (
    Action,
    ActionFuture,
    CancellationError,
    ExecutionError,
    Fate,
    Plan,
    Sequence,
    Signature,
)
from echo_actors.runtime import Runtime

MakeSequence = Callable[..., Sequence]

LIMIT = 10.0
FAST = Fate(backoff_base=0.001, backoff_cap=0.01)


def _plan(ran: list[Any]) -> Plan:
    def double(n: int) -> int:
        ran.append(("Double", n))
        return n * 2

    def fail(n: int) -> int:
        ran.append(("Fail", n))
        raise OSError(f"no luck with {n}")

    return (Plan()
            .with_signature(Signature("Double")).with_function("Double", double)
            .with_signature(Signature("Fail")).with_function("Fail", fail)
            .build())


def test_chain_gives_the_last_result(every_runtime: Runtime, make_sequence: MakeSequence) -> None:
    """get() is the head's own result; chain().get() the last link's, after every link ran."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), sites=2, runtime=every_runtime, fate=FAST)
    future = sequence.submit(Action("Double", 1, next=Action("Double", next=Action("Double"))))
    tail = future.chain()
    assert tail.get(timeout=LIMIT) == 8
    assert future.get(timeout=LIMIT) == 2
    assert ran == [("Double", 1), ("Double", 2), ("Double", 4)]
    assert future.chain().get(timeout=LIMIT) == 8  # asked again after the end: the same
    head, last = future.times, tail.times  # the last link was accepted as its parent ended
    assert head is not None and last is not None and head.started is not None
    assert head.accepted <= head.started <= head.finished <= last.accepted <= last.finished


def test_chain_of_an_action_without_next_is_its_own_result(
    every_runtime: Runtime, make_sequence: MakeSequence
) -> None:
    """Without next, chain() resolves as the future does: the value, or its final error."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), runtime=every_runtime, fate=FAST.replace(max_attempts=1))
    assert sequence.submit(Action("Double", 3)).chain().get(timeout=LIMIT) == 6
    with pytest.raises(ExecutionError, match="no luck with 3"):
        sequence.submit(Action("Fail", 3)).chain().get(timeout=LIMIT)


def test_a_failing_middle_link_fails_the_chain(
    every_runtime: Runtime, make_sequence: MakeSequence
) -> None:
    """The middle link fails for good: chain() raises its error, the last link never runs."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), runtime=every_runtime, fate=FAST)
    future = sequence.submit(Action("Double", 1, next=Action("Fail", next=Action("Double"))))
    with pytest.raises(ExecutionError, match="no luck with 2") as caught:
        future.chain().get(timeout=LIMIT)
    assert future.get(timeout=LIMIT) == 2
    assert ran == [("Double", 1)] + [("Fail", 2)] * 3  # three attempts, then the dead letter
    assert [letter.action.name for letter in sequence.dead_letters()] == ["Fail"]
    assert caught.value.kind == "execution"


def test_shutdown_with_a_chain_in_flight_cancels_its_end(
    every_runtime: Runtime, make_sequence: MakeSequence
) -> None:
    """A shutdown without drain while a link waits: chain() ends with CancellationError."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), runtime=every_runtime, fate=FAST)
    waiting = Action("Double", delay=10 * LIMIT, next=Action("Double"))  # due long after
    future = sequence.submit(Action("Double", 1, next=waiting))
    assert future.get(timeout=LIMIT) == 2
    tail = future.chain()
    assert not tail.done()
    handed_back = sequence.shutdown(drain=False, timeout=LIMIT)
    assert [action.id for action in handed_back] == [waiting.id]
    with pytest.raises(CancellationError):
        tail.get(timeout=LIMIT)
    assert ran == [("Double", 1)]


def test_chain_futures_are_awaitable(make_sequence: MakeSequence) -> None:
    """From asyncio, ``await future.chain()`` gives the last result (thread runtime)."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), fate=FAST)

    async def main() -> Any:
        return await sequence.submit(Action("Double", 5, next=Action("Double"))).chain()

    assert asyncio.run(main()) == 20


def test_submit_many_futures_chain_too(
    every_runtime: Runtime, make_sequence: MakeSequence
) -> None:
    """Each future submit_many returns follows its own chain."""
    ran: list[Any] = []
    sequence = make_sequence(_plan(ran), sites=3, runtime=every_runtime, fate=FAST)
    futures = sequence.submit_many(
        [Action("Double", n, next=Action("Double", next=Action("Double"))) for n in range(5)]
    )
    assert [f.chain().get(timeout=LIMIT) for f in futures] == [8 * n for n in range(5)]


def test_every_runtime_returns_an_action_future(every_runtime: Runtime,
                                                make_sequence: MakeSequence) -> None:
    """submit, submit_many and requeue give ActionFutures (typed: chain() and times)."""
    sequence = make_sequence(_plan([]), sites=1, runtime=every_runtime, fate=FAST)
    futures = [sequence.submit(Action("Double", 1)), *sequence.submit_many([Action("Double", 2)])]
    assert all(isinstance(f, ActionFuture) for f in futures)
    assert [f.get(timeout=LIMIT) for f in futures] == [2, 4]
    assert all(f.times is not None for f in futures)
