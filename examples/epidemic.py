# SPDX-License-Identifier: MIT
"""An SIR epidemic over regions, each region an actor, on the simulation runtime.

Every simulated day, one action per region runs on the Sites: it takes a few
hours of (virtual) work, asks its region's actor to advance one day
(infections and recoveries, drawn from the region's own seeded generator)
and sends travellers to the neighbouring regions' actors, who take them in
at the start of the next day. Days advance the virtual clock: each day's
actions are submitted with a ``delay`` up to the next midnight, and the
driver waits for them all before the next day (a barrier).

Run it:   python examples/epidemic.py --regions 50 --days 120 --seed 3

The same seed prints the same curve every time. Population is conserved
exactly (integers). With matplotlib installed (``pip install
'echo_actors[plot]'``) it also saves a chart (``--chart``, default
``epidemic.png``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import pykka

from echo_actors import Action, Fate, Plan, Sequence, Signature
from echo_actors.runtime import Runtime, bind_actor, get_runtime

DAY = 86_400.0
"""Seconds in a simulated day."""


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw: exact for small n, a rounded normal approximation beyond."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n < 40:
        return sum(1 for _ in range(n) if rng.random() < p)
    mean = n * p
    draw = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
    return min(n, max(0, draw))


class Region(pykka.Actor):
    """One region's S, I, R counts; travellers arrive by message, tagged with their day."""

    def __init__(self, index: int, population: int, infected: int, rng: random.Random) -> None:
        super().__init__()
        self.index = index
        self.s, self.i, self.r = population - infected, infected, 0
        self.rng = rng
        self.incoming: list[tuple[int, int, int, int]] = []

    def arrive(self, day: int, s: int, i: int, r: int) -> None:
        """Travellers who left their region on ``day``."""
        self.incoming.append((day, s, i, r))

    def counts(self) -> tuple[int, int, int]:
        """(S, I, R) now."""
        return self.s, self.i, self.r

    def step(
        self, day: int, beta: float, gamma: float, travel: float, neighbours: list[int],
    ) -> tuple[tuple[int, int, int], dict[int, tuple[int, int, int]]]:
        """Take in yesterday's travellers, advance one day; returns counts and who leaves."""
        keep = []
        for when, s, i, r in self.incoming:
            if when < day:
                self.s, self.i, self.r = self.s + s, self.i + i, self.r + r
            else:
                keep.append((when, s, i, r))
        self.incoming = keep
        rng = self.rng
        n = self.s + self.i + self.r
        pressure = 1.0 - math.exp(-beta * self.i / n) if n else 0.0
        infections = binomial(rng, self.s, pressure)
        recoveries = binomial(rng, self.i, gamma)
        self.s -= infections
        self.i += infections - recoveries
        self.r += recoveries
        leaving: dict[int, tuple[int, int, int]] = {}
        share = travel / max(1, len(neighbours))
        for target in neighbours:
            s, i, r = (binomial(rng, self.s, share), binomial(rng, self.i, share),
                       binomial(rng, self.r, share))
            self.s, self.i, self.r = self.s - s, self.i - i, self.r - r
            leaving[target] = (s, i, r)
        return (self.s, self.i, self.r), leaving


@dataclass
class Report:
    """What a run of the epidemic did: the daily totals and the figures."""

    runtime: str
    regions: int
    days: int
    curve: list[tuple[float, int, int, int, int]]
    """(virtual day, S, I, R, in transit) after each day's work; the four counts add up
    to the population (travellers who left today arrive tomorrow)."""
    population: int
    final_population: int
    peak_day: int  # 1 is the first day
    peak_infected: int
    virtual_seconds: float
    wall_seconds: float


