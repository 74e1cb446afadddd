# SPDX-License-Identifier: MIT
"""Deterministic simulation testing: many seeds, each a workload and an interleaving.

``ECHO_DST_SEEDS`` sets how many seeds each scenario runs (default 40: 360
runs, about 20 s; set it higher locally);
``ECHO_DST_SCENARIOS`` (comma-separated names) narrows the scenarios. A
failure lists every failing seed with the command that replays it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from echo_actors import (
    Action,
    CrashError,
    Fate,
    Plan,
    Sequence,
    Signature,
    Site,
    ValidationError,
)
from echo_actors.runtime._simulation import _FaultyActor
from echo_actors.supervision import ChildSpec, start_supervisor
from echo_actors.testing import (
    Faults,
    InjectedCrash,
    Report,
    Scenario,
    SimulationRuntime,
    check,
    check_seeds,
    run_plan,
    simulate,
)

pytestmark = pytest.mark.timeout(120)

SEEDS = int(os.environ.get("ECHO_DST_SEEDS", "40"))

SCENARIOS = {
    "plain": Scenario(ordered=False),
    "ordered": Scenario(),
    "drained": Scenario(ordered=False, stop_early=False),
    "site-crashes": Scenario(ordered=False, site_crashes=0.02),
    "dispatcher-crashes": Scenario(ordered=False, dispatcher_crashes=0.02),
    "life-crashes": Scenario(ordered=False, life_crashes=0.2),
    "delays": Scenario(ordered=False, delays=0.05),
    "everything": Scenario(site_crashes=0.02, dispatcher_crashes=0.02, life_crashes=0.02,
                           delays=0.05),
    "fifo-everything": Scenario(site_crashes=0.02, dispatcher_crashes=0.02,
                                life_crashes=0.02, delays=0.05, discipline="fifo"),
}
"""Each fault class on its own (so a failure says which), then all of them at once, and
all of them under the "fifo" discipline (one shared queue)."""

_chosen = os.environ.get("ECHO_DST_SCENARIOS")
ENABLED = [name.strip() for name in _chosen.split(",")] if _chosen else list(SCENARIOS)


@pytest.fixture(autouse=True)
def _quiet_pykka(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """pykka logs every crash with its traceback: thousands here, and none worth reading
    (the reports say what broke). Raised for these tests only; pytest restores it."""
    caplog.set_level(logging.CRITICAL, logger="pykka")
    yield


# The invariants, over many seeds


@pytest.mark.parametrize("name", ENABLED)
def test_invariants_hold_for_every_seed(name: str) -> None:
    """Every seed's run keeps every invariant (the failure names each failing seed)."""
    reports = check_seeds(range(SEEDS), SCENARIOS[name])
    assert len(reports) == SEEDS


def test_workloads_cover_every_ending() -> None:
    """Over a few seeds the workloads complete, dead-letter and cancel actions, with and
    without drain: the invariants are checked on every kind of ending, not vacuously."""
    reports = [simulate(seed, Scenario(ordered=False)) for seed in range(20)]
    totals = sum((report.counts for report in reports), start=type(reports[0].counts)())
    assert totals["completed"] > 0 and totals["dead"] > 0 and totals["cancelled"] > 0
    assert {report.drain for report in reports} == {True, False}
    assert any(report.stopped_at is None for report in reports)
    assert any(report.stopped_at is not None for report in reports)


def test_the_harness_sees_an_action_run_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Site that runs every action twice breaks 'once per attempt': the report says so."""
    original = Site.receive

    def twice(self: Site, action: Action, life: Any) -> Any:
        original(self, action, life)
        return original(self, action, life)

    monkeypatch.setattr(Site, "receive", twice)
    report = simulate(0, Scenario(actions=20, ordered=False, stop_early=False))
    assert any("ran again after it completed" in v for v in report.violations)


def test_the_harness_sees_a_lost_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Sequence that forgets its dead letters breaks 'ended exactly once': reported."""
    monkeypatch.setattr(Sequence, "dead_letters", lambda self: [])
    report = simulate(0, Scenario(actions=40, ordered=False, stop_early=False))
    assert any("never ended" in v for v in report.violations)
    assert any("stats" in v for v in report.violations)


