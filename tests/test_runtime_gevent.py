# SPDX-License-Identifier: MIT
"""The gevent runtime: futures, actors, scheduler, call_with_timeout (no monkey-patching here)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.queue
import pykka
import pytest
from logs import capture_events

from echo_actors.runtime import bind_actor, get_runtime
from echo_actors.runtime._gevent import (
    GeventActor,
    GeventFuture,
    GeventRuntime,
    GeventScheduler,
)
from echo_actors.runtime._thread import ThreadRuntime

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 5.0  # seconds any wait in these tests may take before it counts as a failure

Track = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


@pytest.fixture
def track() -> Iterator[Track]:
    """Stop (and check stopped) exactly the actors a test registered with it."""
    refs: list[pykka.ActorRef[Any]] = []

    def add(ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        refs.append(ref)
        return ref

    yield add
    pykka.get_all([ref.stop(block=False) for ref in refs], timeout=LIMIT)
    assert not [ref for ref in refs if ref.is_alive()]


@pytest.fixture
def scheduler() -> Iterator[GeventScheduler]:
    """A scheduler that is stopped after the test."""
    sched = GeventScheduler()
    yield sched
    sched.stop()


class Counter(GeventActor):
    """Counts ``("add", n)`` tells; answers ``"get"``; raises on ``"boom"``."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.stopped_with: int | None = None

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return self.total
        if message == "boom":
            raise ValueError("boom")
        if isinstance(message, tuple) and message[0] == "add":
            self.total += message[1]
            return None
        return super().on_receive(message)

    def add(self, n: int) -> int:
        self.total += n
        return self.total

    def on_stop(self) -> None:
        self.stopped_with = self.total


class Relay(GeventActor):
    """Asks another actor, blocking on the answer from inside its own handler."""

    def __init__(self, target: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.target = target

    def on_receive(self, message: Any) -> Any:
        return self.target.ask(message, timeout=LIMIT)

    def via_proxy(self, n: int) -> int:
        result: int = self.target.proxy().add(n).get(timeout=LIMIT)
        return result + 1000


class Waiter(GeventActor):
    """Blocks in its handler on an event until told to go on; reports that it started."""

    def __init__(self, started: Any, release: Any) -> None:
        super().__init__()
        self.started = started
        self.release = release

    def on_receive(self, message: Any) -> Any:
        self.started.set()
        self.release.wait()
        return message


class Plain(pykka.Actor):
    """A library-style actor deriving from plain ``pykka.Actor`` only."""

    def on_receive(self, message: Any) -> Any:
        return ("plain", message)


# Futures


def test_future_get_times_out_with_pykka_timeout() -> None:
    """get(timeout=...) on an unset future raises pykka.Timeout, letting other greenlets run."""
    future: GeventFuture[int] = GeventFuture()
    ran: list[str] = []
    gevent.spawn(ran.append, "other")
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.05)
    assert ran == ["other"]  # the wait yielded to the hub
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0)


def test_future_set_wakes_a_waiting_greenlet() -> None:
    """A greenlet waiting in get() receives a value set later by another greenlet."""
    future: GeventFuture[str] = GeventFuture()
    waiter = gevent.spawn(future.get, timeout=LIMIT)
    gevent.sleep(0)  # let the waiter block
    future.set("hello")
    assert waiter.get(timeout=LIMIT) == "hello"
    assert future.get() == "hello"


def test_future_set_twice_raises_queue_full() -> None:
    """A second set()/set_exception(), or set_get_hook after a set, raises queue.Full."""
    future: GeventFuture[int] = GeventFuture()
    future.set(1)
    with pytest.raises(queue.Full):
        future.set(2)
    with pytest.raises(queue.Full):
        future.set_exception((ValueError, ValueError("x"), None))
    with pytest.raises(queue.Full):
        future.set_get_hook(lambda _timeout: 3)
    assert future.get(timeout=0) == 1
    hooked: GeventFuture[int] = GeventFuture()
    hooked.set_get_hook(lambda _timeout: 3)
    with pytest.raises(queue.Full):
        hooked.set(4)


