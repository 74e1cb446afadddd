# SPDX-License-Identifier: MIT
"""Simulation runtime benchmark: the bank example at 10,000 accounts, simulated
events per wall second, beside the same model on the thread runtime:

    python benchmarks/bench_simulation.py [--accounts 10000] [--transfers 20000] [--runs 3]

The model is examples/bank.py, unchanged; only its ``time_scale`` differs:

- simulation: 1 (every duration as modelled: 0.2-2 s of teller work per
  transfer, Poisson arrivals at 20 a second, retry backoff from 0.5 s; all
  of it virtual, so it costs no wall time);
- thread, shortened: 0.001 (every duration 1,000 times shorter: real
  sleeps of 0.2-2 ms, arrivals every 50 us, backoff from 0.5 ms);
- thread, no waits: 0 (sleeps, arrival delays and backoff removed: what
  the library itself costs per transfer on threads).

An *event* is one entry in the bank's event log (an attempt, a commit, a
busy account, a refusal, a crash). Kernel steps (greenlet switches plus
timers) are shown for the simulation. Best of ``--runs``. Not a test:
nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]


def _load_bank() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bank_example", ROOT / "examples" / "bank.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Struct's annotations through it
    spec.loader.exec_module(module)
    return module


def measure(bank: Any, runtime: str, scale: float, args: argparse.Namespace, runs: int) -> Any:
    """The best (fastest) of ``runs`` runs of the bank."""
    best = None
    for _ in range(runs):
        report = bank.run(args.accounts, args.transfers, args.seed, runtime=runtime,
                          sites=args.sites, time_scale=scale)
        if best is None or report.wall_seconds < best.wall_seconds:
            best = report
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--sites", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="runs on the simulation runtime")
    parser.add_argument("--thread-runs", type=int, default=1,
                        help="runs on the thread runtime (one OS thread per account actor: slow)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("pykka").setLevel(logging.CRITICAL)
    bank = _load_bank()
    rows = [
        ("simulation (virtual time)", measure(bank, "simulation", 1.0, args, args.runs)),
        ("thread, durations / 1000", measure(bank, "thread", 0.001, args, args.thread_runs)),
        ("thread, no waits", measure(bank, "thread", 0.0, args, args.thread_runs)),
    ]
    print(f"bank: {args.accounts} accounts, {args.transfers} transfers, {args.sites} tellers, "
          f"best of {args.runs} (simulation) and {args.thread_runs} (thread)")
    header = (f"{'runtime':28} {'wall s':>8} {'events':>8} {'events/s':>10} "
              f"{'transfers/s':>12} {'model s':>9} {'model s/wall s':>15} {'conserved':>9}")
    print(header)
    print("-" * len(header))
    for label, report in rows:
        wall = report.wall_seconds
        print(f"{label:28} {wall:8.3f} {report.events:8d} {report.events / wall:10.0f} "
              f"{report.transfers / wall:12.0f} {report.virtual_seconds:9.1f} "
              f"{report.virtual_seconds / wall:15.1f} {report.conserved!s:>9}")
    sim = rows[0][1]
    print(f"simulation kernel: {sim.kernel_steps} steps, {sim.kernel_steps / sim.wall_seconds:.0f}"
          f" steps/s; log digest {sim.digest} (same seed, same digest)")
    print("thread 'model s' is wall time: its durations were shortened or removed.")


if __name__ == "__main__":
    main()