# Determinism


def test_same_seed_same_trace() -> None:
    """One seed, run twice, with faults and shuffling: the same events at the same times."""
    scenario = Scenario(site_crashes=0.05, dispatcher_crashes=0.02, delays=0.05)
    first, second = simulate(11, scenario), simulate(11, scenario)
    assert len(first.trace) > 100
    assert first.trace == second.trace
    assert first.injected == second.injected
    assert first.counts == second.counts


def test_two_seeds_differ() -> None:
    """Two seeds give two different runs."""
    assert simulate(1).trace != simulate(2).trace


def test_shuffling_changes_the_interleaving() -> None:
    """The same workload under other schedule seeds runs in other orders; FIFO in one."""
    scenario = Scenario(ordered=False, stop_early=False)
    shuffled = {tuple(simulate(5, scenario, schedule=s).trace) for s in range(6)}
    assert len(shuffled) > 1
    fifo = Scenario(ordered=False, stop_early=False, shuffle=False)
    plain = [simulate(5, fifo).trace for _ in range(2)]
    assert plain[0] == plain[1]


def test_kernel_shuffle_is_seeded() -> None:
    """Ready greenlets run FIFO by default; with shuffle, in an order fixed by the seed."""

    def order(runtime: SimulationRuntime) -> list[int]:
        seen: list[int] = []
        for i in range(8):
            runtime.spawn(seen.append, i)
        runtime.run()
        return seen

    assert order(SimulationRuntime(3)) == list(range(8))
    orders = {tuple(order(SimulationRuntime(seed, shuffle=True))) for seed in range(10)}
    assert len(orders) > 1
    assert all(sorted(o) == list(range(8)) for o in orders)
    assert order(SimulationRuntime(4, shuffle=True)) == order(SimulationRuntime(4, shuffle=True))


# The fault injector


