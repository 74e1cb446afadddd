# SPDX-License-Identifier: MIT
"""asyncio: awaiting futures without blocking the loop, ``async def`` functions and hooks.

Every wait is on an event, a future or an ordering between coroutines; none on
time. The gevent runtime's hub and an asyncio loop cannot share an unpatched
thread, so on gevent the awaiting loop runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pykka
import pytest
from logs import capture_events

from echo_actors import (
    Action,
    ActionTimeoutError,
    CancellationError,
    CrashError,
    ExecutionError,
    Fate,
    Life,
    Plan,
    Production,
    RetryPolicy,
    Sequence,
    Signature,
    Site,
    ValidationError,
)
from echo_actors.runtime import get_runtime
from echo_actors.runtime._awaitable import wakeups_held
from echo_actors.runtime._thread import ThreadFuture

LIMIT = 10.0
"""Seconds any one wait may take before it counts as a failure."""
NO_RETRY = RetryPolicy(max_attempts=1)


def _in_a_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` with asyncio.run in a thread of its own; return its value."""
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(LIMIT)
    assert not thread.is_alive(), "the asyncio thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


# Awaiting the futures submit returns


def test_awaiting_a_result_does_not_block_the_loop(make_sequence: Callable[..., Sequence]) -> None:
    """The action waits for a flag that only another task on the same loop sets."""
    release = threading.Event()
    plan = Plan().with_signature(Signature("Wait"))
    plan.with_function("Wait", lambda n: n if release.wait(LIMIT) else "stuck").build()
    sequence = make_sequence(plan, sites=1)

    async def main() -> Any:
        future = sequence.submit(Action("Wait", 7))
        awaiting = asyncio.create_task(asyncio.wait_for(future, LIMIT))
        await asyncio.sleep(0)  # the awaiting task is parked on the future now
        ticks = 0
        while ticks < 3:  # a blocked loop would never get here
            ticks += 1
            await asyncio.sleep(0)
        release.set()
        return await awaiting

    assert asyncio.run(main()) == 7


def test_cancelling_the_await_does_not_cancel_the_action(
    make_sequence: Callable[..., Sequence],
) -> None:
    release = threading.Event()
    ran: list[int] = []

    def work(n: int) -> int:
        release.wait(LIMIT)
        ran.append(n)
        return n

    plan = Plan().with_signature(Signature("Work")).with_function("Work", work).build()
    sequence = make_sequence(plan, sites=1)
    future = sequence.submit(Action("Work", 3))

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(future, 0.01)  # gives up waiting: the wait is cancelled

    asyncio.run(main())
    release.set()
    assert future.get(timeout=LIMIT) == 3
    assert ran == [3]


def test_gathering_submit_many(make_sequence: Callable[..., Sequence]) -> None:
    plan = Plan().with_signature(Signature("Double")).with_function("Double", lambda n: 2 * n)
    sequence = make_sequence(plan.build(), sites=3)

    async def main() -> list[int]:
        return list(await asyncio.gather(*sequence.submit_many(
            [Action("Double", i) for i in range(200)])))

    assert asyncio.run(main()) == [2 * i for i in range(200)]


def test_an_awaited_failure_raises_the_final_error(make_sequence: Callable[..., Sequence]) -> None:
    def fail(_: Any) -> None:
        raise ValueError("no")

    plan = Plan().with_signature(Signature("Fail", retry=NO_RETRY)).with_function("Fail", fail)
    sequence = make_sequence(plan.build(), sites=1)

    async def main() -> None:
        with pytest.raises(ExecutionError, match="no"):
            await sequence.submit(Action("Fail"))

    asyncio.run(main())


def test_a_gevent_future_is_awaited_from_another_threads_loop(
    make_sequence: Callable[..., Sequence],
) -> None:
    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
    sequence = make_sequence(plan, sites=2, runtime="gevent")
    future = sequence.submit(Action("Echo", "hi"))

    async def wait() -> Any:
        return await asyncio.wait_for(future, LIMIT)

    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=asyncio.run(wait())), daemon=True)
    thread.start()
    assert future.get(timeout=LIMIT) == "hi"  # the hub runs the Sites meanwhile
    thread.join(LIMIT)
    assert box == {"value": "hi"}


def test_a_simulation_future_refuses_to_be_awaited() -> None:
    future = get_runtime("simulation").future()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="simulation"):
            await future

    asyncio.run(main())


# async def functions and hooks


def _async_plan(**functions: Any) -> Plan:
    plan = Plan()
    for name, (signature, fn) in functions.items():
        plan.with_signature(signature).with_function(name, fn)
    return plan.build()


def test_plan_build_finds_async_functions() -> None:
    async def fetch(x: Any) -> Any:
        return x

    plan = _async_plan(Fetch=(Signature("Fetch"), fetch), Echo=(Signature("Echo"), lambda x: x))
    assert plan.is_async("Fetch")
    assert not plan.is_async("Echo")
    assert plan.asynchronous == frozenset({"Fetch"})


