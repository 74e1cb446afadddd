# SPDX-License-Identifier: MIT
"""A call centre on the simulation runtime: M/M/c with callers who hang up.

Callers ring at random (Poisson arrivals, rate ``--arrival-rate`` per
minute) and wait in one FIFO queue (``Fate(discipline="fifo")``) for one of
``--agents`` agents (the Sites); a call lasts an exponential time (mean
``1/--service-rate`` minutes). A caller's patience is exponential too (mean
``--patience`` minutes): one still waiting when it runs out hangs up, which
is ``sequence.cancel(action_id)`` of the call nobody answered yet.

Each caller's wait is read from ``future.times`` (virtual minutes). After a
warm-up, the measured figures of several replications are printed with a
95% confidence interval beside queueing theory's: Erlang C for the
centre where nobody hangs up, Erlang A (Palm's M/M/c+M) where callers do.

Run it:   python examples/call_centre.py --agents 3 --seed 7

The seed comes from ``--seed``, else ``ECHO_SEED``, else 0; replication r
runs with seed + r (``Fate.seed``), so the same seed prints the same figures.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import msgspec
import pykka

from echo_actors import Action, Context, Fate, Plan, Sequence, Signature

T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
       2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074,
       2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, two-sided 95%, for 1 to 30 degrees of freedom (then 1.96)."""


class Figures(msgspec.Struct, frozen=True):
    """One replication's figures, over the callers who rang after the warm-up."""

    callers: int
    mean_wait: float  # every caller's wait: until answered, or until they hung up
    waited: float  # the fraction who did not get an agent at once
    abandoned: float  # the fraction who hung up


class Theory(msgspec.Struct, frozen=True):
    """Queueing theory's values of the same figures."""

    mean_wait: float
    waited: float
    abandoned: float


class Scenario(msgspec.Struct, frozen=True):
    """A scenario's replications, and what theory says."""

    name: str
    replications: list[Figures]
    theory: Theory


class Report(msgspec.Struct, frozen=True):
    """Both scenarios, and what the run cost."""

    scenarios: list[Scenario]
    callers: int
    wall_seconds: float


# Queueing theory


def erlang_c(agents: int, arrival_rate: float, service_rate: float) -> Theory:
    """FIFO M/M/c, nobody hangs up: P(wait) is Erlang's C formula, the mean wait C/(cμ-λ)."""
    a = arrival_rate / service_rate
    rho = a / agents
    if rho >= 1:
        raise ValueError(f"the queue grows for ever: load {rho:.2f} >= 1 (add agents)")
    top = a**agents / math.factorial(agents) / (1 - rho)
    waited = top / (sum(a**k / math.factorial(k) for k in range(agents)) + top)
    return Theory(waited / (agents * service_rate - arrival_rate), waited, 0.0)


def erlang_a(agents: int, arrival_rate: float, service_rate: float, patience: float) -> Theory:
    """M/M/c+M (Erlang A): the number of callers is a birth-death chain, leaving at rate
    min(n, c)μ + max(n - c, 0)/patience. From its stationary law: callers queued Lq,
    abandonment θLq/λ, mean wait Lq/λ (Little) and P(wait) = P(n >= c) (Poisson arrivals
    see time averages)."""
    theta = 1 / patience
    weights = [1.0]
    n = 0
    while True:
        n += 1
        rate = min(n, agents) * service_rate + max(n - agents, 0) * theta
        weights.append(weights[-1] * arrival_rate / rate)
        if n > agents and weights[-1] < 1e-16 * sum(weights):
            break
    total = sum(weights)
    queued = sum((k - agents) * w for k, w in enumerate(weights) if k > agents) / total
    waited = sum(w for k, w in enumerate(weights) if k >= agents) / total
    return Theory(queued / arrival_rate, waited, theta * queued / arrival_rate)


# The model


def answer(minutes: float, ctx: Context) -> None:
    """An agent takes the call: it lasts ``minutes`` of virtual time."""
    ctx.sleep(minutes)


PLAN = Plan().with_signature(Signature("Call", float)).with_function("Call", answer).build()


