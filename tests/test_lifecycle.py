# SPDX-License-Identifier: MIT
"""Every accepted action ends exactly once: each numbered behaviour of issue 10, attacked."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest
import structlog

from echo_actors import (
    Action,
    CancellationError,
    CrashError,
    EchoError,
    ExecutionError,
    Fate,
    LicenseError,
    Life,
    Plan,
    Production,
    Sequence,
    Signature,
    Site,
    ValidationError,
    sign,
)
from echo_actors._messages import Done
from echo_actors._ticket import Ticket
from echo_actors.runtime._simulation import SimulationRuntime
from echo_actors.supervision import SupervisorStartError

LIMIT = 20.0
FAST = Fate(backoff_base=0.001, backoff_cap=0.01)
ROUNDS = int(os.environ.get("ECHO_RACE_ROUNDS", "200"))
"""Rounds of each thread race (CI's count; set ECHO_RACE_ROUNDS=2000 to hunt longer)."""


def _plan(**functions: Callable[..., Any]) -> Plan:
    plan = Plan()
    for name, function in functions.items():
        plan = plan.with_signature(Signature(name)).with_function(name, function)
    return plan.build()


@pytest.fixture
def made() -> Iterator[list[Sequence]]:
    """Sequences a test made; shut down without drain afterwards, none left running."""
    sequences: list[Sequence] = []
    yield sequences
    for sequence in sequences:
        sequence.shutdown(drain=False, timeout=LIMIT)
    assert not [ref for ref in pykka.ActorRegistry.get_all() if ref.is_alive()
                and type(ref.actor_class).__name__ != "SimulationActor"
                and ref.actor_class.__name__ not in {"_LifeActor"}]


class _SlowTake(Production):
    """A production whose every take keeps the dispatcher busy for a while (no sleep: work)."""

    def take(self, limit: int) -> list[Any]:
        deadline = time.perf_counter() + 0.002
        while time.perf_counter() < deadline:
            pass
        return super().take(limit)


def _gated() -> tuple[threading.Event, threading.Event, Callable[[int], int]]:
    """A function that says it started, then waits for the gate: (started, gate, function)."""
    started, gate = threading.Event(), threading.Event()

    def work(n: int) -> int:
        started.set()
        gate.wait(LIMIT)
        return n

    return started, gate, work


def _outcome(future: Any, timeout: float = LIMIT) -> str:
    try:
        future.get(timeout=timeout)
    except CancellationError:
        return "cancelled"
    except EchoError:
        return "dead"
    except pykka.Timeout:
        return "never ended"
    return "completed"


# 1. A Site restart never runs an action twice, and join() returns.


@pytest.mark.parametrize("slow", [False, True])
def test_site_crashes_under_load_run_nothing_twice(made: list[Sequence], slow: bool) -> None:
    """Sites crash while work keeps arriving (the dispatcher slowed too): each ran once."""
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    class Crashy(Site):
        def receive(self, action: Action, life: Life) -> Any:
            if action.content % 17 == 0 and action.attempt == 1:
                raise CrashError("the Site broke before running it")
            with lock:
                ran[action.content] += 1
            return action.content

    sequence = Sequence(_plan(Work=lambda n: n), _SlowTake() if slow else Production(),
                        site=Crashy, sites=3, fate=FAST.replace(mailbox_window=4))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Work", n)) for n in range(1_000)]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(1_000))
    assert sequence.join(LIMIT)
    assert ran == Counter(range(1_000))  # every one ran exactly once
    stats = sequence.stats()
    assert stats.crash_requeued == len(range(0, 1_000, 17))
    assert stats.completed == 1_000 and stats.outstanding == 0


# 2. An exception inside a dispatcher handler loses no ticket.


def test_dispatcher_crash_mid_work_loses_nothing(made: list[Sequence]) -> None:
    """A dispatcher that crashes while actions wait everywhere: all 50 end, none lost."""
    gate = threading.Event()
    sequence = Sequence(_plan(Work=lambda n: (gate.wait(LIMIT), n)[1]), sites=2,
                        fate=FAST.replace(mailbox_window=4))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Work", n)) for n in range(50)]
    sequence._run.desk.post(Done(site=99, ran=0, failed=0))  # type: ignore[union-attr]
    gate.set()
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(50))
    assert sequence.join(LIMIT)


