# SPDX-License-Identifier: MIT
"""``async def`` actions beside plain ``asyncio.gather``, from the same run:

    python benchmarks/bench_asyncio.py [--runs 3] [--sites 4] [--sleep 0.05]

N concurrent actions, each awaiting ``asyncio.sleep(SLEEP)``, on a thread-runtime
Sequence of a few Sites (the actions do not hold them while they await), their
futures awaited by ``asyncio.gather`` in the caller's loop; beside them,
``asyncio.gather`` of the same N coroutines in one loop. Figures are elapsed ÷ ideal
(ideal: one SLEEP) and ours ÷ gather. Not a test: nothing here asserts; it measures.

Where ours spends more than gather: every action is also admitted, dispatched and
started by a Site (threads sharing the GIL with the loop) and settled; the loop's own
share is about gather's. At 1,000 that is within a few tens of per cent; at 10,000 the
submission and dispatch (about 10-20 µs an action here) show.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

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


def ours(sequence: Sequence, n: int, seconds: float) -> float:
    """Seconds from submit_many of n Nap actions until all their awaited futures are done."""

    async def main() -> float:
        started = time.perf_counter()
        futures = sequence.submit_many([Action("Nap", seconds) for _ in range(n)])
        await asyncio.gather(*futures)
        return time.perf_counter() - started

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    seconds = args.sleep
    print(f"asyncio.sleep({seconds}) per action; {args.sites} Sites, thread runtime; "
          f"elapsed / ideal ({seconds} s)")
    print(f"{'n':>7} {'run':>4} {'gather':>8} {'ours':>8} {'ours/gather':>12}")
    with Sequence(PLAN, sites=args.sites) as sequence:
        sequence.submit(Action("Nap", 0.0)).get(timeout=30)  # the loop thread is up
        for n in args.sizes:
            ratios = []
            for run in range(1, args.runs + 1):
                base = plain_gather(n, seconds)
                mine = ours(sequence, n, seconds)
                ratios.append(mine / base)
                print(f"{n:>7} {run:>4} {base / seconds:>7.2f}x {mine / seconds:>7.2f}x "
                      f"{mine / base:>11.2f}x")
            print(f"{n:>7} {'med':>4} {'':>8} {'':>8} {statistics.median(ratios):>11.2f}x")


if __name__ == "__main__":
    main()