def _raise_value_error() -> None:
    raise ValueError("from the setter")


def test_future_reraises_exception_with_traceback() -> None:
    """set_exception() makes get() raise the same exception with its original traceback."""
    future: GeventFuture[None] = GeventFuture()
    try:
        _raise_value_error()
    except ValueError:
        future.set_exception()
    with pytest.raises(ValueError, match="from the setter") as info:
        future.get(timeout=LIMIT)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_value_error" in frames
    bare: GeventFuture[None] = GeventFuture()
    bare.set_exception((KeyError, None, None))
    with pytest.raises(KeyError):
        bare.get(timeout=LIMIT)


def test_future_get_hook_map_join_and_get_all() -> None:
    """set_get_hook, map, join, filter, reduce and pykka.get_all work on GeventFuture."""
    hooked: GeventFuture[int] = GeventFuture()
    calls: list[float | None] = []

    def hook(timeout: float | None) -> int:
        calls.append(timeout)
        return 42

    hooked.set_get_hook(hook)
    assert hooked.get(timeout=1.0) == 42
    assert hooked.get(timeout=1.0) == 42
    assert len(calls) == 1

    a: GeventFuture[int] = GeventFuture()
    b: GeventFuture[int] = GeventFuture()
    c: GeventFuture[Iterable[int]] = GeventFuture()
    mapped = a.map(lambda x: x * 10)
    joined = a.join(b)
    filtered = c.filter(lambda x: x > 1)
    reduced = c.reduce(lambda x, y: x + y)

    def set_all() -> None:
        a.set(1)
        b.set(2)
        c.set([1, 2, 3])

    gevent.spawn(set_all)
    assert mapped.get(timeout=LIMIT) == 10
    assert list(joined.get(timeout=LIMIT)) == [1, 2]
    assert list(filtered.get(timeout=LIMIT)) == [2, 3]
    assert reduced.get(timeout=LIMIT) == 6
    assert list(pykka.get_all([a, b], timeout=LIMIT)) == [1, 2]
    never: GeventFuture[int] = GeventFuture()
    with pytest.raises(pykka.Timeout):
        pykka.get_all([a, never], timeout=0.05)
    with pytest.raises(pykka.Timeout):
        never.map(lambda x: x).get(timeout=0.05)


# Actors


def test_ask_and_tell_round_trip(track: Track) -> None:
    """Tells are processed in order before a later ask is answered."""
    ref = track(Counter.start())
    for n in range(1, 11):
        ref.tell(("add", n))
    assert ref.ask("get", timeout=LIMIT) == 55
    future = ref.ask("get", block=False)
    assert isinstance(future, GeventFuture)
    assert future.get(timeout=LIMIT) == 55


def test_proxy_calls_and_attributes(track: Track) -> None:
    """Proxy method calls and attribute reads return GeventFutures with the answers."""
    proxy = track(Counter.start()).proxy()
    assert proxy.add(5).get(timeout=LIMIT) == 5
    assert proxy.add(2).get(timeout=LIMIT) == 7
    assert proxy.total.get(timeout=LIMIT) == 7


def test_exception_propagates_through_ask(track: Track) -> None:
    """An exception raised by a handler is raised by ask(); the actor lives on."""
    ref = track(Counter.start())
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=LIMIT)
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", block=False).get(timeout=LIMIT)
    assert ref.is_alive()
    assert ref.ask("get", timeout=LIMIT) == 0


def test_actor_asks_another_actor(track: Track) -> None:
    """An actor blocking on an ask to another actor yields to the hub instead of deadlocking."""
    counter = track(Counter.start())
    relay = track(Relay.start(counter))
    counter.tell(("add", 3))
    assert relay.ask("get", timeout=LIMIT) == 3
    assert relay.proxy().via_proxy(4).get(timeout=LIMIT) == 1007
    # Many relays asking the same counter at once.
    relays = [track(Relay.start(counter)) for _ in range(20)]
    answers = pykka.get_all([r.ask("get", block=False) for r in relays], timeout=LIMIT)
    assert list(answers) == [7] * 20


