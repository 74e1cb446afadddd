# SPDX-License-Identifier: MIT
"""``async def`` actions beside plain ``asyncio.gather``, from the same run:

    python benchmarks/bench_asyncio.py [--runs 3] [--sites 4] [--sleep 0.05]

N concurrent actions, each awaiting ``asyncio.sleep(SLEEP)``, on a thread-runtime
Sequence of a few Sites, awaited from the caller's loop two ways: ``Sequence.gather``
(one future for all) and ``asyncio.gather`` of the futures ``submit_many`` returns;
beside them, ``asyncio.gather`` of the same N coroutines in one loop. Figures are
elapsed / ideal (ideal: one SLEEP), each of ours / gather, and the load average.
Not a test: nothing here asserts; it measures. Each measurement starts from a collected
heap (``gc.collect()``), in an order rotated from run to run: the collector's passes
that each engine's own objects cause are counted, not one owed by the one before. One
round of each engine at each size runs first, unmeasured (first calls warm their paths).

Where ours spends more than gather (``--profile`` prints the garbage collector's
share): the action itself (an Action, a ticket, a settle), a second event loop (the
Sequence's) sharing the GIL with the caller's, and, for ``asyncio.gather`` of
runtime futures, a task, a waiter and a wake-up per future in the caller's loop,
which costs the caller about what the coroutines themselves cost the Sequence's loop.
At 10,000 the objects all of this keeps alive make the collector's full passes the
largest single cost (see the runtimes guide).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable

from echo_actors import Action, Plan, Sequence, Signature


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


PLAN = Plan().with_signature(Signature("Nap")).with_function("Nap", nap).build()


def plain_gather(n: int, seconds: float) -> float:
    """Seconds for asyncio.gather of n nap(seconds) coroutines in a new loop."""

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(nap(seconds) for _ in range(n)))
        return time.perf_counter() - started

    return asyncio.run(main())


def ours_gathered(sequence: Sequence, n: int, seconds: float) -> float:
    """Seconds for ``await sequence.gather(...)`` of n Nap actions."""

    async def main() -> float:
        started = time.perf_counter()
        results = await sequence.gather([Action("Nap", seconds) for _ in range(n)])
        assert len(results) == n
        return time.perf_counter() - started

    return asyncio.run(main())


def ours_futures(sequence: Sequence, n: int, seconds: float) -> float:
    """Seconds from submit_many of n Nap actions until asyncio.gather of their futures."""

    async def main() -> float:
        started = time.perf_counter()
        futures = sequence.submit_many([Action("Nap", seconds) for _ in range(n)])
        await asyncio.gather(*futures)
        return time.perf_counter() - started

    return asyncio.run(main())


class _Collector:
    """Seconds the garbage collector ran, per generation (``--profile``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started


def _measured(fn: Callable[[], float], collector: _Collector | None,
              collect: bool = True) -> tuple[float, str]:
    if collect:
        gc.collect()  # each from the same heap: no full pass owed by the one before lands here
    if collector is None:
        return fn(), ""
    before, cpu = list(collector.seconds), time.process_time()
    elapsed = fn()
    cpu = time.process_time() - cpu
    gen = [1000 * (a - b) for a, b in zip(collector.seconds, before, strict=True)]
    return elapsed, f" [cpu {1000 * cpu:.0f} ms, gc {gen[0]:.0f}/{gen[1]:.0f}/{gen[2]:.0f} ms]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--profile", action="store_true",
                        help="print process CPU and the collector's time per generation")
    parser.add_argument("--no-collect", action="store_true",
                        help="do not collect before each measurement (passes owed by the "
                        "one before may land in the next)")
    args = parser.parse_args()
    seconds = args.sleep
    collector = _Collector() if args.profile else None
    if collector is not None:
        gc.callbacks.append(collector)
    print(f"asyncio.sleep({seconds}) per action; {args.sites} Sites, thread runtime; "
          f"elapsed / ideal ({seconds} s); load average {os.getloadavg()[0]:.2f}")
    print("gather: asyncio.gather of the coroutines; ours: await sequence.gather(actions); "
          "futures: asyncio.gather(*sequence.submit_many(actions))")
    print(f"{'n':>7} {'run':>4} {'gather':>8} {'ours':>8} {'ours/gather':>12} "
          f"{'futures':>8} {'futures/gather':>15}")
    with Sequence(PLAN, sites=args.sites) as sequence:
        sequence.submit(Action("Nap", 0.0)).get(timeout=30)  # the loop thread is up
        for n in args.sizes:
            ratios: list[float] = []
            futures: list[float] = []
            engines = [lambda n=n: plain_gather(n, seconds),
                       lambda n=n: ours_gathered(sequence, n, seconds),
                       lambda n=n: ours_futures(sequence, n, seconds)]
            for engine in engines:  # a round of each first, not measured: warm paths only
                engine()
            for run in range(1, args.runs + 1):
                order = [(run - 1 + i) % 3 for i in range(3)]  # rotated: each in each place
                measured = {i: _measured(engines[i], collector, not args.no_collect)
                            for i in order}
                (base, base_note), (mine, mine_note), (theirs, theirs_note) = (
                    measured[i] for i in range(3))
                ratios.append(mine / base)
                futures.append(theirs / base)
                print(f"{n:>7} {run:>4} {base / seconds:>7.2f}x {mine / seconds:>7.2f}x "
                      f"{mine / base:>11.2f}x {theirs / seconds:>7.2f}x "
                      f"{theirs / base:>14.2f}x  load {os.getloadavg()[0]:.2f}")
                if collector is not None:
                    print(f"{'':>13} gather{base_note} ours{mine_note} "
                          f"futures{theirs_note}")
            print(f"{n:>7} {'med':>4} {'':>8} {'':>8} {statistics.median(ratios):>11.2f}x "
                  f"{'':>8} {statistics.median(futures):>14.2f}x")


if __name__ == "__main__":
    main()
