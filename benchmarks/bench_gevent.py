# SPDX-License-Identifier: MIT
"""gevent runtime benchmarks: I/O-bound actions over 1,000 greenlet Sites, and no-op
throughput of the gevent runtime beside the thread runtime, from the same run:

    python benchmarks/bench_gevent.py [--runs 3]

Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import gevent
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _anchors

from echo_actors import Action, Plan, Sequence, Signature


def _io(seconds: float) -> float:
    gevent.sleep(seconds)
    return seconds


PLAN = (
    Plan()
    .with_signature(Signature("IO")).with_function("IO", _io)
    .with_signature(Signature("Noop")).with_function("Noop", lambda content: content)
    .build()
)


def ours_io(n: int, sites: int, seconds: float) -> float:
    """Seconds for n actions of gevent.sleep(seconds) on a gevent Sequence of ``sites``."""
    with Sequence(PLAN, sites=sites, runtime="gevent") as sequence:
        started = time.perf_counter()
        futures = sequence.submit_many([Action("IO", seconds) for _ in range(n)])
        for future in futures:
            future.get(timeout=60)
        return time.perf_counter() - started


def ours_noop(n: int, runtime: str) -> float:
    """Seconds for n no-op actions, each submitted then all awaited, on ``runtime``."""
    with Sequence(PLAN, sites=4, runtime=runtime) as sequence:
        started = time.perf_counter()
        futures = [sequence.submit(Action("Noop", i)) for i in range(n)]
        for future in futures:
            future.get(timeout=60)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n, sites, seconds = 10_000, 1_000, 0.05
    ideal = n / sites * seconds
    print(f"== I/O-bound: {n:,} actions of gevent.sleep({seconds}) over {sites:,} greenlets; "
          f"ideal {ideal:.2f} s ==")
    for run in range(1, args.runs + 1):
        ours = ours_io(n, sites, seconds)
        pool = _anchors.gevent_pool_io(n, sites, seconds)
        print(f"run {run}: echo_actors {ours:.3f} s = {ours / ideal:.2f}x ideal   "
              f"gevent.pool.Pool({sites}) {pool:.3f} s = {pool / ideal:.2f}x ideal")
    print("\n== no-op throughput: 20,000 actions, 4 Sites ==")
    for run in range(1, args.runs + 1):
        thread = 20_000 / ours_noop(20_000, "thread")
        green = 20_000 / ours_noop(20_000, "gevent")
        print(f"run {run}: thread runtime {thread:>9,.0f}/s   gevent runtime {green:>9,.0f}/s "
              f"({green / thread:.2f}x)")


if __name__ == "__main__":
    main()