def test_future_timeout_on_a_busy_actor(track: Track) -> None:
    """ask(timeout=...) raises pykka.Timeout while the actor is stuck in a handler."""
    started, release = gevent.event.Event(), gevent.event.Event()
    ref = track(Waiter.start(started, release))
    pending = ref.ask("first", block=False)
    with pytest.raises(pykka.Timeout):
        ref.ask("second", timeout=0.05)
    assert started.is_set()
    release.set()
    assert pending.get(timeout=LIMIT) == "first"


def test_bind_actor_and_get_runtime() -> None:
    """get_runtime('gevent') is a GeventRuntime; bind_actor puts plain actors on greenlets."""
    runtime = get_runtime("gevent")
    assert isinstance(runtime, GeventRuntime)
    assert runtime.name == "gevent"
    actor_class = bind_actor(Plain, runtime)  # type: ignore[type-abstract]
    assert issubclass(actor_class, GeventActor)
    ref = actor_class.start()
    try:
        assert ref.ask("hi", timeout=LIMIT) == ("plain", "hi")
        assert isinstance(ref.actor_inbox, gevent.queue.Queue)
    finally:
        assert ref.stop(timeout=LIMIT) is True


def test_registry_lookup_and_broadcast(track: Track) -> None:
    """ActorRegistry finds gevent actors by class and URN, and broadcast reaches them."""
    refs = [track(Counter.start()) for _ in range(3)]
    found = pykka.ActorRegistry.get_by_class(Counter)
    assert set(refs) <= set(found)
    assert pykka.ActorRegistry.get_by_urn(refs[0].actor_urn) is refs[0]
    pykka.ActorRegistry.broadcast(("add", 2), target_class=Counter)
    assert [r.ask("get", timeout=LIMIT) for r in refs] == [2, 2, 2]


def test_thousand_concurrent_actors(track: Track) -> None:
    """1,000 actors, one greenlet each, all answer an ask."""
    refs = [track(Counter.start()) for _ in range(1000)]
    for i, ref in enumerate(refs):
        ref.tell(("add", i))
    answers = pykka.get_all([ref.ask("get", block=False) for ref in refs], timeout=LIMIT)
    assert list(answers) == list(range(1000))


def test_stop_processes_earlier_messages_and_unregisters(track: Track) -> None:
    """stop(block=True) runs after queued messages, calls on_stop, ends the greenlet."""
    ref = track(Counter.start())
    for _ in range(3):
        ref.tell(("add", 1))
    actor = ref._actor_weakref()
    assert isinstance(actor, Counter)
    assert ref.stop(timeout=LIMIT) is True
    assert actor.stopped_with == 3
    assert not ref.is_alive()
    assert ref.actor_stopped.wait(LIMIT)
    assert actor.actor_greenlet.join(timeout=LIMIT) is None
    assert actor.actor_greenlet.dead
    assert ref not in pykka.ActorRegistry.get_all()
    assert ref.stop(timeout=LIMIT) is False
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("get", timeout=LIMIT)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("get")


def test_stop_from_inside_another_actor(track: Track) -> None:
    """An actor can stop another one with stop(block=True) from its handler."""
    counter = track(Counter.start())

    class Stopper(GeventActor):
        def on_receive(self, message: Any) -> Any:
            return counter.stop(timeout=LIMIT)

    stopper = track(Stopper.start())
    assert stopper.ask("go", timeout=LIMIT) is True
    assert not counter.is_alive()
    assert stopper.is_alive()


