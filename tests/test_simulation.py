# SPDX-License-Identifier: MIT
"""The simulation runtime: virtual time, determinism, and the two example models."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pykka
import pytest

from echo_actors import (
    Action,
    ActionTimeoutError,
    ExecutionError,
    Fate,
    Plan,
    RetryPolicy,
    Sequence,
    Signature,
)
from echo_actors.runtime import RUNTIMES, bind_actor, get_runtime
from echo_actors.runtime._simulation import SimulationRuntime
from echo_actors.supervision import Backoff, ChildSpec, start_supervisor

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0


def _load(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Struct's annotations through it
    spec.loader.exec_module(module)
    return module


bank = _load("bank")
epidemic = _load("epidemic")


@pytest.fixture
def rt() -> SimulationRuntime:
    """A fresh simulation runtime, seed 1."""
    return SimulationRuntime(seed=1)


@pytest.fixture
def sequences() -> Iterator[list[Sequence]]:
    """Sequences a test made, shut down (drain=False) afterwards."""
    made: list[Sequence] = []
    yield made
    for sequence in made:
        sequence.shutdown(drain=False)


def _sequence(made: list[Sequence], plan: Plan, rt: SimulationRuntime, **fate: Any) -> Sequence:
    sequence = Sequence(plan, fate=Fate(runtime="simulation", **fate), runtime=rt)
    made.append(sequence)
    return sequence.start()


# The runtime by name


def test_registered_by_name() -> None:
    """'simulation' is a runtime name: get_runtime, Fate and Sequence accept it."""
    assert "simulation" in RUNTIMES
    runtime = get_runtime("simulation")
    assert isinstance(runtime, SimulationRuntime) and runtime.name == "simulation"
    assert Fate(runtime="simulation").runtime == "simulation"
    plan = Plan().with_signature(Signature("double")).with_function("double", lambda x: 2 * x)
    sequence = Sequence(plan, fate=Fate(runtime="simulation", sites=2))
    with sequence:
        assert sequence.submit(Action("double", 21)).get() == 42
        assert isinstance(sequence.runtime, SimulationRuntime)


# Virtual time


def test_hours_of_delay_and_sleep_pass_in_virtual_time(rt: SimulationRuntime,
                                                       sequences: list[Sequence]) -> None:
    """A 1 h delay then a 2 h sleep in the function: the result comes at virtual 3 h."""
    seen: list[float] = []

    def work(x: int) -> int:
        seen.append(rt.monotonic())
        rt.sleep(2 * HOUR)
        return x + 1

    plan = Plan().with_signature(Signature("work")).with_function("work", work)
    sequence = _sequence(sequences, plan, rt, sites=2)
    assert sequence.submit(Action("work", 1, delay=HOUR)).get() == 2
    assert seen == [HOUR]
    assert rt.monotonic() == 3 * HOUR


def test_retry_backoff_advances_the_virtual_clock(rt: SimulationRuntime,
                                                  sequences: list[Sequence]) -> None:
    """Backoff of 10 min then 20 min (no jitter): attempts at 0, 600 and 1800 virtual s."""
    attempts: list[float] = []

    def flaky(_: Any) -> str:
        attempts.append(rt.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "done"

    policy = RetryPolicy(max_attempts=3, base=600.0, cap=HOUR, jitter=0.0)
    plan = Plan().with_signature(Signature("flaky", retry=policy)).with_function("flaky", flaky)
    sequence = _sequence(sequences, plan, rt, sites=1)
    assert sequence.submit(Action("flaky")).get() == "done"
    assert attempts == [0.0, 600.0, 1800.0]
    assert sequence.stats().retried == 2


def test_timeout_interrupts_at_the_virtual_deadline(rt: SimulationRuntime,
                                                    sequences: list[Sequence]) -> None:
    """A function sleeping 1 h under a 30 s timeout fails at virtual 30 s."""
    def slow(_: Any) -> None:
        rt.sleep(HOUR)

    signature = Signature("slow", timeout=30.0, retry=RetryPolicy(max_attempts=1))
    plan = Plan().with_signature(signature).with_function("slow", slow)
    sequence = _sequence(sequences, plan, rt, sites=1)
    with pytest.raises(ActionTimeoutError):
        sequence.submit(Action("slow")).get()
    assert rt.monotonic() == 30.0


def test_call_with_timeout_in_a_greenlet(rt: SimulationRuntime) -> None:
    """call_with_timeout raises TimeoutError at the deadline; a quick call returns its value."""
    outcome = rt.future()

    def body() -> None:
        assert rt.call_with_timeout(5.0, lambda: (rt.sleep(1.0), "quick")[1]) == "quick"
        try:
            rt.call_with_timeout(5.0, rt.sleep, 60.0)
        except TimeoutError:
            outcome.set(rt.monotonic())

    rt.spawn(body)
    assert outcome.get() == 6.0


def test_event_wait_times_out_in_virtual_time(rt: SimulationRuntime) -> None:
    """An event nobody sets: wait(90) returns False with the clock moved 90 s."""
    event = rt.event()
    assert event.wait(90.0) is False
    assert rt.monotonic() == 90.0
    rt.spawn(lambda: (rt.sleep(10.0), event.set()))
    assert event.wait() is True
    assert rt.monotonic() == 100.0


def test_a_get_that_can_never_complete_raises_timeout(rt: SimulationRuntime) -> None:
    """Nothing runnable, no timer pending: get() raises pykka.Timeout instead of hanging."""
    with pytest.raises(pykka.Timeout):
        rt.future().get()


def test_ready_greenlets_run_in_fifo_order(rt: SimulationRuntime) -> None:
    """Greenlets run in the order they became ready, including after sleep(0)."""
    order: list[str] = []

    def worker(name: str) -> None:
        order.append(f"{name}1")
        rt.sleep(0)
        order.append(f"{name}2")

    for name in "abc":
        rt.spawn(worker, name)
    rt.run()
    assert order == ["a1", "b1", "c1", "a2", "b2", "c2"]
    assert rt.monotonic() == 0.0


def test_a_wait_from_ordinary_code_returns_before_the_next_greenlet_runs(
    rt: SimulationRuntime,
) -> None:
    """get() returns once its value is set, even when greenlets switch to each other directly."""
    future = rt.future()
    order: list[str] = []

    def setter() -> None:
        future.set(1)
        order.append("set")
        rt.sleep(0)  # ready again, behind "other": the kernel hands over, unless get() is done
        order.append("setter again")

    rt.spawn(setter)
    rt.spawn(order.append, "other")
    assert future.get() == 1 and order == ["set"]
    rt.run()
    assert order == ["set", "other", "setter again"]


def test_run_for_a_time_stops_at_its_deadline_between_sleeps(rt: SimulationRuntime) -> None:
    """run(seconds) ends at its deadline though the next sleep's end is handed over directly."""
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            rt.sleep(1.0)
            ticks.append(rt.monotonic())

    rt.spawn(ticker)
    rt.run(3.5)
    assert ticks == [1.0, 2.0, 3.0] and rt.monotonic() == 3.5
    rt.run(1.0)
    assert ticks == [1.0, 2.0, 3.0, 4.0] and rt.monotonic() == 4.5