def test_async_functions_are_refused_on_the_simulation_runtime() -> None:
    async def fetch(x: Any) -> Any:
        return x

    plan = _async_plan(Fetch=(Signature("Fetch"), fetch))
    with pytest.raises(ValueError, match=r"simulation runtime.*Fetch"):
        Sequence(plan, runtime="simulation")


def test_async_function_and_hook_results_are_values(
    runtime: str, make_sequence: Callable[..., Sequence], make_life: Callable[..., Life],
) -> None:
    seen: list[Any] = []

    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    async def before(action: Action) -> None:
        await asyncio.sleep(0)
        seen.append(("before", action.content))

    async def after(action: Action, result: Any) -> None:
        await asyncio.sleep(0)
        seen.append(("after", result))

    def plain_after(action: Action, result: Any) -> None:
        seen.append(("plain", result))

    life = make_life(runtime=runtime)
    life.register_hook("before", before)
    life.register_hook("after", after)
    life.register_hook("plain", plain_after)
    plan = _async_plan(Double=(Signature("Double", content_type=int), double),
                       Triple=(Signature("Triple", content_type=int), lambda n: 3 * n))
    sequence = make_sequence(plan, life=life, sites=2, runtime=runtime)
    assert sequence.submit(
        Action("Double", 21, hooks=["before"], after=["after", "plain"])).get(timeout=LIMIT) == 42
    assert seen == [("before", 21), ("after", 42), ("plain", 42)]
    seen.clear()
    # async hooks around a plain function: awaited too, the result is a value
    assert sequence.submit(
        Action("Triple", 5, hooks=["before"], after=["after"])).get(timeout=LIMIT) == 15
    assert seen == [("before", 5), ("after", 15)]