def test_kill_idle_actor_leaves_others_running(track: Track) -> None:
    """Killing an idle actor's greenlet stops only that actor and unregisters it."""
    victim = track(Counter.start())
    other = track(Counter.start())
    assert victim.ask("get", timeout=LIMIT) == 0
    actor = victim._actor_weakref()
    assert actor is not None
    actor.actor_greenlet.kill(timeout=LIMIT)
    assert victim.actor_stopped.wait(LIMIT)
    assert victim not in pykka.ActorRegistry.get_all()
    assert other.ask("get", timeout=LIMIT) == 0
    assert victim.stop(timeout=LIMIT) is False


def test_kill_before_the_greenlet_ran(track: Track) -> None:
    """Killing an actor whose greenlet never started still stops and unregisters it."""
    ref = track(Counter.start())
    queued = ref.ask("get", block=False)
    actor = ref._actor_weakref()
    assert actor is not None
    actor.actor_greenlet.kill(timeout=LIMIT)
    assert ref.actor_stopped.wait(LIMIT)
    assert ref not in pykka.ActorRegistry.get_all()
    with pytest.raises(pykka.ActorDeadError):
        queued.get(timeout=LIMIT)


def test_waiting_on_actor_stopped_yields_to_the_hub(track: Track) -> None:
    """actor_stopped is a gevent Event: waiting on it lets another greenlet stop the actor."""
    ref = track(Counter.start())
    stopper = gevent.spawn(ref.stop, timeout=LIMIT)
    assert ref.actor_stopped.wait(LIMIT)
    assert stopper.get(timeout=LIMIT) is True


def test_kill_busy_actor_fails_its_askers_only(track: Track) -> None:
    """Killing an actor mid-handler fails its pending asks with ActorDeadError, nothing else."""
    started, release = gevent.event.Event(), gevent.event.Event()
    victim = track(Waiter.start(started, release))
    other = track(Counter.start())
    running = victim.ask("running", block=False)
    queued = victim.ask("queued", block=False)
    assert started.wait(LIMIT)
    actor = victim._actor_weakref()
    assert actor is not None
    actor.actor_greenlet.kill(timeout=LIMIT)
    with pytest.raises(pykka.ActorDeadError):
        running.get(timeout=LIMIT)
    with pytest.raises(pykka.ActorDeadError):
        queued.get(timeout=LIMIT)
    assert not victim.is_alive()
    assert other.is_alive()
    assert other.ask("get", timeout=LIMIT) == 0


def test_gevent_timeout_escaping_a_handler_becomes_timeout_error(track: Track) -> None:
    """A stray gevent.Timeout in a handler reaches the asker as TimeoutError; other actors live."""

    class Sloppy(GeventActor):
        def on_receive(self, message: Any) -> Any:
            with gevent.Timeout(0.01):
                gevent.event.Event().wait()

    sloppy = track(Sloppy.start())
    other = track(Counter.start())
    with pytest.raises(TimeoutError):
        sloppy.ask("go", timeout=LIMIT)
    assert sloppy.is_alive()
    assert other.is_alive()


# Scheduler


def test_scheduler_runs_in_due_order(scheduler: GeventScheduler) -> None:
    """Callbacks run by due time, and in call order for equal due times."""
    order: list[str] = []
    done = gevent.event.Event()
    scheduler.call_later(0.04, order.append, "d")
    for name in "abc":
        scheduler.call_later(0.02, order.append, name)
    scheduler.call_later(0.0, order.append, "first")
    scheduler.call_later(0.05, done.set)
    assert scheduler.pending() == 6
    assert done.wait(LIMIT)
    assert order == ["first", "a", "b", "c", "d"]
    assert scheduler.pending() == 0


def test_scheduler_cancel_and_pending(scheduler: GeventScheduler) -> None:
    """A cancelled timer never runs and no longer counts as pending."""
    ran: list[str] = []
    done = gevent.event.Event()
    keep = scheduler.call_later(0.01, ran.append, "keep")
    drop = scheduler.call_later(0.01, ran.append, "drop")
    scheduler.call_later(0.02, done.set)
    assert scheduler.pending() == 3
    drop.cancel()
    assert scheduler.pending() == 2
    assert done.wait(LIMIT)
    keep.cancel()  # too late: no effect
    assert ran == ["keep"]
    assert scheduler.pending() == 0