def test_waiting_on_a_stopped_flag_runs_the_kernel(rt: SimulationRuntime) -> None:
    """An actor's actor_stopped is the kernel's event: waiting on it lets the actor stop."""
    class Idle(pykka.Actor):
        pass

    ref = bind_actor(Idle, rt).start()
    ref.stop(block=False)
    assert ref.is_alive()  # nothing ran yet: the stop waits in its inbox
    assert ref.actor_stopped.wait(HOUR) and not ref.is_alive() and rt.monotonic() == 0.0
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("too late")


def test_timers_due_together_run_in_scheduling_order(rt: SimulationRuntime) -> None:
    """Timers at the same virtual time run in the order they were scheduled."""
    scheduler = rt.scheduler()
    fired: list[int] = []
    for n in range(5):
        scheduler.call_later(10.0, fired.append, n)
    cancelled = scheduler.call_later(5.0, fired.append, 99)
    cancelled.cancel()
    assert scheduler.pending() == 5
    rt.run()
    assert fired == [0, 1, 2, 3, 4] and rt.monotonic() == 10.0 and scheduler.pending() == 0


def test_actors_ask_each_other_on_the_kernel(rt: SimulationRuntime) -> None:
    """A pykka actor bound to the runtime answers asks; its handler's sleep is virtual."""
    class Clock(pykka.Actor):
        def on_receive(self, message: Any) -> Any:
            rt.sleep(message)
            return rt.monotonic()

    ref = bind_actor(Clock, rt).start()
    try:
        assert ref.ask(HOUR) == HOUR
        assert ref.ask(HOUR, block=False).get() == 2 * HOUR
        with pytest.raises(pykka.Timeout):
            ref.ask(HOUR, timeout=60.0)
        assert rt.monotonic() == 2 * HOUR + 60.0
    finally:
        ref.stop()


# Determinism


def _jittery_log(seed: int) -> list[tuple[float, str, int]]:
    runtime = SimulationRuntime(seed=seed)
    tries: dict[int, int] = {}

    def flaky(n: int) -> int:
        tries[n] = tries.get(n, 0) + 1
        runtime.record("try", n=n, attempt=tries[n])
        if tries[n] < 3:
            raise RuntimeError("again")
        return n

    policy = RetryPolicy(max_attempts=3, base=1.0, cap=60.0, jitter=1.0)
    plan = Plan().with_signature(Signature("flaky", retry=policy)).with_function("flaky", flaky)
    with Sequence(plan, fate=Fate(runtime="simulation", sites=3), runtime=runtime) as sequence:
        futures = sequence.submit_many(Action("flaky", n) for n in range(20))
        assert [f.get() for f in futures] == list(range(20))
    return [(when, event, fields["n"]) for when, event, fields in runtime.events]


def test_same_seed_gives_the_same_event_log() -> None:
    """Two runs with one seed: identical event logs (retry jitter included)."""
    assert _jittery_log(7) == _jittery_log(7)