def replicate(
    seed: int, agents: int, arrival_rate: float, service_rate: float,
    patience: float | None, callers: int, warmup: float,
) -> Figures:
    """One run of the centre; ``patience`` None: nobody hangs up."""
    fate = Fate(runtime="simulation", sites=agents, discipline="fifo", seed=seed)
    sequence = Sequence(PLAN, fate=fate)
    runtime = sequence.runtime
    arrivals, services, patiences = (runtime.random(n) for n in ("arrivals", "service", "patience"))
    futures: list[pykka.Future[Any]] = []
    rang = runtime.event()

    def hang_up(action_id: str, after: float) -> None:
        runtime.sleep(after)
        sequence.cancel(action_id)  # False if an agent answered already: the call goes on

    def ring() -> None:
        for _ in range(callers):
            runtime.sleep(arrivals.expovariate(arrival_rate))
            call = Action("Call", services.expovariate(service_rate))
            futures.append(sequence.submit(call))
            if patience is not None:
                runtime.spawn(hang_up, call.id, patiences.expovariate(1 / patience))
        rang.set()

    with sequence:
        runtime.spawn(ring)
        rang.wait()
        sequence.join()
    waits: list[float] = []
    hung_up = 0
    for future in futures:
        times = future.times
        assert times is not None
        if times.accepted < warmup:
            continue
        waits.append(times.wait)
        hung_up += times.started is None  # cancelled before an agent took it
    return Figures(len(waits), statistics.fmean(waits),
                   sum(w > 0 for w in waits) / len(waits), hung_up / len(waits))


def run(
    agents: int = 3, arrival_rate: float = 2.4, service_rate: float = 1.0,
    patience: float = 2.0, callers: int = 3000, warmup: float = 100.0,
    replications: int = 5, seed: int = 0,
) -> Report:
    """Both scenarios, ``replications`` times each (seeds ``seed``, ``seed + 1``, ...)."""
    if replications < 2:
        raise ValueError("a confidence interval needs at least 2 replications")
    started = time.perf_counter()
    scenarios = []
    for name, wait_limit, theory in (
        ("nobody hangs up (Erlang C)", None, erlang_c(agents, arrival_rate, service_rate)),
        (f"callers hang up after {patience:g} min on average (Erlang A)", patience,
         erlang_a(agents, arrival_rate, service_rate, patience)),
    ):
        runs = [replicate(seed + r, agents, arrival_rate, service_rate, wait_limit, callers,
                          warmup) for r in range(replications)]
        scenarios.append(Scenario(name, runs, theory))
    wall = time.perf_counter() - started
    return Report(scenarios, 2 * replications * callers, wall)


def interval(values: list[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% confidence interval."""
    df = len(values) - 1
    t = T95[df - 1] if df <= len(T95) else 1.96
    return statistics.fmean(values), t * statistics.stdev(values) / math.sqrt(len(values))


def main(argv: list[str] | None = None) -> Report:
    """Parse the arguments, run both scenarios, print measured beside theory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--arrival-rate", type=float, default=2.4, help="callers per minute")
    parser.add_argument("--service-rate", type=float, default=1.0, help="calls per agent-minute")
    parser.add_argument("--patience", type=float, default=2.0,
                        help="mean minutes before hanging up")
    parser.add_argument("--callers", type=int, default=3000, help="per replication")
    parser.add_argument("--warmup", type=float, default=100.0, help="virtual minutes not measured")
    parser.add_argument("--replications", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="default: ECHO_SEED, else 0")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else (Fate.load().seed or 0)
    report = run(args.agents, args.arrival_rate, args.service_rate, args.patience,
                 args.callers, args.warmup, args.replications, seed)
    load = args.arrival_rate / (args.agents * args.service_rate)
    print(f"call centre: {args.agents} agents, load {load:.2f}, {args.replications} "
          f"replications of {args.callers} callers (warm-up {args.warmup:g} min), seed {seed}")
    for scenario in report.scenarios:
        print(f"  {scenario.name}:")
        for label, field, unit in (("mean wait", "mean_wait", " min"),
                                   ("waited at all", "waited", ""),
                                   ("hung up", "abandoned", "")):
            mean, half = interval([getattr(r, field) for r in scenario.replications])
            print(f"    {label:<14} measured {mean:.4f} ± {half:.4f}{unit}   "
                  f"theory {getattr(scenario.theory, field):.4f}{unit}")
    print(f"  {report.callers} callers in {report.wall_seconds:.2f} s of wall time "
          f"({report.callers / report.wall_seconds:,.0f} callers/s)")
    return report


if __name__ == "__main__":
    main()