def test_dispatcher_crash_then_shutdown_hands_back_everything(made: list[Sequence]) -> None:
    """After a dispatcher crash, shutdown(drain=False) hands back every action not started."""
    started, gate, work = _gated()
    sequence = Sequence(_plan(Work=work), sites=1, fate=FAST.replace(mailbox_window=4))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Work", n)) for n in range(50)]
    assert started.wait(LIMIT)
    sequence._run.desk.post(Done(site=99, ran=0, failed=0))  # type: ignore[union-attr]
    handed_back: list[Action] = []
    stopper = threading.Thread(target=lambda: handed_back.extend(
        sequence.shutdown(drain=False, timeout=LIMIT)))
    stopper.start()
    outcomes = Counter(_outcome(f) for f in futures[1:])
    gate.set()
    stopper.join(LIMIT)
    assert _outcome(futures[0]) == "completed"  # it had started: it finishes
    assert outcomes == {"cancelled": 49}
    assert sorted(a.content for a in handed_back) == list(range(1, 50))


# 3 and 16. submit races shutdown: every future it returned resolves.


@pytest.mark.timeout(600)
@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize("drain", [True, False])
def test_submit_racing_shutdown_strands_nothing(drain: bool, slow: bool) -> None:
    """Submitters race a shutdown (tiny switch interval, dispatcher slowed or not):
    each submit raises, or its future resolves; cancelled ones are handed back."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(ROUNDS):
            production = _SlowTake() if slow else Production()
            sequence = Sequence(_plan(Work=lambda n: n), production, sites=2).start()
            futures: list[Any] = []
            going = threading.Event()

            def submitter(sequence: Sequence = sequence, futures: list[Any] = futures,
                          going: threading.Event = going) -> None:
                # Until refused: every other action awaited, so the Sequence keeps going
                # idle (the moment a draining shutdown may stop) while more arrive.
                for n in range(2_000):
                    try:
                        future = sequence.submit(Action("Work", n))
                    except RuntimeError:
                        return
                    futures.append(future)
                    going.set()
                    if n % 2:
                        _outcome(future, 5.0)

            threads = [threading.Thread(target=submitter) for _ in range(3)]
            for thread in threads:
                thread.start()
            going.wait(LIMIT)
            handed_back = sequence.shutdown(drain=drain, timeout=LIMIT)
            for thread in threads:
                thread.join(LIMIT)
            outcomes = Counter(_outcome(f, 5.0) for f in futures)
            assert outcomes["completed"] + outcomes["cancelled"] == len(futures)
            assert outcomes["cancelled"] == len(handed_back)
            if drain:
                assert outcomes["cancelled"] == 0
    finally:
        sys.setswitchinterval(interval)


# 4. A batch ends in a finally: what completed before a crash is acknowledged.


class _Acking(Production):
    """A production that wants acknowledgements, and records them."""

    acknowledges = True

    def __init__(self) -> None:
        super().__init__()
        self.acked: list[int] = []

    def ack(self, tickets: list[Any]) -> None:
        self.acked.extend(t.action.content for t in tickets)


def test_crash_mid_batch_still_acknowledges_what_completed(made: list[Sequence]) -> None:
    """A CrashError after some tickets of a batch completed: those are acknowledged once."""
    production = _Acking()

    class CrashOnFive(Site):
        def receive(self, action: Action, life: Life) -> Any:
            if action.content == 5 and action.attempt == 1:
                raise CrashError("broken")
            return super().receive(action, life)

    production_ids = list(range(10))
    for n in production_ids:
        production.assign(Action("Work", n))
    sequence = Sequence(_plan(Work=lambda n: n), production, site=CrashOnFive, sites=1,
                        fate=FAST.replace(mailbox_window=32))
    made.append(sequence.start())
    assert sequence.join(LIMIT)
    assert sorted(production.acked) == production_ids  # each once, the crashed one after retry


# 5 and 14. An exception while logging never strands an action.


class _Broken(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise OSError("the stream is closed")

    def handle(self, record: logging.LogRecord) -> bool:  # no handleError: it propagates
        self.emit(record)
        return True


def _closed_pipe(*_args: Any) -> Any:
    raise BrokenPipeError("the stream is closed")


def test_logging_that_raises_strands_nothing(made: list[Sequence]) -> None:
    """Logging that raises on every event (a stdlib handler, and structlog's global
    pipeline too): retries, dead letters and crashes all end, join() returns."""
    logger = logging.getLogger("echo_actors")
    handler = _Broken(level=logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    saved = structlog.get_config()
    structlog.configure(processors=[_closed_pipe])
    tries: Counter[int] = Counter()

    def flaky(n: int) -> int:
        tries[n] += 1
        if n % 3 == 0:
            raise ValueError("permanent")  # retried, then dead-lettered
        if n % 3 == 1 and tries[n] == 1:
            raise CrashError("crash once")
        return n

    try:
        sequence = Sequence(_plan(Flaky=flaky), sites=2,
                            fate=FAST.replace(max_attempts=2, action_events=True))
        made.append(sequence.start())
        futures = [sequence.submit(Action("Flaky", n)) for n in range(30)]
        outcomes = Counter(_outcome(f) for f in futures)
        assert outcomes == {"completed": 20, "dead": 10}
        assert sequence.join(LIMIT)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        structlog.configure(**saved)


# 6. Ordered keys keep their order through retries and crash requeues.


@pytest.mark.parametrize("failure", ["retry", "crash"])
def test_ordered_key_keeps_order_through_retries(made: list[Sequence], failure: str) -> None:
    """The first action of a key fails once: the key still completes as 0, 1, 2, 3, 4."""
    done: list[int] = []
    tries: Counter[int] = Counter()

    def step(n: int) -> int:
        tries[n] += 1
        if n == 0 and tries[n] == 1:
            raise CrashError("crash") if failure == "crash" else OSError("transient")
        done.append(n)
        return n

    sequence = Sequence(_plan(Step=step), sites=3, fate=FAST.replace(backoff_base=0.05))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Step", n, key="k", ordered=True)) for n in range(5)]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(5))
    assert done == [0, 1, 2, 3, 4]


def test_ordered_keys_keep_order_on_every_runtime_under_simulation() -> None:
    """Many ordered keys, random failures, on the simulation clock: each key in order."""
    rt = SimulationRuntime(seed=3)
    rng = rt.random("test")
    done: dict[str, list[int]] = {}

    def step(item: list[Any]) -> None:
        key, n = item
        rt.sleep(rng.random())
        if rng.random() < 0.2:
            raise OSError("transient")
        done.setdefault(key, []).append(n)

    sequence = Sequence(_plan(Step=step), sites=4, runtime=rt,
                        fate=FAST.replace(max_attempts=50, runtime="simulation"))
    with sequence:
        futures = [sequence.submit(Action("Step", [f"k{n % 5}", n], key=f"k{n % 5}",
                                          ordered=True)) for n in range(100)]
        for future in futures:
            future.get()
    assert {k: v for k, v in done.items()} == {
        f"k{k}": [n for n in range(100) if n % 5 == k] for k in range(5)
    }


# 7. Stealing is work-conserving: no Site idles while another's queue holds stealable work.


@pytest.mark.parametrize("window", [1, 4])
def test_no_site_idles_while_stealable_work_waits(window: int) -> None:
    """Random arrivals and keyed work on the simulation clock, shuffled interleavings:
    the virtual time during which a Site idles while an action waits is zero (with a
    window of 1, the production is emptied by a take that asked for exactly what it held)."""
    for seed in range(int(os.environ.get("ECHO_DST_SEEDS", "40"))):
        rt = SimulationRuntime(seed=seed, shuffle=True)
        rng = rt.random("workload")
        sites = 3
        submitted: dict[int, float] = {}
        spans: dict[int, tuple[float, float]] = {}

        def record(action: Action, site: Site, call_next: Any, rt: Any = rt,
                   spans: dict[int, tuple[float, float]] = spans) -> Any:
            start = rt.monotonic()
            try:
                return call_next(action)
            finally:
                spans[action.content[0]] = (start, rt.monotonic())

        def work(item: list[Any], rt: Any = rt) -> None:
            rt.sleep(item[1])

        sequence = Sequence(_plan(Work=work), sites=sites, runtime=rt, steps=[record],
                            fate=Fate(runtime="simulation", mailbox_window=window))
        with sequence:
            futures = []
            for n in range(120):
                rt.sleep(rng.expovariate(2.5))
                submitted[n] = rt.monotonic()
                key = "hot" if rng.random() < 0.4 else None
                futures.append(sequence.submit(Action("Work", [n, rng.expovariate(1.0)], key=key)))
            for future in futures:
                future.get()
        assert _idle_while_waiting(submitted, spans, sites) == 0.0, f"seed {seed}"


def test_a_take_that_empties_the_production_arms_its_wake_up() -> None:
    """A take of exactly what was queued leaves the production armed: the next put wakes
    the consumer (else that action would wait for some other event while Sites idle)."""
    production = Production()
    woken: list[int] = []
    production.bind(lambda: woken.append(1))
    production.put(Ticket(Action("Work", [0, 1.0])))
    assert woken == [1]  # a newly bound consumer is woken by the first put
    assert len(production.take(1)) == 1
    production.put(Ticket(Action("Work", [1, 1.0])))
    assert woken == [1, 1]
    assert len(production.take(5)) == 1  # found it empty on the way: armed as before
    production.put(Ticket(Action("Work", [2, 1.0])))
    assert woken == [1, 1, 1]


def _idle_while_waiting(
    submitted: dict[int, float], spans: dict[int, tuple[float, float]], sites: int
) -> float:
    """Virtual time during which a Site idled while some submitted action had not started."""
    points = sorted({*submitted.values(), *(t for span in spans.values() for t in span)})
    total = 0.0
    for left, right in itertools.pairwise(points):
        busy = sum(1 for start, end in spans.values() if start <= left and end >= right)
        waiting = sum(1 for n, at in submitted.items() if at <= left and spans[n][0] >= right)
        if waiting and busy < sites:
            total += right - left
    return total


# 8. One Fate, owned by Life.


def test_a_fate_given_with_a_life_is_applied_to_it(made: list[Sequence]) -> None:
    """Sequence(life=Life(), fate=keys): the Sites check the keys; a differing Life is refused."""
    life = Life()
    sequence = Sequence(_plan(Echo=lambda x: x), Production(), life, Site,
                        fate=Fate(license_keys=("k",)))
    made.append(sequence.start())
    with pytest.raises(LicenseError):
        sequence.submit(Action("Echo", 1)).get(timeout=LIMIT)
    with pytest.raises(LicenseError):
        sequence.submit(sign(Action("Echo", 2), "other")).get(timeout=LIMIT)
    assert sequence.submit(sign(Action("Echo", 3), "k")).get(timeout=LIMIT) == 3
    assert life.fate.license_keys == ("k",)
    with pytest.raises(ValueError, match="one Fate per Life"):
        Sequence(_plan(Echo=lambda x: x), life=Life(Fate(max_attempts=5)),
                 fate=Fate(max_attempts=7))


def test_set_fate_reaches_retries_and_chained_signatures(made: list[Sequence]) -> None:
    """life.set_fate: max_attempts applies at once; chained actions are signed with the new key."""
    life = Life(FAST.replace(license_keys=("old",), max_attempts=5))
    tries: Counter[str] = Counter()

    def fail(_: Any) -> None:
        tries["fail"] += 1
        raise OSError("always")

    sequence = Sequence(_plan(Fail=fail, Head=lambda x: x, Tail=lambda x: x * 2), life=life,
                        sites=1)
    made.append(sequence.start())
    life.set_fate(life.fate.replace(max_attempts=2, license_keys=("new", "old")))
    with pytest.raises(ExecutionError):
        sequence.submit(sign(Action("Fail", 0), "new")).get(timeout=LIMIT)
    assert tries["fail"] == 2
    life.set_fate(life.fate.replace(license_keys=("newest",)))
    head = sign(Action("Head", 21, next=Action("Tail")), "newest")
    assert sequence.submit(head).get(timeout=LIMIT) == 21
    assert sequence.join(LIMIT)
    assert sequence.stats().completed == 2
    assert [d.action.name for d in sequence.dead_letters()] == ["Fail"]


# 9. No leaks: dead letters are capped.


def test_dead_letters_are_capped_and_counted(made: list[Sequence]) -> None:
    """Past Fate.max_dead_letters the oldest are dropped, and the drop is counted."""
    sequence = Sequence(_plan(Fail=lambda _: 1 / 0), sites=1,
                        fate=FAST.replace(max_attempts=1, max_dead_letters=3))
    made.append(sequence.start())
    for future in [sequence.submit(Action("Fail", n)) for n in range(8)]:
        assert _outcome(future) == "dead"
    assert sequence.join(LIMIT)
    assert sorted(d.action.content for d in sequence.dead_letters()) == [5, 6, 7]
    assert sequence.stats().dead_letters_dropped == 5


# 10. A Site that cannot start fails the start.


def test_start_fails_when_a_site_cannot_start() -> None:
    """A Site whose __init__ raises: start() raises it, no actor is left, submit refuses."""

    class Broken(Site):
        def __init__(self, *args: Any) -> None:
            raise OSError("no database")

    before = set(pykka.ActorRegistry.get_all())
    sequence = Sequence(_plan(Echo=lambda x: x), site=Broken, sites=2)
    with pytest.raises(SupervisorStartError) as info:
        sequence.start()
    assert isinstance(info.value.__cause__, OSError)
    assert not [r for r in set(pykka.ActorRegistry.get_all()) - before if r.is_alive()]
    with pytest.raises(RuntimeError):
        sequence.submit(Action("Echo", 1))
    assert sequence.shutdown() == []


# 11. A program that forgets shutdown() exits, with a warning, its waiting work cancelled.


def test_forgotten_sequence_lets_the_program_exit() -> None:
    """The main thread ends with a Sequence running: the process exits, warning on stderr."""
    script = textwrap.dedent("""
        from echo_actors import Action, Plan, Sequence, Signature
        plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
        sequence = Sequence(plan, sites=2).start()
        assert sequence.submit(Action("Echo", 1)).get(timeout=10) == 1
        waiting = sequence.submit(Action("Echo", 2, delay=3600))
        import atexit
        atexit.register(lambda: print("waiting:", type(waiting.get(timeout=5)).__name__))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=LIMIT, check=False)
    assert result.returncode == 0
    assert "was still running when the main thread ended" in result.stderr
    assert "CancellationError" in result.stderr


