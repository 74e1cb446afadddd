# SPDX-License-Identifier: MIT
"""What modellers need: virtual times and ids, Context, queue disciplines, one seed,
and queueing models checked against queueing theory."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import importlib.util
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import pytest
from conftest import LIMIT

from echo_actors import (
    Action,
    CancellationError,
    Context,
    ExecutionError,
    Fate,
    Plan,
    RetryPolicy,
    Sequence,
    Signature,
    Times,
)
from echo_actors.action import new_id
from echo_actors.runtime import Runtime, get_runtime
from echo_actors.runtime._gevent import GeventRuntime
from echo_actors.runtime._simulation import SimulationRuntime
from echo_actors.runtime._thread import ThreadRuntime

pytestmark = pytest.mark.timeout(60)

MakeSequence = Callable[..., Sequence]

CUSTOMERS = int(os.environ.get("ECHO_MODEL_CUSTOMERS", "15000"))
"""Customers per queueing-model test (CI-sized; raise it to tighten the check)."""

BATCHES = 20


def _plan(**functions: Callable[..., Any]) -> Plan:
    plan = Plan()
    for name, fn in functions.items():
        plan.with_signature(Signature(name)).with_function(name, fn)
    return plan.build()


# Queueing models


def _serve(service: float, ctx: Context) -> None:
    ctx.sleep(service)


def _queue(
    seed: int, lam: float, mu: float, servers: int, customers: int, discipline: str = "fifo"
) -> list[Times]:
    """An M/M/c queue on the simulation runtime: Poisson arrivals submitted by a
    process, exponential service in a plan function; the customers' Times."""
    runtime = SimulationRuntime(seed=seed)
    fate = Fate(sites=servers, discipline=discipline)
    arrivals = runtime.random("arrivals")
    services = runtime.random("services")
    done = runtime.event()
    futures: list[pykka.Future[Any]] = []
    with Sequence(_plan(Serve=_serve), fate=fate, runtime=runtime) as sequence:

        def arrive() -> None:
            for _ in range(customers):
                runtime.sleep(arrivals.expovariate(lam))
                futures.append(sequence.submit(Action("Serve", services.expovariate(mu))))
            done.set()

        runtime.spawn(arrive)
        assert done.wait()
        assert sequence.join()
    for future in futures:
        future.get(timeout=0)
    times = [future.times for future in futures]
    assert all(t is not None for t in times)
    return [t for t in times if t is not None]


def _erlang_c_wait(lam: float, mu: float, servers: int) -> float:
    """The mean wait in queue of FIFO M/M/c (Erlang C)."""
    a = lam / mu
    rho = a / servers
    top = a**servers / math.factorial(servers) / (1 - rho)
    below = sum(a**k / math.factorial(k) for k in range(servers)) + top
    return top / below / (servers * mu - lam)


def _idle_while_waiting(times: list[Times], servers: int) -> int:
    """How many customers arrived to a queue while a server was free (0: work-conserving)."""
    starts = sorted(t.started for t in times if t.started is not None)
    ends = sorted(t.finished for t in times)
    return sum(
        1 for t in times
        if t.wait > 0
        and bisect.bisect_right(starts, t.accepted) - bisect.bisect_right(ends, t.accepted)
        < servers
    )