def test_scheduler_earlier_timer_added_while_waiting(scheduler: GeventScheduler) -> None:
    """A timer due sooner than the one being waited for runs first."""
    order: list[str] = []
    done = gevent.event.Event()
    scheduler.call_later(0.05, done.set)
    scheduler.call_later(0.03, order.append, "late")
    gevent.sleep(0)  # the runner is now waiting for the 0.03 timer
    scheduler.call_later(0.0, order.append, "early")
    assert done.wait(LIMIT)
    assert order == ["early", "late"]


def test_scheduler_raising_callback_is_logged_and_later_timers_run(
    scheduler: GeventScheduler,
) -> None:
    """A callback that raises is logged as timer_failed; the next timers still run."""
    done = gevent.event.Event()

    def broken() -> None:
        raise RuntimeError("broken timer")

    with capture_events() as logs:
        scheduler.call_later(0.0, broken)
        scheduler.call_later(0.01, broken)
        scheduler.call_later(0.02, done.set)
        assert done.wait(LIMIT)
    failed = [entry for entry in logs if entry["event"] == "timer_failed"]
    assert len(failed) == 2
    assert failed[0]["log_level"] == "error"
    assert "broken" in failed[0]["callback"]


def test_scheduler_stop_drops_pending_timers() -> None:
    """stop() drops pending timers, ends the greenlet, and refuses new timers."""
    sched = GeventScheduler()
    ran: list[int] = []
    sched.call_later(30, ran.append, 1)
    gevent.sleep(0)
    assert sched.pending() == 1
    sched.stop()
    assert sched.pending() == 0
    assert sched._runner.dead
    with pytest.raises(RuntimeError):
        sched.call_later(0, ran.append, 2)
    assert ran == []
    sched.stop()  # idempotent


def test_scheduler_callback_can_wake_an_actor(scheduler: GeventScheduler, track: Track) -> None:
    """A timer callback telling an actor is seen by a later ask."""
    ref = track(Counter.start())
    done = gevent.event.Event()
    scheduler.call_later(0.01, ref.tell, ("add", 9))
    scheduler.call_later(0.02, done.set)
    assert done.wait(LIMIT)
    assert ref.ask("get", timeout=LIMIT) == 9


# Runtime hooks and call_with_timeout


def test_runtime_hooks() -> None:
    """future, event, scheduler, sleep, monotonic and spawn return gevent objects."""
    runtime = GeventRuntime()
    assert runtime.actor_base is GeventActor
    assert isinstance(runtime.future(), GeventFuture)
    event = runtime.event()
    assert isinstance(event, gevent.event.Event)
    sched = runtime.scheduler()
    assert isinstance(sched, GeventScheduler)
    sched.stop()
    greenlet = runtime.spawn(lambda x, y: x + y, 2, 3)
    assert greenlet.get(timeout=LIMIT) == 5
    ran: list[int] = []
    runtime.spawn(ran.append, 1)
    runtime.sleep(0)  # yields to the hub: the spawned greenlet runs
    assert ran == [1]
    before = time.monotonic()
    now = runtime.monotonic()
    assert before <= now <= time.monotonic()  # the process's monotonic clock


def test_call_with_timeout_interrupts_gevent_sleep() -> None:
    """call_with_timeout cuts a gevent.sleep(10) short with the builtin TimeoutError."""
    runtime = GeventRuntime()
    finished: list[bool] = []

    def nap() -> None:
        gevent.sleep(10)
        finished.append(True)

    with pytest.raises(TimeoutError):
        runtime.call_with_timeout(0.05, nap)
    assert finished == []  # cut short where it waited, not run to its end


