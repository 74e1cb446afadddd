# SPDX-License-Identifier: MIT
"""What observing costs: no-op throughput with metrics on and with tracing on, vs off.

    python benchmarks/bench_observe.py [--runs 3] [--actions 50000] [--reps 7]

Each run measures, in the same process and interleaved: a plain Sequence; one
with :func:`echo_actors.metrics.register` (per-name endings and per-Site
timings of one attempt in 4, the default; a scrape mid-run); the same timing
every attempt (``sample=1``); one with :func:`echo_actors.tracing.step` and the
OpenTelemetry API installed but no SDK configured. Targets: metrics >= 0.8x,
tracing >= 0.9x. Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry, generate_latest

from echo_actors import Action, Fate, Plan, Sequence, Signature, metrics, tracing


def _noop(content: object) -> object:
    return content


PLAN = Plan().with_signature(Signature("Noop")).with_function("Noop", _noop).build()


def throughput(n: int, mode: str, sites: int = 4) -> tuple[float, float]:
    """Actions per second for n no-op actions submitted at once, every result awaited, and
    the process's CPU microseconds per action (steadier than the wall on a shared machine)."""
    steps = [tracing.step] if mode == "tracing" else []
    sequence = Sequence(PLAN, sites=sites, fate=Fate(), steps=steps)
    registry = CollectorRegistry()
    if mode.startswith("metrics"):
        metrics.register(sequence, registry, sample=1 if mode == "metrics-every" else 4)
    with sequence:
        actions = [Action("Noop", i) for i in range(n)]
        started = time.perf_counter()
        cpu = time.process_time()
        futures = sequence.submit_many(actions)
        if mode.startswith("metrics"):
            generate_latest(registry)  # a scrape while it runs
        for future in futures:
            future.get(timeout=60)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--actions", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=7,
                        help="interleaved measurements per mode in a run; the median counts")
    args = parser.parse_args()
    print(f"OpenTelemetry API installed: {tracing.available()} (no SDK configured)")
    throughput(2000, "off")  # warm up
    for run in range(1, args.runs + 1):
        modes = ("off", "metrics", "metrics-every", "tracing")
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        cpus: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.reps):  # interleaved, so drift hits every mode alike
            for mode in modes:
                rate, cpu = throughput(args.actions, mode)
                rates[mode].append(rate)
                cpus[mode].append(cpu)
        rate = {mode: statistics.median(rates[mode]) for mode in modes}
        cpu = {mode: statistics.median(cpus[mode]) for mode in modes}
        off = rate["off"]
        print(f"run {run}: off {off:,.0f}/s ({cpu['off']:.1f} us CPU/action)  "
              f"metrics {rate['metrics'] / off:.2f}x (target >= 0.8x; "
              f"CPU {cpu['off'] / cpu['metrics']:.2f}x)  "
              f"timing every attempt {rate['metrics-every'] / off:.2f}x "
              f"(CPU {cpu['off'] / cpu['metrics-every']:.2f}x)  "
              f"tracing {rate['tracing'] / off:.2f}x (target >= 0.9x; "
              f"CPU {cpu['off'] / cpu['tracing']:.2f}x)")


if __name__ == "__main__":
    main()