# 12. Poison versus systemic.


def test_poison_actions_become_dead_letters_and_the_sequence_stays_healthy(
    made: list[Sequence],
) -> None:
    """200 actions that crash their Site each time: all dead-lettered, the Sequence runs on."""

    def poison(_: Any) -> None:
        raise CrashError("this action breaks any Site")

    sequence = Sequence(_plan(Poison=poison, Echo=lambda x: x), sites=2,
                        fate=FAST.replace(max_restarts=5, restart_within=60.0))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Poison", n)) for n in range(200)]
    assert Counter(_outcome(f) for f in futures) == {"dead": 200}
    assert sequence.submit(Action("Echo", "alive")).get(timeout=LIMIT) == "alive"
    assert all(d.error_kind == "crash" and d.attempts == 3 for d in sequence.dead_letters())
    assert sequence.failure is None


def test_a_systemic_failure_fails_loudly(made: list[Sequence]) -> None:
    """Sites that crash with nothing in hand exhaust the supervisor: everything fails, named."""
    gate = threading.Event()

    class Doomed(Site):
        def on_receive(self, message: Any) -> Any:
            if gate.is_set():
                raise RuntimeError("the disk is gone")
            return super().on_receive(message)

    sequence = Sequence(_plan(Echo=lambda x: x), site=Doomed, sites=2,
                        fate=FAST.replace(max_restarts=2, restart_within=60.0))
    made.append(sequence.start())
    gate.set()
    futures = [sequence.submit(Action("Echo", n)) for n in range(20)]
    for future in futures:
        with pytest.raises(CancellationError, match="the Sequence failed"):
            future.get(timeout=LIMIT)
    assert sequence.failure is not None
    with pytest.raises(RuntimeError, match="failed"):
        sequence.submit(Action("Echo", 99))
    assert sorted(a.content for a in sequence.shutdown(timeout=LIMIT)) == list(range(20))