def test_call_with_timeout_returns_and_cancels_its_timer() -> None:
    """A fast function's result is returned and the limit does not fire later."""
    runtime = GeventRuntime()
    assert runtime.call_with_timeout(0.05, lambda a, b: a * b, 6, 7) == 42
    assert runtime.call_with_timeout(None, lambda: "no limit") == "no limit"
    # If the timer were left armed it would fire in this wait (not swallowed).
    assert gevent.event.Event().wait(0.1) is False


def test_call_with_timeout_lets_the_functions_own_timeout_through() -> None:
    """A gevent.Timeout the function raises for itself is not turned into TimeoutError."""
    runtime = GeventRuntime()

    def own_timeout() -> None:
        with gevent.Timeout(0.01):
            gevent.event.Event().wait()

    with pytest.raises(gevent.Timeout):
        runtime.call_with_timeout(LIMIT, own_timeout)
    with pytest.raises(ValueError, match="x"):
        runtime.call_with_timeout(LIMIT, _raise_value_error_x)


def _raise_value_error_x() -> None:
    raise ValueError("x")


def test_call_with_timeout_inside_an_actor(track: Track) -> None:
    """Inside a handler, call_with_timeout's TimeoutError reaches the asker; the actor lives on."""
    runtime = GeventRuntime()

    class Slow(GeventActor):
        def on_receive(self, message: Any) -> Any:
            return runtime.call_with_timeout(0.02, gevent.sleep, 10)

    ref = track(Slow.start())
    with pytest.raises(TimeoutError):
        ref.ask("go", timeout=LIMIT)
    assert ref.is_alive()


def test_thread_runtime_call_with_timeout_runs_to_completion() -> None:
    """Under threads the function finishes first; TimeoutError only if it took too long."""
    runtime = ThreadRuntime()
    done: list[bool] = []

    def slow() -> str:
        until = time.monotonic() + 0.002
        while time.monotonic() < until:  # the work being timed: 2 ms of the clock
            pass
        done.append(True)
        return "late"

    with pytest.raises(TimeoutError):
        runtime.call_with_timeout(0.001, slow)
    assert done == [True]  # ran to its end; only then did the attempt count as too long
    assert runtime.call_with_timeout(LIMIT, lambda: "fast") == "fast"
    assert runtime.call_with_timeout(None, slow) == "late"
    with pytest.raises(ValueError, match="x"):
        runtime.call_with_timeout(0.001, _raise_value_error_x)


# Monkey-patched process

PATCHED_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import threading

    import pykka

    from echo_actors.runtime import get_runtime
    from echo_actors.runtime._gevent import GeventActor

    class Answer(GeventActor):
        def on_receive(self, message):
            return message * 2

    class Asker(GeventActor):
        def __init__(self, other):
            super().__init__()
            self.other = other

        def on_receive(self, message):
            return self.other.ask(message, timeout=5) + 1

    runtime = get_runtime("gevent")
    print("patched", monkey.is_module_patched("threading"))
    answer = Answer.start()
    asker = Asker.start(answer)
    print("ask", asker.ask(20, timeout=5))
    print("proxy", asker.proxy().other.get(timeout=5) is answer)

    fired = threading.Event()
    sched = runtime.scheduler()
    sched.call_later(0.01, answer.tell, 1)
    sched.call_later(0.02, fired.set)
    print("timer", fired.wait(5), sched.pending())
    sched.stop()

    try:
        runtime.call_with_timeout(0.02, runtime.sleep, 10)
    except TimeoutError:
        print("timeout ok")

    print("stop", asker.stop(timeout=5), answer.stop(timeout=5))
    print("alive", [r for r in pykka.ActorRegistry.get_all()])
    """
)


@pytest.mark.timeout(60)
def test_runtime_in_a_monkey_patched_process() -> None:
    """After patch_all(): ask between two actors, a timer, call_with_timeout and stop all work."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PATCHED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "patched True",
        "ask 41",
        "proxy True",
        "timer True 0",
        "timeout ok",
        "stop True True",
        "alive []",
    ], result.stderr