def _batch_means(values: list[float], batches: int = BATCHES) -> tuple[float, float]:
    """The mean of ``values`` (a warm-up tenth dropped) and its batch-means standard error."""
    kept = values[len(values) // 10 :]
    size = len(kept) // batches
    means = [statistics.fmean(kept[i * size : (i + 1) * size]) for i in range(batches)]
    return statistics.fmean(means), statistics.stdev(means) / math.sqrt(batches)


@pytest.mark.parametrize(
    ("servers", "rho", "discipline"),
    [(1, 0.5, "steal"), (1, 0.8, "steal"), (3, 0.5, "fifo"), (3, 0.8, "fifo"),
     (3, 0.8, "steal")],
    ids=["mm1-0.5", "mm1-0.8", "mm3-0.5-fifo", "mm3-0.8-fifo", "mm3-0.8-steal"],
)
def test_mean_wait_matches_queueing_theory(servers: int, rho: float, discipline: str) -> None:
    """M/M/1 and M/M/3 mean waits lie within 3 batch-means standard errors of Erlang C,
    and no customer ever waits while a server is free."""
    mu = 1.0
    lam = rho * servers * mu
    times = _queue(11, lam, mu, servers, CUSTOMERS, discipline)
    assert _idle_while_waiting(times, servers) == 0
    waits = [t.wait for t in times]
    mean, se = _batch_means(waits)
    expected = _erlang_c_wait(lam, mu, servers)
    assert abs(mean - expected) < 3 * se, (mean, expected, se)
    services = [t.service for t in times if t.service is not None]
    assert len(services) == CUSTOMERS
    assert abs(statistics.fmean(services) - 1 / mu) < 4 / math.sqrt(CUSTOMERS)


def test_fifo_reproduces_fifo_mmc_start_times_exactly() -> None:
    """On a fixed trace, "fifo" starts every customer when FIFO c-server queueing says."""
    gaps = [0.0, 0.25, 0.25, 0.125, 0.375, 0.125, 0.125, 1.75, 0.125, 0.5, 0.0625]
    services = [1.5, 0.5, 2.0, 0.25, 1.0, 0.75, 0.5, 0.125, 1.0, 0.375, 0.625]
    servers = 2
    # FIFO M/M/c by recurrence: each customer, in arrival order, takes the earliest free server.
    expected: list[float] = []
    free = [0.0] * servers
    arrival = 0.0
    for gap, service in zip(gaps, services, strict=True):
        arrival += gap
        start = max(arrival, heapq.heappop(free))
        expected.append(start)
        heapq.heappush(free, start + service)

    def run(discipline: str) -> list[float]:
        runtime = SimulationRuntime(seed=1)
        done = runtime.event()
        futures: list[pykka.Future[Any]] = []
        fate = Fate(sites=servers, discipline=discipline)
        with Sequence(_plan(Serve=_serve), fate=fate, runtime=runtime) as sequence:

            def arrive() -> None:
                for gap, service in zip(gaps, services, strict=True):
                    runtime.sleep(gap)
                    futures.append(sequence.submit(Action("Serve", service)))
                done.set()

            runtime.spawn(arrive)
            assert done.wait()
            assert sequence.join()
        starts = []
        for future in futures:
            future.get(timeout=0)
            assert future.times is not None and future.times.started is not None
            starts.append(future.times.started)
        return starts

    assert run("fifo") == expected
    # The default discipline queues at a Site and steals the newest: another order.
    assert run("steal") != expected


def test_fifo_key_picks_no_site() -> None:
    """Under "fifo", actions of one (unordered) key run on every free Site."""
    runtime = SimulationRuntime(seed=2)
    fate = Fate(sites=2, discipline="fifo")
    with Sequence(_plan(Serve=_serve), fate=fate, runtime=runtime) as sequence:
        futures = [sequence.submit(Action("Serve", 1.0, key="k")) for _ in range(4)]
        starts = []
        for future in futures:
            future.get()
            assert future.times is not None
            starts.append(future.times.started)
    assert starts == [0.0, 0.0, 1.0, 1.0]


def test_fifo_keeps_ordered_keys_in_order(every_runtime: Runtime,
                                          make_sequence: MakeSequence) -> None:
    """Under "fifo", an ordered key runs one action at a time, in submission order."""
    log: list[tuple[str, int]] = []
    running: dict[str, int] = {}

    def work(n: int, ctx: Context) -> int:
        key = ctx.action.key or ""
        running[key] = running.get(key, 0) + 1
        assert running[key] == 1 or not ctx.action.ordered, "two of one ordered key at once"
        ctx.sleep(0.001)
        running[key] -= 1
        log.append((key, n))
        return n

    fate = Fate(sites=3, discipline="fifo")
    sequence = make_sequence(_plan(Work=work), fate=fate, runtime=every_runtime)
    actions = []
    for n in range(30):
        if n % 3 == 0:
            actions.append(Action("Work", n, key="a", ordered=True))
        elif n % 3 == 1:
            actions.append(Action("Work", n, key="b", ordered=True))
        else:
            actions.append(Action("Work", n))
    futures = [sequence.submit(action) for action in actions]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(30))
    for key, rest in (("a", 0), ("b", 1)):
        assert [n for k, n in log if k == key] == [n for n in range(30) if n % 3 == rest]
    assert sum(site.processed for site in sequence.stats().sites) == 30


def test_fifo_retries_and_stats(every_runtime: Runtime, make_sequence: MakeSequence) -> None:
    """Under "fifo" a failed action is retried and ends once; no Site reports a backlog."""
    tries: dict[int, int] = {}

    def flaky(n: int) -> int:
        tries[n] = tries.get(n, 0) + 1
        if tries[n] == 1 and n % 2:
            raise RuntimeError("first try fails")
        return n

    fate = Fate(sites=2, discipline="fifo", backoff_base=0.001)
    sequence = make_sequence(_plan(Flaky=flaky), fate=fate, runtime=every_runtime)
    futures = [sequence.submit(Action("Flaky", n)) for n in range(20)]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(20))
    stats = sequence.stats()
    assert (stats.completed, stats.retried) == (20, 10)
    assert all(site.backlog == 0 for site in stats.sites)