# 13. SystemExit from a function is that action's failure.


def test_system_exit_in_a_function_is_its_failure(made: list[Sequence]) -> None:
    """A function calling sys.exit: dead-lettered; another Sequence keeps answering."""
    other = Sequence(_plan(Echo=lambda x: x), sites=1)
    made.append(other.start())
    sequence = Sequence(_plan(Exit=lambda _: sys.exit(3), Echo=lambda x: x), sites=2,
                        fate=FAST.replace(max_attempts=2))
    made.append(sequence.start())
    futures = [sequence.submit(Action("Exit", n)) for n in range(20)]
    assert Counter(_outcome(f) for f in futures) == {"dead": 20}
    assert sequence.dead_letters()[0].message.startswith("Exit: SystemExit")
    assert sequence.submit(Action("Echo", 1)).get(timeout=LIMIT) == 1
    assert other.submit(Action("Echo", 2)).get(timeout=LIMIT) == 2


# 15. No scheduler dies of one bad value; the door refuses the worst.


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1.0])
def test_impossible_delays_are_refused_when_built(delay: float) -> None:
    """NaN, inf and negative delays never reach a Sequence: the Action refuses them."""
    with pytest.raises(ValueError, match="delay"):
        Action("Echo", 1, delay=delay)


def test_delays_over_the_fate_limit_are_refused_at_submit(made: list[Sequence]) -> None:
    """A delay over Fate.max_delay: submit and submit_many raise, nothing is accepted."""
    sequence = Sequence(_plan(Echo=lambda x: x), sites=1, fate=Fate(max_delay=60.0))
    made.append(sequence.start())
    with pytest.raises(ValidationError, match="max_delay"):
        sequence.submit(Action("Echo", 1, delay=61.0))
    with pytest.raises(ValidationError, match="max_delay"):
        sequence.submit_many([Action("Echo", 2), Action("Echo", 3, delay=1e12)])
    assert sequence.stats().accepted == 0