class _Echo(pykka.Actor):
    """Keeps what it was told; answers asks with it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return list(self.seen)
        if message == "boom":
            raise RuntimeError("told to crash")
        self.seen.append(message)
        return None


def test_faults_off_cost_nothing() -> None:
    """Without faults the actors are plain simulation actors, and the kernel is FIFO."""
    runtime = SimulationRuntime(1)
    assert not issubclass(runtime.actor_base, _FaultyActor)
    assert runtime.faults is None and not runtime.shuffle
    assert issubclass(SimulationRuntime(1, faults=Faults()).actor_base, _FaultyActor)


def test_an_injected_crash_is_a_crash_the_supervisor_restarts() -> None:
    """crash_before on a told message: the actor stops with InjectedCrash, its supervisor
    restarts it, and the message is lost with it; the next actor gets the next message."""
    faults = Faults(1, crash_before=1.0, max_crashes=1, match=Faults.kinds("_Echo"))
    runtime = SimulationRuntime(1, faults=faults)
    handle = start_supervisor([ChildSpec("echo", _Echo)], runtime=runtime, max_restarts=5)
    try:
        first = handle.which_children()[0].ref
        assert first is not None
        first.tell("lost")
        runtime.run(1.0)
        assert not first.is_alive()
        child = handle.which_children()[0]
        assert child.restarts == 1 and child.ref is not None and child.ref.is_alive()
        child.ref.tell("kept")
        assert child.ref.ask("get") == ["kept"]
        assert faults.crashes == 1
        assert [(kind, actor) for _, kind, actor, _ in faults.injected] == [
            ("crash_before", "_Echo")
        ]
    finally:
        handle.stop()


def test_crash_after_keeps_the_message_effect() -> None:
    """crash_after: the message was handled (its effect is seen) before the actor died."""
    faults = Faults(2, crash_after=1.0, max_crashes=1)
    runtime = SimulationRuntime(2, faults=faults)
    seen: list[Any] = []

    class Recorder(pykka.Actor):
        def on_receive(self, message: Any) -> Any:
            seen.append(message)

    from echo_actors.runtime import bind_actor  # noqa: PLC0415 - the test's own concern

    ref = bind_actor(Recorder, runtime).start()
    ref.tell("one")
    runtime.run(1.0)
    assert seen == ["one"] and not ref.is_alive()


def test_asks_crash_only_when_asked_for() -> None:
    """An ask is not crashed by default; with asks=True the asker gets the error."""
    from echo_actors.runtime import bind_actor  # noqa: PLC0415 - the test's own concern

    quiet = SimulationRuntime(1, faults=Faults(1, crash_before=1.0))
    ref = bind_actor(_Echo, quiet).start()
    assert ref.ask("get") == []
    ref.stop()
    loud = SimulationRuntime(1, faults=Faults(1, crash_before=1.0, asks=True))
    ref = bind_actor(_Echo, loud).start()
    with pytest.raises(InjectedCrash):
        ref.ask("get")
    assert not ref.is_alive()


def test_delays_keep_a_mailbox_in_order_and_take_virtual_time() -> None:
    """A delayed message holds back those behind it: all arrive, in order, later."""
    faults = Faults(3, delay=1.0, max_delay=2.0, max_delays=1)
    runtime = SimulationRuntime(3, faults=faults)
    from echo_actors.runtime import bind_actor  # noqa: PLC0415 - the test's own concern

    ref = bind_actor(_Echo, runtime).start()
    for i in range(5):
        ref.tell(i)
    assert ref.ask("get") == [0, 1, 2, 3, 4]
    assert faults.delays == 1 and runtime.monotonic() > 0
    ref.stop()


def test_mail_held_for_an_actor_that_died_is_answered_not_lost() -> None:
    """An ask held back while its actor crashed gets ActorDeadError, as pykka answers what
    a dead actor's inbox held, instead of hanging."""
    faults = Faults(5, delay=0.0, max_delay=1.0)
    runtime = SimulationRuntime(5, faults=faults)
    from echo_actors.runtime import bind_actor  # noqa: PLC0415 - the test's own concern

    ref = bind_actor(_Echo, runtime).start()
    ref.tell("boom")
    faults.delay = 1.0
    answer = ref.ask("get", block=False)
    with pytest.raises(pykka.ActorDeadError):
        answer.get(timeout=10.0)
    assert faults.delays == 1 and not ref.is_alive()


def test_faults_are_bounded_and_validated() -> None:
    """At most max_crashes crashes; bad probabilities and a shared Faults are refused."""
    faults = Faults(4, crash_after=1.0, max_crashes=3, match=Faults.kinds("_Echo"))
    runtime = SimulationRuntime(4, faults=faults)
    handle = start_supervisor([ChildSpec("echo", _Echo)], runtime=runtime, max_restarts=10)
    try:
        for _ in range(10):
            ref = handle.which_children()[0].ref
            assert ref is not None
            ref.tell("x")
            runtime.run(1.0)
        assert faults.crashes == 3
        assert handle.which_children()[0].restarts == 3
    finally:
        handle.stop()
    with pytest.raises(ValueError, match="probability"):
        Faults(crash_before=1.5)
    with pytest.raises(ValueError, match="one SimulationRuntime"):
        SimulationRuntime(1, faults=faults)


def test_site_faults_crash_and_restart_sites_over_seeds() -> None:
    """With Site crashes on, the harness's runs see injected crashes and supervisor restarts."""
    reports = [simulate(seed, Scenario(ordered=False, site_crashes=0.05, stop_early=False,
                                       crashing_actions=False)) for seed in range(10)]
    assert sum(len(report.injected) for report in reports) > 0
    assert sum(report.restarts for report in reports) > 0