def test_a_discipline_is_checked() -> None:
    """An unknown discipline is refused, naming the choices; ECHO_DISCIPLINE is read."""
    with pytest.raises(ValueError, match="steal, fifo"):
        Fate(discipline="lifo")
    assert Fate.load(env={"ECHO_DISCIPLINE": "fifo"}).discipline == "fifo"
    with pytest.raises(ValueError, match="ECHO_DISCIPLINE"):
        Fate.load(env={"ECHO_DISCIPLINE": "random"})


# Virtual time and ids


def _trace(seed: int) -> list[tuple[str, float, Times]]:
    """Ids, creation times and Times of a small seeded model (retries included)."""
    runtime = SimulationRuntime(seed=seed)
    rng = runtime.random("model")

    def work(n: int, ctx: Context) -> int:
        ctx.sleep(ctx.random("service").expovariate(2.0))
        if rng.random() < 0.2:
            raise RuntimeError("unlucky")
        return n

    retry = RetryPolicy(max_attempts=5, base=0.5)
    plan = Plan().with_signature(Signature("Work", retry=retry)).with_function("Work", work)
    done = runtime.event()
    futures: list[pykka.Future[Any]] = []
    created: list[Action] = []
    with Sequence(plan.build(), fate=Fate(sites=2), runtime=runtime) as sequence:

        def arrive() -> None:
            for n in range(40):
                runtime.sleep(rng.expovariate(3.0))
                action = Action("Work", n)
                created.append(action)
                futures.append(sequence.submit(action))
            done.set()

        runtime.spawn(arrive)
        assert done.wait()
        assert sequence.join()
    out = []
    for action, future in zip(created, futures, strict=True):
        with contextlib.suppress(ExecutionError):
            future.get(timeout=0)
        assert future.times is not None
        out.append((action.id, action.created_at, future.times))
    return out


def test_same_seed_same_ids_and_times_different_seed_different() -> None:
    """Two runs of one seed give identical ids, created_at and Times; another seed differs."""
    first, again, other = _trace(5), _trace(5), _trace(6)
    assert first == again
    ids = [action_id for action_id, _, _ in first]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    assert {i for i, _, _ in other}.isdisjoint(ids)
    assert [t for _, _, t in other] != [t for _, _, t in first]
    # created_at is virtual: the arrival times, and it is when submit accepted them.
    for _, created_at, times in first:
        assert created_at == times.accepted
        assert times.started is not None and times.accepted <= times.started <= times.finished
    assert first[-1][1] < 60  # virtual seconds, not the wall clock's 1.7e9


def test_ids_are_kept_through_retries_and_requeue() -> None:
    """An id is drawn once: a retry and a requeued dead letter keep it."""
    runtime = SimulationRuntime(seed=3)
    seen: list[str] = []

    def fail(_: Any, ctx: Context) -> None:
        seen.append(ctx.action.id)
        raise RuntimeError("no")

    fate = Fate(sites=1, max_attempts=2, backoff_base=1.0)
    with Sequence(_plan(Fail=fail), fate=fate, runtime=runtime) as sequence, runtime:
        action = Action("Fail")
        future = sequence.submit(action)
        with pytest.raises(ExecutionError):
            future.get()
        assert future.times is not None
        assert future.times.accepted == 0.0
        assert future.times.started == pytest.approx(1.0, rel=0.2)  # the retry's start
        [again] = sequence.requeue()
        with pytest.raises(ExecutionError):
            again.get()
    assert seen == [action.id] * 4
    letters = sequence.dead_letters()
    assert [d.action.id for d in letters] == [action.id]
    assert letters[0].failed_at < 60  # virtual, like the action's created_at


def test_outside_a_simulation_ids_stay_random() -> None:
    """Without a running simulation, ids are unguessable and created_at is the wall clock."""
    runtime = SimulationRuntime(seed=0)
    with runtime:
        inside = Action("X")
    outside = Action("X")
    first = f"{random.Random('0:action-ids:0').getrandbits(128):032x}"  # the documented stream
    assert inside.created_at == 0.0 and inside.id == first
    assert abs(outside.created_at - time.time()) < 60
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and inside.id not in ids