@pytest.mark.parametrize("runtime", ["thread", "gevent"])
def test_far_delays_do_not_kill_the_timers(made: list[Sequence], runtime: str) -> None:
    """Delays of 1e12 s and 1e300 s wait; a later short delay still runs; shutdown hands back."""
    sequence = Sequence(_plan(Echo=lambda x: x), sites=1, runtime=runtime,
                        fate=Fate(max_delay=1e308))
    made.append(sequence.start())
    far = [sequence.submit(Action("Echo", n, delay=d)) for n, d in enumerate([1e12, 1e300])]
    assert sequence.submit(Action("Echo", "soon", delay=0.01)).get(timeout=LIMIT) == "soon"
    handed_back = sequence.shutdown(drain=False, timeout=LIMIT)
    assert sorted(a.content for a in handed_back) == [0, 1]
    assert [_outcome(f) for f in far] == ["cancelled", "cancelled"]


# 17. Unkeyed work never starves behind a busy key.


def test_unkeyed_work_does_not_starve_behind_a_busy_key(made: list[Sequence]) -> None:
    """40 held actions on one key, then 20 unkeyed: the unkeyed all complete meanwhile.

    Without stealing: an idle Site may rightly steal a held unordered keyed action (and
    then wait for the gate too), which is not the starvation this is about (the
    dispatcher moving keyed tickets while unkeyed ones wait in the production).
    """
    gate = threading.Event()

    def held(n: int) -> int:
        gate.wait(LIMIT)
        return n

    sequence = Sequence(_plan(Held=held, Free=lambda n: n), sites=3,
                        fate=FAST.replace(mailbox_window=4, steal=False))
    made.append(sequence.start())
    keyed = [sequence.submit(Action("Held", n, key="busy", ordered=o))
             for n in range(40) for o in [n % 2 == 0]]
    free = [sequence.submit(Action("Free", n)) for n in range(20)]
    assert [f.get(timeout=LIMIT) for f in free] == list(range(20))
    assert not gate.is_set()
    gate.set()
    assert [f.get(timeout=LIMIT) for f in keyed] == list(range(40))