# Reports


def test_a_report_names_its_seed_and_the_replay_line() -> None:
    """A failing report's summary gives the seed and a command that replays that scenario."""
    report = Report(42, Scenario(site_crashes=0.1), violations=["a1 never ended"])
    summary = report.summary()
    assert "seed 42" in summary and "a1 never ended" in summary
    assert "check(42, Scenario(site_crashes=0.1))" in report.replay()
    assert Report(7, Scenario()).ok


def test_check_raises_with_the_seed() -> None:
    """check() raises an AssertionError with the seed in it when an invariant broke."""
    import echo_actors.testing as testing  # noqa: PLC0415 - patched for this test only

    original = testing._check

    def broken(report: Report, *args: Any) -> None:
        original(report, *args)
        report.violations.append("made up for this test")

    testing._check = broken  # type: ignore[assignment]
    try:
        with pytest.raises(AssertionError, match=r"seed 3: .*\n  replay: .*check\(3"):
            check(3, Scenario(actions=10))
    finally:
        testing._check = original


# run_plan


def _plan() -> Plan:
    attempts: dict[int, int] = {}

    def flaky(n: int) -> int:
        attempts[n] = attempts.get(n, 0) + 1
        if attempts[n] < 2:
            raise RuntimeError("not yet")
        return n

    def fatal(_: Any) -> None:
        raise ValidationError("never")

    def crash(_: Any) -> None:
        raise CrashError("this action crashes its Site")

    return (
        Plan()
        .with_signature(Signature("double")).with_function("double", lambda n: 2 * n)
        .with_signature(Signature("flaky")).with_function("flaky", flaky)
        .with_signature(Signature("fatal")).with_function("fatal", fatal)
        .with_signature(Signature("crash"))
        .with_function("crash", crash)
    )


def test_run_plan_reports_each_action() -> None:
    """run_plan gives results, errors and dead letters, retries included, in virtual time."""
    actions = [Action("double", 21), Action("flaky", 5), Action("fatal", None),
               Action("double", 1, delay=60.0)]
    run = run_plan(_plan(), actions, seed=1)
    assert run.result(actions[0]) == 42
    assert run.result(actions[1]) == 5
    with pytest.raises(ValidationError):
        run.result(actions[2])
    assert run.result(actions[3]) == 2
    assert [letter.action.id for letter in run.dead_letters] == [actions[2].id]
    assert run.stats.completed == 3 and run.stats.dead_lettered == 1
    assert run.virtual_time >= 60.0


def test_run_plan_is_deterministic() -> None:
    """Same plan, actions and seed: the same outcome and the same virtual time."""
    actions = [Action("flaky", i) for i in range(20)] + [Action("crash", None)]

    def outcome() -> tuple[Any, ...]:
        run = run_plan(_plan(), actions, seed=9, shuffle=True,
                       fate=Fate(max_attempts=2, backoff_jitter=0.5))
        return (run.results, sorted(run.errors), run.virtual_time)

    assert outcome() == outcome()


def test_run_plan_leaves_no_actor_behind() -> None:
    """After run_plan, no actor of its runtime is still registered."""
    before = len(pykka.ActorRegistry.get_all())
    run_plan(_plan(), [Action("double", 1)])
    assert len(pykka.ActorRegistry.get_all()) == before


def test_sequence_under_faults_through_the_public_api() -> None:
    """A Sequence on a faulty, shuffled runtime still runs plain work (a smoke test)."""
    faults = Faults(5, crash_after=0.05, match=Faults.kinds("Site"), max_crashes=3)
    runtime = SimulationRuntime(5, shuffle=True, faults=faults)
    with Sequence(_plan(), fate=Fate(sites=3), runtime=runtime) as sequence:
        futures = sequence.submit_many(Action("double", i) for i in range(50))
        assert sequence.join()
    assert [future.get(timeout=0) for future in futures] == [2 * i for i in range(50)]