def test_times_on_every_runtime(every_runtime: Runtime, make_sequence: MakeSequence) -> None:
    """``future.times`` is set before the result, on the runtime's clock, in order."""
    before = every_runtime.monotonic()

    def nap(seconds: float, ctx: Context) -> float:
        ctx.sleep(seconds)
        return seconds

    sequence = make_sequence(_plan(Nap=nap), sites=1, runtime=every_runtime)
    futures = [sequence.submit(Action("Nap", 0.01)) for _ in range(3)]
    for future in futures:
        assert future.get(timeout=LIMIT) == 0.01
        times = future.times
        assert isinstance(times, Times) and times.started is not None
        assert before <= times.accepted <= times.started < times.finished
        assert times.service is not None and times.service >= 0.01 - 1e-9
        assert times.wait == times.started - times.accepted
    assert futures[0].times is not None and futures[2].times is not None
    assert futures[2].times.started >= futures[0].times.finished  # one Site: one after another
    # submit_many stamps them too
    many = sequence.submit_many([Action("Nap", 0.0), Action("Nap", 0.0)])
    for future in many:
        future.get(timeout=LIMIT)
        assert future.times is not None and future.times.started is not None


def test_times_of_a_cancelled_action(every_runtime: Runtime, make_sequence: MakeSequence) -> None:
    """An action cancelled before it started has Times with ``started`` None."""
    sequence = make_sequence(_plan(Echo=lambda x: x), sites=1, runtime=every_runtime)
    future = sequence.submit(Action("Echo", 1, delay=30.0))
    action_id = sequence.shutdown(drain=False, timeout=LIMIT)[0].id
    with pytest.raises(CancellationError):
        future.get(timeout=LIMIT)
    times = future.times
    assert times is not None and times.started is None and times.service is None
    assert times.finished >= times.accepted and times.wait == times.finished - times.accepted
    assert action_id


# Context


def test_context_on_every_runtime(every_runtime: Runtime, make_sequence: MakeSequence) -> None:
    """A function that asks for a Context gets its action, clock, random streams and cache."""
    streams: set[int] = set()

    def ask(content: int, ctx: Context) -> tuple[str, int, float]:
        assert isinstance(ctx, Context)
        t0 = ctx.monotonic()
        ctx.sleep(0.001)
        assert ctx.monotonic() >= t0
        streams.add(id(ctx.random("draws")))
        ctx.cache_set(("seen", content), ctx.site)
        assert ctx.cache_get(("seen", content)) == ctx.site
        return ctx.action.id, content, ctx.random("draws").random()

    def plain(content: int) -> int:
        return content * 2

    plan = _plan(Ask=ask, Plain=plain)
    assert dict(plan.contextual) == {"Ask": "ctx"}
    sequence = make_sequence(plan, sites=2, runtime=every_runtime)
    actions = [Action("Ask", n) for n in range(6)]
    results = [f.get(timeout=LIMIT) for f in [sequence.submit(a) for a in actions]]
    assert [(r[0], r[1]) for r in results] == [(a.id, n) for n, a in enumerate(actions)]
    assert len(streams) == 1  # one generator per name for the Sequence
    assert sequence.submit(Action("Plain", 4)).get(timeout=LIMIT) == 8
    assert sequence.life.cache_get(("seen", 5)) in (0, 1)


def test_context_in_a_keyword_only_parameter_and_a_string_annotation() -> None:
    """Found by its annotation wherever it sits (keyword-only, or written as a string)."""

    def keyword(content: Any, *, context: Context) -> Any:
        return context.action.name

    def stringly(content: Any, c: "Context") -> Any:  # noqa: UP037 - the point of the test
        return c.action.name

    plan = _plan(K=keyword, S=stringly)
    assert dict(plan.contextual) == {"K": "context", "S": "c"}
    runtime = SimulationRuntime()
    with Sequence(plan, sites=1, runtime=runtime) as sequence:
        assert sequence.submit(Action("K")).get() == "K"
        assert sequence.submit(Action("S")).get() == "S"


def test_context_in_an_async_function(make_sequence: MakeSequence) -> None:
    """An ``async def`` function can ask for a Context too."""

    calls: list[int] = []

    async def later(content: int, ctx: Context) -> str:
        calls.append(content)
        await asyncio.sleep(0)
        return f"{ctx.action.name}:{content}"

    sequence = make_sequence(_plan(Later=later), sites=1, runtime="thread")
    future = sequence.submit(Action("Later", 3))
    assert future.get(timeout=LIMIT) == "Later:3"
    assert future.times is not None and future.times.started is not None  # settled on the loop
    assert calls == [3]  # given its Context the first time (not on a retry)