def run(
    regions: int = 20, days: int = 60, seed: int = 0, *, population: int = 10_000,
    beta: float = 0.35, gamma: float = 0.1, travel: float = 0.01, sites: int = 8,
    runtime: str = "simulation",
) -> Report:
    """Run the epidemic and return its report (one action per region per day)."""
    if regions < 1 or days < 1:
        raise ValueError("regions and days must be >= 1")
    if runtime == "simulation":
        from echo_actors.runtime import SimulationRuntime  # noqa: PLC0415

        rt: Runtime = SimulationRuntime(seed)
    else:
        rt = get_runtime(runtime)
    world = random.Random(f"{seed}:world")
    # A ring, plus one long-range link per region (flights), fixed by the seed.
    neighbours: list[list[int]] = []
    for index in range(regions):
        links = sorted({(index - 1) % regions, (index + 1) % regions, world.randrange(regions)}
                       - {index})
        neighbours.append(links)
    region_class = bind_actor(Region, rt)
    refs = [
        region_class.start(index, population, 10 if index == 0 else 0,
                           random.Random(f"{seed}:region:{index}"))
        for index in range(regions)
    ]
    proxies = [ref.proxy() for ref in refs]
    work = random.Random(f"{seed}:work")

    def advance(content: dict[str, Any]) -> tuple[int, int, int, int]:
        index, day = content["region"], content["day"]
        rt.sleep(content["hours"] * 3600.0)  # the day's field work, in virtual time
        counts, leaving = proxies[index].step(
            day, beta, gamma, travel, neighbours[index]).get()
        for target, (s, i, r) in leaving.items():
            proxies[target].arrive(day, s, i, r)  # a message; taken in tomorrow
        return (*counts, sum(s + i + r for s, i, r in leaving.values()))

    plan = Plan().with_signature(Signature("advance")).with_function("advance", advance).build()
    fate = Fate(sites=sites, runtime=rt.name)
    started, opened = time.perf_counter(), rt.monotonic()
    curve: list[tuple[float, int, int, int, int]] = []
    with Sequence(plan, sites=sites, fate=fate, runtime=rt) as sequence:
        for day in range(days):
            midnight = opened + day * DAY
            delay = max(0.0, midnight - rt.monotonic())
            futures = sequence.submit_many(
                Action("advance", {"region": index, "day": day,
                                   "hours": round(work.uniform(1.0, 6.0), 2)}, delay=delay)
                for index in range(regions)
            )
            s, i, r, transit = 0, 0, 0, 0
            for future in futures:
                ds, di, dr, dt = future.get()
                s, i, r, transit = s + ds, i + di, r + dr, transit + dt
            curve.append(((rt.monotonic() - opened) / DAY, s, i, r, transit))
        # The last day ends at its midnight, not when its work is done: --days N is N days.
        rt.sleep(max(0.0, opened + days * DAY - rt.monotonic()))
    virtual = rt.monotonic() - opened
    wall = time.perf_counter() - started
    final = [proxy.counts().get() for proxy in proxies]
    in_transit = sum(s + i + r for ref in refs
                     for _, s, i, r in ref.proxy().incoming.get())
    for ref in refs:
        ref.stop()
    peak_day, peak = max(enumerate((row[2] for row in curve), start=1), key=lambda p: p[1])
    return Report(
        runtime=rt.name, regions=regions, days=days, curve=curve,
        population=regions * population,
        final_population=sum(sum(c) for c in final) + in_transit,
        peak_day=peak_day, peak_infected=peak, virtual_seconds=virtual, wall_seconds=wall,
    )


def chart(report: Report, path: str) -> bool:
    """Save the S, I, R curves (small: about 60 KB); False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    days = [row[0] for row in report.curve]
    figure, axes = plt.subplots(figsize=(8, 4), dpi=80)
    for k, label in enumerate(("susceptible", "infected", "recovered"), start=1):
        axes.plot(days, [row[k] for row in report.curve], label=label)
    axes.set_xlabel("virtual day")
    axes.set_ylabel("people")
    axes.legend()
    axes.set_title(f"SIR over {report.regions} regions")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> Report:
    """Parse the arguments, run the epidemic, print a summary (and save a chart)."""
    parser = argparse.ArgumentParser(description="An SIR epidemic over regions as actors.")
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=None, help="default: ECHO_SEED, else 0")
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--chart", default="epidemic.png",
                        help="where to save the chart ('': none)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else (Fate.load().seed or 0)
    report = run(args.regions, args.days, seed, population=args.population,
                 sites=args.sites)
    last = report.curve[-1]
    print(f"epidemic on {report.runtime}: {report.regions} regions, {report.days} days")
    print(f"  peak: {report.peak_infected} infected on day {report.peak_day}")
    print(f"  end: S={last[1]} I={last[2]} R={last[3]} in transit={last[4]} "
          f"(attack rate {last[3] / report.population:.1%})")
    print(f"  population {report.population}, at the end {report.final_population}: "
          f"{'conserved' if report.population == report.final_population else 'NOT CONSERVED'}")
    print(f"  {report.virtual_seconds / DAY:.2f} simulated days in {report.wall_seconds:.3f} s "
          f"of wall time")
    print(f"    {'day':>7} {'S':>9} {'I':>9} {'R':>9} {'transit':>9} {'total':>9}")
    for day in sorted({*range(0, report.days, max(1, report.days // 10)), report.days - 1}):
        _, s, i, r, transit = report.curve[day]
        print(f"    {day + 1:7d} {s:9d} {i:9d} {r:9d} {transit:9d} {s + i + r + transit:9d}")
    print("  (after each day's work; 'transit': travellers on their way, who arrive tomorrow)")
    print(chart_line(report, args.chart))
    return report


def chart_line(report: Report, path: str) -> str:
    """One line saying where the chart went, or why there is none."""
    if not path:
        return "  no chart (--chart '')"
    if chart(report, path):
        return f"  chart saved to {os.path.abspath(path)}"
    return ("  no chart: matplotlib is not installed "
            "(pip install 'echo_actors[plot]', or pip install -e '.[plot]' in a checkout)")


def quiet_logs() -> None:
    """The application decides what is logged: errors only, pykka's tracebacks hidden."""
    logging.getLogger("pykka").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    quiet_logs()
    main()