def test_different_seeds_give_different_event_logs() -> None:
    """Two seeds: the jitter differs, so the virtual times in the logs differ."""
    assert _jittery_log(7) != _jittery_log(8)


# The examples


def test_bank_conserves_money_and_is_deterministic() -> None:
    """The bank, small and with crashing tellers: money conserved exactly, same log twice."""
    first = bank.run(accounts=12, transfers=300, seed=3, sites=6, crash_rate=0.05)
    second = bank.run(accounts=12, transfers=300, seed=3, sites=6, crash_rate=0.05)
    assert first.conserved and first.money_after == 12 * bank.START_BALANCE
    assert first.committed + first.refused + first.gave_up == 300
    assert first.crashes > 0 and first.retried > 0
    assert first.log == second.log and first.balances == second.balances
    assert first.virtual_seconds > 0
    other = bank.run(accounts=12, transfers=300, seed=4, sites=6, crash_rate=0.05)
    assert other.conserved and other.log != first.log


def test_bank_main_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """bank.main runs from arguments and reports conservation (no chart asked)."""
    report = bank.main(["--accounts", "30", "--transfers", "200", "--seed", "1", "--chart", ""])
    assert report.conserved
    assert "conserved" in capsys.readouterr().out


def test_epidemic_conserves_population_and_is_deterministic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The epidemic, small: one virtual day per step, population conserved, same curve twice."""
    first = epidemic.main(["--regions", "6", "--days", "15", "--seed", "2", "--chart", ""])
    second = epidemic.run(6, 15, 2)
    assert first.curve == second.curve
    assert first.final_population == first.population == 6 * 10_000
    assert [int(row[0]) for row in first.curve] == list(range(15))
    assert first.virtual_seconds >= 14 * epidemic.DAY
    assert "conserved" in capsys.readouterr().out


def test_errors_keep_their_kinds(rt: SimulationRuntime, sequences: list[Sequence]) -> None:
    """A failure worth retrying that runs out of attempts becomes a dead letter, as on threads."""
    def broken(_: Any) -> None:
        raise ValueError("broken")

    plan = Plan().with_signature(Signature("broken")).with_function("broken", broken)
    sequence = _sequence(sequences, plan, rt, sites=1, max_attempts=2)
    with pytest.raises(ExecutionError):
        sequence.submit(Action("broken")).get()
    assert [letter.attempts for letter in sequence.dead_letters()] == [2]


def test_supervisor_backoff_restarts_in_virtual_time(rt: SimulationRuntime) -> None:
    """A child crashing under a supervisor with a 60 s backoff is back at virtual 60 s."""
    starts: list[float] = []
    again = rt.event()

    class Child(pykka.Actor):
        def on_start(self) -> None:
            starts.append(rt.monotonic())
            if len(starts) == 2:
                again.set()

        def on_receive(self, message: Any) -> Any:
            raise RuntimeError(f"crash on {message!r}")

    supervisor = start_supervisor([ChildSpec("child", Child)], runtime=rt,
                                  backoff=Backoff(base=60.0, cap=60.0))
    try:
        first = supervisor.which_children()[0].ref
        assert first is not None
        first.tell("boom")
        assert again.wait()
        assert starts == [0.0, 60.0]
        assert supervisor.which_children()[0].restarts == 1
    finally:
        supervisor.stop()


def _keyed_log(seed: int) -> list[tuple[float, str, int]]:
    runtime = SimulationRuntime(seed=seed)

    def step(content: dict[str, Any]) -> None:
        runtime.sleep(content["work"])
        runtime.record(content["key"], n=content["n"])

    plan = Plan().with_signature(Signature("step")).with_function("step", step)
    with Sequence(plan, fate=Fate(runtime="simulation", sites=4), runtime=runtime) as sequence:
        draw = runtime.random("workload")
        actions = [
            Action("step", {"key": key, "n": n, "work": draw.uniform(1, 10)}, key=key,
                   ordered=True)
            for n in range(10) for key in ("a", "b", "c", "d", "e")
        ]
        for future in sequence.submit_many(actions):
            future.get()
    return [(when, event, fields["n"]) for when, event, fields in runtime.events]


def test_keyed_ordered_actions_keep_their_order_deterministically() -> None:
    """Ordered actions of one key complete in submission order; the same seed, the same log."""
    log = _keyed_log(11)
    for key in "abcde":
        assert [n for _, event, n in log if event == key] == list(range(10))
    assert log == _keyed_log(11)
    assert log != _keyed_log(12)


@pytest.mark.parametrize(("runtime", "hidden", "extra"), [
    ("simulation", "greenlet", "simulation"), ("gevent", "gevent", "gevent")])
def test_a_runtime_whose_package_is_missing_says_what_to_install(
        runtime: str, hidden: str, extra: str) -> None:
    """Without greenlet (or gevent), asking for its runtime names the extra to install."""
    script = (f"import sys; sys.modules[{hidden!r}] = None\n"
              "from echo_actors.runtime import get_runtime\n"
              f"get_runtime({runtime!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ImportError: the {runtime} runtime needs the {hidden} package: "
        f"pip install 'echo_actors[{extra}]'")