def test_a_context_that_cannot_be_passed_is_refused_at_build() -> None:
    """A positional-only Context parameter cannot be passed by keyword: build() says so."""

    def bad(content: Any, ctx: Context, /) -> None:
        return None

    plan = Plan().with_signature(Signature("Bad")).with_function("Bad", bad)
    with pytest.raises(ValueError, match="asks for a Context in 'ctx'"):
        plan.build()


# One seed


def test_fate_seed_seeds_the_runtime_the_sequence_makes() -> None:
    """Fate.seed (or ECHO_SEED) seeds a runtime made by name; a runtime object keeps its own."""
    plan = _plan(Echo=lambda x: x)
    fate = Fate.load(env={"ECHO_SEED": "7", "ECHO_RUNTIME": "simulation"})
    assert fate.seed == 7
    made = Sequence(plan, fate=fate)
    assert isinstance(made.runtime, SimulationRuntime) and made.runtime.seed == 7
    given = Sequence(plan, fate=fate, runtime=SimulationRuntime(seed=3))
    assert given.runtime.seed == 3  # the object given wins
    assert Sequence(plan, fate=Fate(seed=9), runtime="gevent").runtime.random("x").random() == (
        SimulationRuntime(seed=9).random("x").random())
    with pytest.raises(ValueError, match="ECHO_SEED"):
        Fate.load(env={"ECHO_SEED": "seven"})
    with pytest.raises(ValueError, match="seed"):
        Fate(seed=True)  # type: ignore[arg-type]


def test_the_stream_layout_is_the_same_on_every_runtime() -> None:
    """random(name) of a seed draws the same numbers on thread, gevent and simulation."""

    def draws(runtime: Any) -> list[float]:
        return [runtime.random(name).random() for name in ("a", "b", "a")]

    expected = draws(SimulationRuntime(seed=4))
    assert draws(ThreadRuntime(4)) == expected
    assert draws(GeventRuntime(4)) == expected
    assert draws(get_runtime("thread", seed=4)) == expected
    assert draws(ThreadRuntime()) != draws(ThreadRuntime())  # unseeded: the OS's entropy


# The call centre example


def _call_centre() -> Any:
    path = Path(__file__).resolve().parents[1] / "examples" / "call_centre.py"
    spec = importlib.util.spec_from_file_location("call_centre_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Structs' annotations through it
    spec.loader.exec_module(module)
    return module


call_centre = _call_centre()


def test_call_centre_runs_small_and_repeats(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The example runs small, prints measured beside theory, and one seed repeats itself;
    without --seed it takes ECHO_SEED."""
    argv = ["--callers", "400", "--replications", "2", "--warmup", "20", "--seed", "3"]
    first = call_centre.main(argv)
    out = capsys.readouterr().out
    assert "Erlang C" in out and "Erlang A" in out and "seed 3" in out
    assert "theory 1.0787 min" in out  # Erlang C's mean wait at 3 agents, load 0.8
    assert call_centre.main(argv).scenarios == first.scenarios
    patient, impatient = first.scenarios
    assert all(r.abandoned == 0 for r in patient.replications)
    assert all(0 < r.abandoned < 0.5 for r in impatient.replications)
    assert all(r.callers > 300 for r in impatient.replications)  # the warm-up dropped a few
    monkeypatch.setenv("ECHO_SEED", "3")
    capsys.readouterr()
    assert call_centre.main(argv[:-2]).scenarios == first.scenarios
    assert "seed 3" in capsys.readouterr().out


def test_call_centre_theory_agrees_with_its_limits() -> None:
    """Erlang A tends to Erlang C as patience grows, and is M/M/∞ when patience = 1/μ."""
    c, lam, mu = 3, 2.4, 1.0
    patient = call_centre.erlang_a(c, lam, mu, 1e7)
    exact = call_centre.erlang_c(c, lam, mu)
    assert patient.waited == pytest.approx(exact.waited, rel=1e-4)
    assert patient.mean_wait == pytest.approx(exact.mean_wait, rel=1e-4)
    a = lam / mu  # with patience 1/μ every caller leaves at rate μ: N is Poisson(a)
    poisson = [math.exp(-a) * a**k / math.factorial(k) for k in range(60)]
    infinite = call_centre.erlang_a(c, lam, mu, 1 / mu)
    assert infinite.waited == pytest.approx(sum(poisson[c:]), rel=1e-9)
    queued = sum((k - c) * p for k, p in enumerate(poisson) if k > c)
    assert infinite.mean_wait == pytest.approx(queued / lam, rel=1e-9)
    with pytest.raises(ValueError, match="load"):
        call_centre.erlang_c(2, 2.0, 1.0)