def test_async_failures_are_retried_like_sync_ones(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    attempts: list[int] = []

    async def flaky(n: int) -> int:
        attempts.append(n)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return n

    async def broken(_: Any) -> None:
        raise ValueError("never")

    retry = RetryPolicy(max_attempts=3, base=0.0)
    plan = _async_plan(Flaky=(Signature("Flaky", retry=retry), flaky),
                       Broken=(Signature("Broken", retry=retry), broken))
    sequence = make_sequence(plan, sites=1, runtime=runtime)
    assert sequence.submit(Action("Flaky", 9)).get(timeout=LIMIT) == 9
    assert attempts == [9, 9, 9]
    with pytest.raises(ExecutionError, match="never"):
        sequence.submit(Action("Broken")).get(timeout=LIMIT)
    stats = sequence.stats()
    assert (stats.retried, stats.dead_lettered, stats.completed) == (4, 1, 1)
    [letter] = sequence.dead_letters()
    assert (letter.action.name, letter.attempts) == ("Broken", 3)


def test_a_timeout_cancels_the_coroutine(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    saw: list[str] = []

    async def slow(_: Any) -> None:
        try:
            await asyncio.sleep(LIMIT * 10)
        except asyncio.CancelledError:
            saw.append("cancelled")
            raise

    plan = _async_plan(Slow=(Signature("Slow", timeout=0.01, retry=NO_RETRY), slow))
    sequence = make_sequence(plan, sites=1, runtime=runtime)
    with pytest.raises(ActionTimeoutError, match="timeout"):
        sequence.submit(Action("Slow")).get(timeout=LIMIT)
    assert saw == ["cancelled"]


def test_its_own_timeout_error_is_a_plain_failure(make_sequence: Callable[..., Sequence]) -> None:
    async def times_out(_: Any) -> None:
        raise TimeoutError("upstream")

    plan = _async_plan(Up=(Signature("Up", timeout=LIMIT, retry=NO_RETRY), times_out))
    sequence = make_sequence(plan, sites=1)
    with pytest.raises(ExecutionError, match="upstream") as caught:
        sequence.submit(Action("Up")).get(timeout=LIMIT)
    assert not isinstance(caught.value, ActionTimeoutError)


def test_a_thousand_async_actions_are_in_flight_at_once_on_two_sites(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """None finishes before all have started: only possible if no action holds a Site."""
    n = 1000
    started = 0
    everyone: list[asyncio.Event] = []

    async def gather_round(i: int) -> int:
        nonlocal started
        if not everyone:
            everyone.append(asyncio.Event())  # on the Sequence's loop, where all of this runs
        started += 1
        if started == n:
            everyone[0].set()
        await everyone[0].wait()
        await asyncio.sleep(0.001)
        return i

    plan = _async_plan(Round=(Signature("Round"), gather_round))
    sequence = make_sequence(plan, sites=2, runtime=runtime)
    futures = sequence.submit_many([Action("Round", i) for i in range(n)])
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(n))
    assert sequence.stats().completed == n


def test_ordered_keys_keep_their_order_with_async_functions(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    log: list[tuple[str, int]] = []

    async def step(i: int) -> int:
        log.append(("start", i))
        for _ in range(3):
            await asyncio.sleep(0)  # others may run meanwhile; this key's next may not
        log.append(("end", i))
        return i

    plan = _async_plan(Step=(Signature("Step", content_type=int), step))
    sequence = make_sequence(plan, sites=3, runtime=runtime)
    futures = sequence.submit_many(
        [Action("Step", i, key="k", ordered=True) for i in range(20)])
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(20))
    assert log == [(edge, i) for i in range(20) for edge in ("start", "end")]


def test_every_attempt_settles_once_when_shutdown_cuts_coroutines_short(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    n = 50
    count = 0
    started: list[Any] = []

    async def forever(_: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            call, event = started
            call(event.set)  # from the loop thread into the runtime
        await asyncio.Event().wait()  # never set: only the shutdown ends it

    async def quick(i: int) -> int:
        return i

    plan = _async_plan(Forever=(Signature("Forever"), forever), Quick=(Signature("Quick"), quick))
    sequence = make_sequence(plan, sites=2, runtime=runtime)
    started += [sequence.runtime.threadsafe(), sequence.runtime.event()]
    settled: dict[str, int] = {}
    settler = sequence._run.settler  # type: ignore[union-attr]
    settle = settler.settle

    def counting(ticket: Any, outcome: str, *args: Any, **kwargs: Any) -> bool:
        ended = settle(ticket, outcome, *args, **kwargs)
        if ended:
            key = f"{ticket.action.id}/{ticket.action.attempt}"
            settled[key] = settled.get(key, 0) + 1
        return ended

    settler.settle = counting  # type: ignore[method-assign]
    forever_actions = [Action("Forever", i) for i in range(n)]
    stuck = sequence.submit_many(forever_actions)
    assert started[1].wait(LIMIT)
    done = sequence.submit_many([Action("Quick", i) for i in range(n)])
    assert [f.get(timeout=LIMIT) for f in done] == list(range(n))
    handed_back = sequence.shutdown(drain=False, timeout=0.05)
    assert sorted(a.id for a in handed_back) == sorted(a.id for a in forever_actions)
    for future in stuck:
        with pytest.raises(CancellationError):
            future.get(timeout=0)  # settled already: nothing is left pending
    assert len(settled) == 2 * n and set(settled.values()) == {1}
    stats = sequence.stats()
    assert (stats.completed, stats.cancelled, stats.outstanding) == (n, n, 0)


def test_shutdown_without_drain_lets_running_coroutines_finish(
    make_sequence: Callable[..., Sequence],
) -> None:
    n = 5
    all_started, stopping = threading.Event(), threading.Event()
    release: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def wait_for_release(i: int) -> int:
        if not release:  # on the Sequence's loop, where all of them run
            release.append((asyncio.get_running_loop(), asyncio.Event()))
        if sum(1 for _ in asyncio.all_tasks()) >= n:
            all_started.set()
        await release[0][1].wait()
        return i

    plan = _async_plan(Wait=(Signature("Wait"), wait_for_release))
    sequence = make_sequence(plan, sites=1)
    futures = sequence.submit_many([Action("Wait", i) for i in range(n)])
    assert all_started.wait(LIMIT)
    pause = sequence.production.pause

    def paused() -> None:  # the shutdown has begun: nothing new is taken
        pause()
        stopping.set()

    sequence.production.pause = paused  # type: ignore[method-assign]
    box: dict[str, Any] = {}
    stopper = threading.Thread(target=lambda: box.update(back=sequence.shutdown(drain=False)))
    stopper.start()
    assert stopping.wait(LIMIT)
    loop, event = release[0]
    loop.call_soon_threadsafe(event.set)
    stopper.join(LIMIT)
    assert box == {"back": []}
    assert [f.get(timeout=0) for f in futures] == list(range(n))


def test_async_with_join_and_shutdown_async() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    plan = _async_plan(Double=(Signature("Double"), double))

    async def main() -> tuple[list[int], bool]:
        async with Sequence(plan, sites=2) as sequence:
            futures = sequence.submit_many([Action("Double", i) for i in range(100)])
            joined = await sequence.join_async(LIMIT)
            results = list(await asyncio.gather(*futures))
        with pytest.raises(RuntimeError):
            sequence.submit(Action("Double", 1))
        return results, joined

    results, joined = asyncio.run(main())
    assert joined and results == [2 * i for i in range(100)]


def test_shutdown_async_hands_back_what_waits() -> None:
    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
    sequence = Sequence(plan, sites=1)

    async def main() -> list[Action]:
        return await sequence.shutdown_async(drain=False)

    assert _in_a_thread(main()) == []
    with pytest.raises(RuntimeError):
        sequence.start()


def test_awaited_results_under_the_thread_runtime_stay_pykka_futures(
    make_sequence: Callable[..., Sequence],
) -> None:
    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
    sequence = make_sequence(plan, sites=1)
    future = sequence.submit(Action("Echo", 1))
    assert isinstance(future, pykka.Future)
    assert future.map(lambda v: v + 1).get(timeout=LIMIT) == 2

    async def main() -> Any:
        return await future.map(lambda v: v + 2)  # a get hook: awaited in a worker thread

    assert asyncio.run(main()) == 3


def test_action_events_follow_the_coroutine(make_sequence: Callable[..., Sequence]) -> None:
    """action_completed / action_failed come when the coroutine ends, not at the hand-over."""
    async def ok(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def bad(_: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    plan = _async_plan(Ok=(Signature("Ok"), ok), Bad=(Signature("Bad", retry=NO_RETRY), bad))
    with capture_events() as events:
        sequence = make_sequence(plan, sites=1, fate=Fate(action_events=True))
        assert sequence.submit(Action("Ok", 1)).get(timeout=LIMIT) == 1
        with pytest.raises(ExecutionError):
            sequence.submit(Action("Bad")).get(timeout=LIMIT)
        sequence.join(LIMIT)
    names = [(e["event"], e["action_name"]) for e in events if "action_name" in e
             and e["event"].startswith("action_") and e["event"] != "action_dead_lettered"]
    assert names == [("action_started", "Ok"), ("action_completed", "Ok"),
                     ("action_started", "Bad"), ("action_failed", "Bad")]
    [failed] = [e for e in events if e["event"] == "action_failed"]
    assert "ValueError: bad" in failed["error"]


# Actions that skip their Site: unkeyed, undelayed, no hooks, the plain Site


def test_a_plain_async_action_skips_the_sites_and_a_keyed_one_does_not(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """Only the keyed (or hooked) actions are counted by a Site; all of them complete."""
    async def echo(n: int) -> int:
        await asyncio.sleep(0)
        return n

    plan = _async_plan(Echo=(Signature("Echo", content_type=int), echo))
    sequence = make_sequence(plan, sites=2, runtime=runtime)
    plain = sequence.submit_many([Action("Echo", i) for i in range(20)])
    keyed = [sequence.submit(Action("Echo", i, key=f"k{i}")) for i in range(3)]
    assert [f.get(timeout=LIMIT) for f in plain + keyed] == [*range(20), *range(3)]
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.outstanding) == (23, 0)
    assert sum(site.processed for site in stats.sites) == 3


class _CountingSite(Site):
    seen: ClassVar[list[str]] = []

    def receive(self, action: Action, life: Life) -> Any:
        self.seen.append(action.name)
        return super().receive(action, life)


def test_a_site_subclass_or_a_step_sees_every_async_action(
    make_sequence: Callable[..., Sequence],
) -> None:
    """With a receive of yours, or a pipeline step, no action goes around the Sites."""
    async def echo(n: int) -> int:
        return n

    stepped: list[str] = []

    def step(action: Action, site: Any, call_next: Any) -> Any:
        stepped.append(action.name)
        return call_next(action)

    plan = _async_plan(Echo=(Signature("Echo"), echo))
    _CountingSite.seen = []
    subclassed = make_sequence(plan, site=_CountingSite, sites=1)
    assert [f.get(timeout=LIMIT) for f in subclassed.submit_many(
        [Action("Echo", i) for i in range(5)])] == list(range(5))
    assert _CountingSite.seen == ["Echo"] * 5
    with_step = make_sequence(plan, sites=1, steps=[step])
    assert with_step.submit(Action("Echo", 1)).get(timeout=LIMIT) == 1
    assert stepped == ["Echo"]


def test_bad_content_or_a_plain_result_without_a_site(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """Conversion fails as on a Site (a dead letter, not retried); a sync-returning
    callable whose __call__ is async still gives its value."""
    class Adder:
        async def __call__(self, n: int) -> int:
            await asyncio.sleep(0)
            return n + 1

    plan = _async_plan(Add=(Signature("Add", content_type=int), Adder()))
    sequence = make_sequence(plan, sites=1, runtime=runtime)
    assert sequence.submit(Action("Add", 1)).get(timeout=LIMIT) == 2
    with pytest.raises(ValidationError, match="Add"):
        sequence.submit(Action("Add", "not a number")).get(timeout=LIMIT)
    [letter] = sequence.dead_letters()
    assert (letter.error_kind, letter.attempts) == ("validation", 1)


def test_a_coroutine_raising_system_exit_or_keyboard_interrupt_fails_only_its_action(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """asyncio lets these escape its loop; the Sequence's loop goes on, and each action
    that raised one ends once (SystemExit a failure, KeyboardInterrupt a crash), on both
    paths (without a Site, and handed over by a keyed action's Site)."""
    async def leave(kind: str) -> None:
        await asyncio.sleep(0)
        raise SystemExit(3) if kind == "exit" else KeyboardInterrupt

    async def fine(n: int) -> int:
        await asyncio.sleep(0)
        return n

    plan = _async_plan(Leave=(Signature("Leave", retry=NO_RETRY), leave),
                       Fine=(Signature("Fine"), fine))
    sequence = make_sequence(plan, sites=1, runtime=runtime)
    for key in (None, "k"):
        with pytest.raises(ExecutionError, match="SystemExit"):
            sequence.submit(Action("Leave", "exit", key=key)).get(timeout=LIMIT)
        with pytest.raises(CrashError):
            sequence.submit(Action("Leave", "interrupt", key=key)).get(timeout=LIMIT)
        assert sequence.submit(Action("Fine", 7, key=key)).get(timeout=LIMIT) == 7
    stats = sequence.stats()
    assert (stats.completed, stats.dead_lettered) == (2, 4)


def test_what_waits_for_the_loop_when_a_cancelling_shutdown_begins_is_handed_back(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """Submitted while the loop is busy, they never start: cancelled and handed back,
    while the coroutine that kept the loop busy finishes (it had started)."""
    inside, gate = threading.Event(), threading.Event()
    ran: list[int] = []

    async def hog(_: Any) -> str:
        inside.set()
        gate.wait(LIMIT)  # blocks the loop thread on purpose: nothing else starts
        return "done"

    async def later(i: int) -> int:
        ran.append(i)
        return i

    plan = _async_plan(Hog=(Signature("Hog"), hog), Later=(Signature("Later"), later))
    sequence = make_sequence(plan, sites=1, runtime=runtime)
    hogging = sequence.submit(Action("Hog"))
    assert inside.wait(LIMIT)
    waiting = sequence.submit_many([Action("Later", i) for i in range(10)])
    settler = sequence._run.settler  # type: ignore[union-attr]
    start_cancelling = settler.start_cancelling

    def cancelling(because: str | None = None) -> None:
        start_cancelling(because)
        gate.set()  # the loop goes on only once cancelling has begun

    settler.start_cancelling = cancelling  # type: ignore[method-assign]
    handed_back = sequence.shutdown(drain=False, timeout=LIMIT)
    assert hogging.get(timeout=0) == "done"
    assert sorted(a.content for a in handed_back) == list(range(10)) and ran == []
    for future in waiting:
        with pytest.raises(CancellationError):
            future.get(timeout=0)
    stats = sequence.stats()
    assert (stats.completed, stats.cancelled, stats.outstanding) == (1, 10, 0)


def test_submitting_while_a_shutdown_stops_the_loop_ends_every_action_once(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """Submitters racing a shutdown without drain: each accepted action completes or is
    cancelled, exactly once; the others are refused; nothing is left outstanding."""
    rounds = int(os.environ.get("ECHO_RACE_ROUNDS", "20"))
    for _ in range(rounds):
        async def echo(n: int) -> int:
            await asyncio.sleep(0)
            return n

        plan = _async_plan(Echo=(Signature("Echo"), echo))
        sequence = make_sequence(plan, sites=1, runtime=runtime)
        sequence.submit(Action("Echo", -1)).get(timeout=LIMIT)  # the loop is up
        futures: list[Any] = []
        go = threading.Event()

        def submitter(sequence: Sequence = sequence, futures: list[Any] = futures,
                      go: threading.Event = go) -> None:
            go.wait(LIMIT)
            for i in range(200):
                try:
                    futures.append(sequence.submit(Action("Echo", i)))
                except RuntimeError:  # shutting down: refused, not accepted
                    return

        thread = threading.Thread(target=submitter) if runtime == "thread" else None
        if thread is None:
            futures.extend(sequence.submit_many([Action("Echo", i) for i in range(200)]))
        else:
            thread.start()
        go.set()
        sequence.shutdown(drain=False, timeout=0.0)
        if thread is not None:
            thread.join(LIMIT)
        ended = {"completed": 0, "cancelled": 0}
        for future in futures:
            try:
                future.get(timeout=LIMIT)
                ended["completed"] += 1
            except CancellationError:
                ended["cancelled"] += 1
        stats = sequence.stats()
        assert stats.outstanding == 0
        assert (stats.completed - 1, stats.cancelled) == (ended["completed"], ended["cancelled"])


def test_results_set_in_a_burst_wake_the_awaiting_loop_once() -> None:
    """Within wakeups_held, setting 100 awaited futures wakes their loop once, at the end."""
    futures = [ThreadFuture() for _ in range(100)]
    inside: list[int] = []

    async def main() -> tuple[list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        calls: list[Any] = []
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(callback)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        gathered = asyncio.gather(*futures)
        await asyncio.sleep(0)  # every await is parked on its future now

        def burst() -> None:
            with wakeups_held():
                for i, future in enumerate(futures):
                    future.set(i)
                inside.append(len(calls))

        thread = threading.Thread(target=burst)
        thread.start()
        results = await asyncio.wait_for(gathered, LIMIT)
        thread.join(LIMIT)
        return results, calls

    results, calls = asyncio.run(main())
    assert results == list(range(100))
    assert inside == [0] and len(calls) == 1


# Sequence.gather: many results as one future


def _gathering_plan() -> Plan:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    async def fail(n: int) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"no {n}")

    plan = Plan()
    plan.with_signature(Signature("Double", content_type=int)).with_function("Double", double)
    plan.with_signature(Signature("Fail", retry=NO_RETRY)).with_function("Fail", fail)
    plan.with_signature(Signature("Triple", content_type=int))
    return plan.with_function("Triple", lambda n: 3 * n).build()


def test_gather_returns_every_result_in_order(make_sequence: Callable[..., Sequence]) -> None:
    """async and plain functions, keyed and not, delayed: one list, in submission order."""
    sequence = make_sequence(_gathering_plan(), sites=2)
    actions = [Action("Double", i) for i in range(300)]
    actions += [Action("Triple", 5), Action("Double", 7, key="k"), Action("Double", 8, delay=0.01)]

    async def main() -> list[Any]:
        return await asyncio.wait_for(sequence.gather(actions), LIMIT)

    assert asyncio.run(main()) == [2 * i for i in range(300)] + [15, 14, 16]
    assert asyncio.run(_empty(sequence)) == []


async def _empty(sequence: Sequence) -> list[Any]:
    return await sequence.gather([])


def test_gather_raises_the_first_failure_or_returns_them(
    make_sequence: Callable[..., Sequence],
) -> None:
    """As asyncio.gather: the first failure is raised (the others run on), or with
    return_exceptions every failure takes its action's place."""
    sequence = make_sequence(_gathering_plan(), sites=2)

    async def main() -> list[Any]:
        with pytest.raises(ExecutionError, match="no 1"):
            await sequence.gather([Action("Double", 1), Action("Fail", 1), Action("Double", 2)])
        return await sequence.gather([Action("Double", 1), Action("Fail", 2)],
                                     return_exceptions=True)

    first, second = asyncio.run(main())
    assert first == 2
    assert isinstance(second, ExecutionError) and "no 2" in str(second)
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.dead_lettered, stats.outstanding) == (3, 2, 0)


def test_gather_of_mixed_names_each_served_and_checked_by_its_own_signature(
    make_sequence: Callable[..., Sequence],
) -> None:
    """A batch handed to the loop in one piece, names alternating and content that does
    not convert among them: each action meets its own signature and function."""
    sequence = make_sequence(_gathering_plan(), sites=2)
    actions = [Action("Double", i) if i % 3 else Action("Fail", i) for i in range(30)]
    actions[4] = Action("Double", "four")  # not an int: a ValidationError, not retried

    async def main() -> list[Any]:
        return await asyncio.wait_for(
            sequence.gather(actions, return_exceptions=True), LIMIT)

    results = asyncio.run(main())
    for i, result in enumerate(results):
        if i == 4:
            assert isinstance(result, ValidationError) and "Double" in str(result)
        elif i % 3:
            assert result == 2 * i
        else:
            assert isinstance(result, ExecutionError) and f"no {i}" in str(result)
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.dead_lettered, stats.outstanding) == (19, 11, 0)


def test_cancels_racing_the_ends_of_async_actions_end_each_once(
    make_sequence: Callable[..., Sequence],
) -> None:
    """A started async action ends without a lock (its runner alone ends it): cancels
    racing those ends, for actions the loop took directly and ones a Site handed over
    (ordered keys: one at a time, the others wait), either cancel one (True: its future
    says cancelled) or leave it to end."""
    sequence = make_sequence(_gathering_plan(), sites=2)
    actions = [Action("Double", i) if i % 2 else Action("Double", i, key=f"k{i % 6}",
                                                        ordered=True) for i in range(400)]
    futures = sequence.submit_many(actions)
    cancelled = [sequence.cancel(action.id) for action in reversed(actions)][::-1]
    for action, future, was_cancelled in zip(actions, futures, cancelled, strict=True):
        if was_cancelled:
            with pytest.raises(CancellationError):
                future.get(timeout=LIMIT)
        else:
            assert future.get(timeout=LIMIT) == 2 * action.content
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.cancelled, stats.outstanding) == (
        cancelled.count(False), cancelled.count(True), 0)


class _LoopGate:
    """An ``asyncio.Event`` on the Sequence's loop, made by the first coroutine to reach
    it (``reached`` is set then), opened from the test's thread."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def wait(self) -> None:
        if not self._held:  # on the Sequence's loop, where all of them run
            self._held.append((asyncio.get_running_loop(), asyncio.Event()))
            self.reached.set()
        await self._held[0][1].wait()

    def open(self) -> None:
        loop, event = self._held[0]
        loop.call_soon_threadsafe(event.set)  # runs only if the loop is not blocked


def test_cancelling_a_gather_does_not_cancel_its_actions(
    make_sequence: Callable[..., Sequence],
) -> None:
    gate = _LoopGate()

    async def held(n: int) -> int:
        await gate.wait()
        return n

    plan = _async_plan(Held=(Signature("Held"), held))
    sequence = make_sequence(plan, sites=1)

    async def main() -> None:
        waiting = asyncio.ensure_future(sequence.gather([Action("Held", i) for i in range(5)]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert gate.reached.wait(LIMIT)
    gate.open()
    assert sequence.join(LIMIT)
    assert sequence.stats().completed == 5


def test_gather_refuses_bad_input_other_runtimes_and_a_shutdown(
    make_sequence: Callable[..., Sequence],
) -> None:
    """A wrong item queues nothing; gevent and simulation Sequences refuse, naming the
    runtime; so does a Sequence shut down."""
    sequence = make_sequence(_gathering_plan(), sites=1)

    async def bad() -> None:
        await sequence.gather([Action("Double", 1), "not an action"])  # type: ignore[list-item]

    with pytest.raises(TypeError, match="expected Actions"):
        asyncio.run(bad())
    assert sequence.stats().accepted == 0
    simulated = Sequence(Plan().with_signature(Signature("E")).with_function("E", lambda x: x),
                         runtime="simulation")

    async def simulation() -> None:
        await simulated.gather([Action("E", 1)])

    with pytest.raises(RuntimeError, match="simulation"):
        asyncio.run(simulation())
    on_gevent = make_sequence(_gathering_plan(), sites=1, runtime="gevent")

    async def gevent() -> None:
        await on_gevent.gather([Action("Double", 1)])

    with pytest.raises(RuntimeError, match="gevent"):
        asyncio.run(gevent())
    sequence.shutdown()

    async def late() -> None:
        await sequence.gather([Action("Double", 1)])

    with pytest.raises(RuntimeError, match=r"shutting down|shut down"):
        asyncio.run(late())


def test_an_async_receive_is_refused_when_the_sequence_is_made() -> None:
    """It would never be awaited (its coroutine would be the result): a clear TypeError."""
    class AsyncSite(Site):
        async def receive(self, action: Action, life: Life) -> Any:  # type: ignore[override]
            return super().receive(action, life)

    plan = Plan().with_signature(Signature("E")).with_function("E", lambda x: x).build()
    with pytest.raises(TypeError, match=r"AsyncSite\.receive is async def.*Plan"):
        Sequence(plan, site=AsyncSite)


# Fate.max_async_in_flight: a cap on coroutines in flight


def test_the_cap_bounds_coroutines_in_flight_on_both_paths(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """With a cap of 3, never more than 3 run at once, and 3 do; every action completes,
    those a Site handed over (keyed) and those that skipped it alike."""
    running = peak = 0

    async def step(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)  # the others may start meanwhile, up to the cap
        running -= 1
        return i

    plan = _async_plan(Step=(Signature("Step"), step))
    sequence = make_sequence(plan, sites=2, runtime=runtime, fate=Fate(max_async_in_flight=3))
    plain = sequence.submit_many([Action("Step", i) for i in range(30)])
    keyed = sequence.submit_many([Action("Step", i, key=f"k{i}") for i in range(30, 40)])
    assert [f.get(timeout=LIMIT) for f in plain + keyed] == list(range(40))
    assert peak == 3


def test_at_the_cap_the_loop_goes_on_and_what_waits_starts_in_turn(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """One coroutine holds the only place; the loop still runs callbacks from outside
    (the one that releases it), and the others then run in submission order."""
    order: list[int] = []
    gate = _LoopGate()

    async def step(i: int) -> int:
        if i == 0:
            await gate.wait()
        order.append(i)
        return i

    plan = _async_plan(Step=(Signature("Step"), step))
    sequence = make_sequence(plan, sites=1, runtime=runtime, fate=Fate(max_async_in_flight=1))
    futures = sequence.submit_many([Action("Step", i) for i in range(6)])
    assert gate.reached.wait(LIMIT)
    assert order == []  # the others wait for the place
    gate.open()  # runs only if the loop is not blocked
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(6))
    assert order == list(range(6))


def test_a_shutdown_hands_back_what_waits_for_a_place_never_started(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """At the cap, a shutdown without drain cuts the running coroutine short and hands back
    the waiting ones without starting them; each ends once, nothing is left outstanding."""
    started: list[int] = []
    first_in = threading.Event()

    async def forever(i: int) -> None:
        started.append(i)
        first_in.set()
        await asyncio.Event().wait()

    plan = _async_plan(Forever=(Signature("Forever"), forever))
    sequence = make_sequence(plan, sites=1, runtime=runtime, fate=Fate(max_async_in_flight=1))
    futures = sequence.submit_many([Action("Forever", i) for i in range(8)])
    assert first_in.wait(LIMIT)
    handed_back = sequence.shutdown(drain=False, timeout=0.05)
    assert sorted(a.content for a in handed_back) == list(range(8)) and started == [0]
    for future in futures:
        with pytest.raises(CancellationError):
            future.get(timeout=0)
    stats = sequence.stats()
    assert (stats.cancelled, stats.outstanding) == (8, 0)


def test_the_cap_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_async_in_flight"):
        Fate(max_async_in_flight=-1)


def test_cancel_reaches_an_action_waiting_for_a_place(
    runtime: str, make_sequence: Callable[..., Sequence],
) -> None:
    """Held back by the cap, it has not started: cancel() cancels it (its future raises,
    it is handed back at shutdown, its function never runs); a running one runs on."""
    ran: list[int] = []
    gate = _LoopGate()

    async def step(i: int) -> int:
        if i == 0:
            await gate.wait()
        ran.append(i)
        return i

    plan = _async_plan(Step=(Signature("Step"), step))
    sequence = make_sequence(plan, sites=1, runtime=runtime, fate=Fate(max_async_in_flight=1))
    actions = [Action("Step", i) for i in range(4)]
    futures = sequence.submit_many(actions)
    assert gate.reached.wait(LIMIT)
    assert sequence.cancel(actions[2].id) is True
    assert sequence.cancel(actions[0].id) is False  # running
    assert sequence.cancel(actions[2].id) is False  # ended already
    gate.open()
    assert [futures[i].get(timeout=LIMIT) for i in (0, 1, 3)] == [0, 1, 3]
    with pytest.raises(CancellationError):
        futures[2].get(timeout=LIMIT)
    assert ran == [0, 1, 3]
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.cancelled, stats.outstanding) == (3, 1, 0)


class _FailingProduction(Production):
    """Acknowledges, and its ``complete`` breaks its promise never to raise, for "Bad"."""

    acknowledges: ClassVar[bool] = True

    def complete(self, ticket: Any, result: object, following: Action | None) -> bool:
        if ticket.action.name == "Bad":
            raise OSError("the store went away")
        return False


def test_an_ending_that_fails_to_settle_does_not_strand_the_others_of_its_turn(
    make_sequence: Callable[..., Sequence],
) -> None:
    """Two coroutines end in one turn of the loop, the first one's settle raises: it is
    logged, and the second still completes."""
    everyone: list[asyncio.Event] = []

    async def bad(_: Any) -> str:
        everyone.append(asyncio.Event())
        await everyone[0].wait()
        return "bad"

    async def good(_: Any) -> str:
        everyone[0].set()  # bad resumes first, in the same turn as this one's end
        await asyncio.sleep(0)
        return "good"

    plan = _async_plan(Bad=(Signature("Bad"), bad), Good=(Signature("Good"), good))
    with capture_events() as events:
        sequence = make_sequence(plan, _FailingProduction(), sites=1)
        sequence.submit(Action("Bad"))
        assert sequence.submit(Action("Good")).get(timeout=LIMIT) == "good"
        assert sequence.join(LIMIT)
    [failed] = [e for e in events if e["event"] == "settle_failed"]
    assert failed["action_name"] == "Bad"


def test_a_mix_of_async_actions_on_both_paths_ends_each_exactly_once(
    runtime: str, make_sequence: Callable[..., Sequence], make_life: Callable[..., Life],
) -> None:
    """Plain, keyed, hooked and delayed actions, some failing once then retried, some
    failing for good, some cancelled while they wait for a place under the cap: every
    one ends once, as its future says, and the counts add up."""
    n = int(os.environ.get("ECHO_ASYNC_MIX", "600"))
    rng = random.Random(16)
    tries: dict[int, int] = {}
    ran: dict[int, int] = {}

    async def work(i: int) -> int:
        tries[i] = tries.get(i, 0) + 1
        await asyncio.sleep(0)
        if i % 7 == 0 and tries[i] == 1:
            raise ConnectionError("once")  # retried
        if i % 11 == 0:
            raise ValueError("never")  # dead-lettered after its attempts
        ran[i] = ran.get(i, 0) + 1
        return i

    def hook(action: Action) -> None:
        return None

    life = make_life(runtime=runtime)
    life.register_hook("h", hook)
    retry = RetryPolicy(max_attempts=2, base=0.0)
    plan = _async_plan(Work=(Signature("Work", content_type=int, retry=retry), work))
    sequence = make_sequence(plan, life=life, sites=2, runtime=runtime,
                             fate=Fate(max_async_in_flight=8))
    actions = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.5:
            actions.append(Action("Work", i))
        elif kind < 0.7:
            actions.append(Action("Work", i, key=f"k{i % 5}"))
        elif kind < 0.9:
            actions.append(Action("Work", i, hooks=["h"]))
        else:
            actions.append(Action("Work", i, delay=0.001))
    futures = sequence.submit_many(actions)
    cancelled = {a.content for a in rng.sample(actions, n // 20) if sequence.cancel(a.id)}
    outcomes = {"completed": 0, "dead": 0, "cancelled": 0}
    for action, future in zip(actions, futures, strict=True):
        i = action.content
        try:
            assert future.get(timeout=LIMIT) == i
            outcomes["completed"] += 1
            assert ran[i] == 1 and i not in cancelled
        except CancellationError:
            outcomes["cancelled"] += 1  # before it started, or while its retry waited
            failed_first = i % 7 == 0 or i % 11 == 0
            assert i in cancelled and tries.get(i, 0) in ((0, 1) if failed_first else (0,))
        except ExecutionError:
            outcomes["dead"] += 1
            assert i % 11 == 0 and i not in ran
    assert sequence.join(LIMIT)
    stats = sequence.stats()
    assert (stats.completed, stats.dead_lettered, stats.cancelled, stats.outstanding) == (
        outcomes["completed"], outcomes["dead"], outcomes["cancelled"], 0)
    assert sum(outcomes.values()) == n
