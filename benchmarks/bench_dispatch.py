# SPDX-License-Identifier: MIT
"""Dispatch benchmarks: no-op throughput, latency, skewed makespan, affinity under skew.

Each figure is printed beside the anchors' from the same run, as ratios:

    python benchmarks/bench_dispatch.py [--runs 3] [--actions 20000]

Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _anchors

from echo_actors import Action, Fate, Plan, Sequence, Signature


def _noop(content: object) -> object:
    return content


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


PLAN = (
    Plan()
    .with_signature(Signature("Noop")).with_function("Noop", _noop)
    .with_signature(Signature("Sleep")).with_function("Sleep", _sleep)
    .build()
)


def ours_noop(n: int, sites: int = 4, *, many: bool = False, hook: bool = False) -> float:
    """Seconds for n no-op actions through a Sequence: submitted, then every result awaited.

    With ``hook``, each action also runs a before-hook registered in Life: Sites hold
    Life's pushed snapshot, so this measures that no round trip to Life is made per action.
    """
    with Sequence(PLAN, sites=sites, fate=Fate()) as sequence:
        hooks: tuple[str, ...] = ()
        if hook:
            sequence.life.register_hook("noop", lambda action: None)
            hooks = ("noop",)
        actions = [Action("Noop", i, hooks=hooks) for i in range(n)]
        started = time.perf_counter()
        if many:
            futures = sequence.submit_many(actions)
        else:
            futures = [sequence.submit(action) for action in actions]
        for future in futures:
            future.get(timeout=60)
        return time.perf_counter() - started


def ours_skewed(
    durations: list[float], sites: int = 4, *, keys: list[str] | None = None,
    ordered: bool = False, steal: bool = True,
) -> float:
    """Seconds for the skewed set on a Sequence (optionally keyed, ordered, without stealing)."""
    with Sequence(PLAN, sites=sites, fate=Fate(steal=steal)) as sequence:
        actions = [
            Action("Sleep", d, key=None if keys is None else keys[i],
                   ordered=ordered and keys is not None)
            for i, d in enumerate(durations)
        ]
        started = time.perf_counter()
        futures = [sequence.submit(action) for action in actions]
        for future in futures:
            future.get(timeout=60)
        return time.perf_counter() - started


def _best(fn: Callable[[], float], runs: int) -> tuple[float, float]:
    times = [fn() for _ in range(runs)]
    return min(times), statistics.median(times)


def noop_section(n: int, runs: int) -> None:
    """No-op throughput: ours (submit, submit_many) beside the anchors."""
    print(f"\n== no-op throughput: {n:,} actions, 4 workers (best of {runs}; median) ==")
    rows = [
        ("ThreadPoolExecutor(4)", lambda: _anchors.tpe_noop(n, 4)),
        ("echo_actors submit", lambda: ours_noop(n)),
        ("echo_actors submit_many", lambda: ours_noop(n, many=True)),
        ("echo_actors submit + Life hook", lambda: ours_noop(n, hook=True)),
        ("pykka round-robin pool", lambda: _anchors.pykka_pool_noop(n, 4)),
        ("dramatiq StubBroker, 4 thr", lambda: _anchors.dramatiq_stub_noop(n, 4)),
    ]
    results = {name: _best(fn, runs) for name, fn in rows}
    anchor = n / results["ThreadPoolExecutor(4)"][0]
    for name, (best, median) in results.items():
        rate = n / best
        print(f"{name:31} {rate:>9,.0f}/s  (median {n / median:>9,.0f}/s)  "
              f"{rate / anchor:5.2f}x ThreadPoolExecutor")


def skew_section(runs: int) -> None:
    """Makespan on a skewed set, as a ratio to the lower bound."""
    durations = _anchors.skewed_tasks()
    bound = _anchors.lower_bound(durations, 4)
    longs = [i for i, d in enumerate(durations) if d == max(durations)]
    one_key = ["hot" if i in longs else f"k{i}" for i in range(len(durations))]
    print(f"\n== skewed makespan: {len(durations)} actions, every 4th 50 ms, the rest 1 ms; "
          f"lower bound {bound * 1000:.0f} ms (best of {runs}; median) ==")
    rows = [
        ("echo_actors (stealing)", lambda: ours_skewed(durations)),
        ("echo_actors, no stealing", lambda: ours_skewed(durations, steal=False)),
        ("ThreadPoolExecutor(4)", lambda: _anchors.tpe_skewed(durations, 4)),
        ("pykka round-robin pool", lambda: _anchors.pykka_pool_skewed(durations, 4)),
    ]
    for name, fn in rows:
        best, median = _best(fn, runs)
        print(f"{name:34} {best / bound:5.2f}x bound  (median {median / bound:5.2f}x)")
    print("\n== affinity under skew: every long action has key 'hot' (one Site) ==")
    rows = [
        ("keyed, stealing", lambda: ours_skewed(durations, keys=one_key)),
        ("keyed, no stealing", lambda: ours_skewed(durations, keys=one_key, steal=False)),
        ("keyed + ordered (never stolen)", lambda: ours_skewed(durations, keys=one_key,
                                                                ordered=True)),
    ]
    for name, fn in rows:
        best, median = _best(fn, runs)
        print(f"{name:34} {best / bound:5.2f}x bound  (median {median / bound:5.2f}x)")


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def ours_latency(n: int, sites: int = 4) -> list[float]:
    """Seconds from submit to result, one action at a time."""
    with Sequence(PLAN, sites=sites, fate=Fate()) as sequence:
        for i in range(200):  # warm up: threads started, caches filled
            sequence.submit(Action("Noop", i)).get(timeout=10)
        out = []
        for i in range(n):
            started = time.perf_counter()
            sequence.submit(Action("Noop", i)).get(timeout=10)
            out.append(time.perf_counter() - started)
        return out


def latency_section(n: int, runs: int) -> None:
    """One action submitted, its result awaited, repeated: p50 and p99 beside the anchors."""
    print(f"\n== latency: {n:,} actions one at a time, submit to result "
          f"(best p50 of {runs}) ==")
    rows = [
        ("ThreadPoolExecutor(4)", lambda: _anchors.tpe_latency(n, 4)),
        ("pykka ask", lambda: _anchors.pykka_ask_latency(n)),
        ("echo_actors submit", lambda: ours_latency(n)),
    ]
    results = {}
    for name, fn in rows:
        best = min((_percentiles(fn()) for _ in range(runs)), key=lambda p: p[0])
        results[name] = best
    ask = results["pykka ask"][0]
    for name, (p50, p99) in results.items():
        print(f"{name:31} p50 {p50 * 1e6:7.1f} us  p99 {p99 * 1e6:7.1f} us  "
              f"{p50 / ask:5.2f}x pykka ask (p50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=5_000, help="actions for latency")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    noop_section(args.actions, args.runs)
    latency_section(args.latency, args.runs)
    skew_section(args.runs)


if __name__ == "__main__":
    main()