# Cancelling one action.


def test_cancel_one_action(made: list[Sequence]) -> None:
    """cancel(id): a waiting action is handed back; one that started runs on."""
    started, gate, work = _gated()
    sequence = Sequence(_plan(Work=work), sites=1, fate=FAST.replace(mailbox_window=2))
    made.append(sequence.start())
    running = Action("Work", 0)
    queued = [Action("Work", n) for n in range(1, 6)]
    delayed = Action("Work", 9, delay=3600)
    futures = [sequence.submit(a) for a in [running, *queued, delayed]]
    assert started.wait(LIMIT)
    assert not sequence.cancel(running.id)
    assert sequence.cancel(queued[0].id)  # in the Site's mailbox
    assert sequence.cancel(queued[4].id)  # still in the production
    assert sequence.cancel(delayed.id)  # on a timer
    assert not sequence.cancel(delayed.id)  # once
    assert not sequence.cancel("no-such-id")
    gate.set()
    assert [_outcome(f) for f in futures] == [
        "completed", "cancelled", "completed", "completed", "completed", "cancelled",
        "cancelled",
    ]
    assert sequence.join(LIMIT)
    assert sequence.stats().cancelled == 3


class _Watched(threading.Event):
    """An Event that says when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.set()
        return super().wait(timeout)


@pytest.mark.parametrize("call", ["submit", "shutdown"])
def test_a_call_during_a_start_waits_for_it(made: list[Sequence], call: str) -> None:
    """submit() or shutdown() while another thread's start() is under way waits for it: the
    action runs; the shutdown stops what that start made (its supervisor, its exit hook)."""
    from echo_actors.runtime._thread import _main_exit_callbacks  # noqa: PLC0415

    entered, gate = threading.Event(), threading.Event()

    class SlowSite(Site):
        def on_start(self) -> None:
            entered.set()
            assert gate.wait(LIMIT)
            super().on_start()

    sequence = Sequence(_plan(Echo=lambda c: c), site=SlowSite, sites=1, fate=Fate())
    made.append(sequence)
    ready = sequence._ready = _Watched()
    starter = threading.Thread(target=sequence.start)
    starter.start()
    assert entered.wait(LIMIT)  # the start is under way: its Site is starting
    outcome: list[Any] = []
    if call == "submit":
        caller = threading.Thread(target=lambda: outcome.append(sequence.submit(Action("Echo", 1))))
    else:
        caller = threading.Thread(target=lambda: outcome.append(sequence.shutdown(drain=True)))
    caller.start()
    assert ready.waited.wait(LIMIT)  # it waits for the start
    gate.set()
    starter.join(LIMIT)
    caller.join(LIMIT)
    assert not starter.is_alive() and not caller.is_alive() and len(outcome) == 1
    if call == "submit":
        assert outcome[0].get(timeout=LIMIT) == 1
    else:
        assert outcome[0] == []
        assert sequence.supervisor is not None and not sequence.supervisor.is_alive()
        assert sequence._exit_hook is not None
        assert sequence._exit_hook._key not in _main_exit_callbacks
