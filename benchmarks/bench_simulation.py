# SPDX-License-Identifier: MIT
"""Simulation runtime benchmarks: an M/M/c queue beside SimPy, and the bank example.

    python benchmarks/bench_simulation.py [--customers 50000] [--servers 1,4] [--load 0.8]
                                          [--runs 3] [--window 1] [--bank/--no-bank] [--calls]

**M/M/c.** The same model written twice, on the same random streams:
Poisson arrivals (rate ``load * c``), exponential service (mean 1), ``c``
servers, one queue. In SimPy: an arrival process, a ``Resource(c)``, each
customer a process that requests it, holds it for its service time and
leaves. In echo_actors on ``runtime="simulation"``: ``c`` Sites, an arrival
greenlet that sleeps each interarrival time and submits one Action per
customer, and a plan function that sleeps the service time on the runtime's
clock. Both record each customer's wait and time in system; their means are
printed beside the analytic M/M/c values (Erlang C), and whether the two
engines gave every customer the same wait (with ``--window 1`` a Site holds
one action at a time, so the Sites serve in arrival order, as SimPy does).
The figure that matters is customers per wall second, both in the same run,
and their ratio. Kernel steps are the simulation's greenlet switches plus
timers run, per customer. Best of ``--runs``.

A third row, *kernel only*, runs the same model on the simulation runtime's
kernel without actors (``c`` server greenlets taking customers from a deque,
parked on an event when it is empty): what the scheduler and the virtual
clock cost alone, so that the rest of echo_actors' figure is the actor path
(submit, the Site's message, the dispatcher's look, settling).

**The bank.** examples/bank.py at 10,000 accounts on the simulation runtime,
beside the same model on the thread runtime (durations / 1000, and without
waits): events per wall second.

``--calls`` counts instead of timing: the Python and C calls per customer of
each engine over one run (``sys.setprofile``), figures that a loaded machine
does not change.

Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import logging
import math
import os
import random
import sys
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import structlog

ROOT = Path(__file__).resolve().parents[1]


# M/M/c


class Workload(NamedTuple):
    """Interarrival and service times, drawn once and given to both engines."""

    servers: int
    load: float
    gaps: list[float]
    services: list[float]


class Run(NamedTuple):
    """One engine's run of the workload."""

    wall: float
    cpu: float
    mean_wait: float
    mean_system: float
    digest: str
    steps: int = 0


def workload(customers: int, servers: int, load: float, seed: int) -> Workload:
    """Exponential gaps at rate ``load * servers`` and exponential services of mean 1."""
    arrivals = random.Random(f"{seed}:arrivals")
    service = random.Random(f"{seed}:service")
    rate = load * servers
    return Workload(
        servers, load,
        [arrivals.expovariate(rate) for _ in range(customers)],
        [service.expovariate(1.0) for _ in range(customers)],
    )


def analytic(servers: int, load: float) -> tuple[float, float]:
    """M/M/c mean wait in queue and mean time in system (service rate 1): Erlang C."""
    c, a = servers, load * servers
    top = a**c / math.factorial(c) / (1 - load)
    erlang_c = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    wait = erlang_c / (c - a)
    return wait, wait + 1.0


def _summary(waits: list[float], systems: list[float]) -> tuple[float, float, str]:
    digest = hashlib.sha256(repr([round(w, 9) for w in waits]).encode()).hexdigest()[:12]
    return sum(waits) / len(waits), sum(systems) / len(systems), digest


def run_simpy(work: Workload) -> Run:
    """The workload on SimPy: a Resource of ``servers``, one process per customer."""
    import simpy  # noqa: PLC0415 - bench extra

    waits: list[float] = []
    systems: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    env = simpy.Environment()
    counter = simpy.Resource(env, capacity=work.servers)

    def customer(service: float) -> Any:
        arrived = env.now
        with counter.request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(service)
        systems.append(env.now - arrived)

    def arrivals() -> Any:
        for gap, service in zip(work.gaps, work.services, strict=True):
            yield env.timeout(gap)
            env.process(customer(service))

    env.process(arrivals())
    env.run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Run(wall, cpu, *_summary(waits, systems))


def run_kernel(work: Workload) -> Run:
    """The workload on the simulation kernel alone: server greenlets, no actors."""
    from echo_actors.runtime import SimulationRuntime  # noqa: PLC0415

    waits: list[float] = []
    systems: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    runtime = SimulationRuntime(seed=0)
    now, sleep = runtime.monotonic, runtime.sleep
    line: deque[tuple[float, float]] = deque()
    idle: list[Any] = []

    def server() -> None:
        while True:
            while not line:
                event = runtime.event()
                idle.append(event)
                event.wait()
            arrived, service = line.popleft()
            waits.append(now() - arrived)
            sleep(service)
            systems.append(now() - arrived)

    def arrivals() -> None:
        for gap, service in zip(work.gaps, work.services, strict=True):
            sleep(gap)
            line.append((now(), service))
            if idle:
                idle.pop().set()

    for _ in range(work.servers):
        runtime.spawn(server)
    runtime.spawn(arrivals)
    runtime.run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Run(wall, cpu, *_summary(waits, systems), steps=runtime.kernel.steps)


def run_echo(work: Workload, window: int) -> Run:
    """The workload on echo_actors: ``servers`` Sites on the simulation runtime."""
    from echo_actors import Action, Fate, Plan, Sequence, Signature  # noqa: PLC0415
    from echo_actors.runtime import SimulationRuntime  # noqa: PLC0415

    waits: list[float] = []
    systems: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    runtime = SimulationRuntime(seed=0)
    now, sleep = runtime.monotonic, runtime.sleep

    def serve(content: list[float]) -> None:
        arrived, service = content
        waits.append(now() - arrived)
        sleep(service)
        systems.append(now() - arrived)

    plan = Plan().with_signature(Signature("serve")).with_function("serve", serve).build()
    fate = Fate(sites=work.servers, mailbox_window=window, runtime="simulation")
    with Sequence(plan, sites=work.servers, fate=fate, runtime=runtime) as sequence:
        submit = sequence.submit

        def arrivals() -> None:
            for gap, service in zip(work.gaps, work.services, strict=True):
                sleep(gap)
                submit(Action("serve", [now(), service]))

        runtime.spawn(arrivals)
        runtime.run()
        sequence.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Run(wall, cpu, *_summary(waits, systems), steps=runtime.kernel.steps)


def best(fn: Any, runs: int, *args: Any) -> Run:
    """The fastest of ``runs`` runs (collected garbage before each)."""
    result: Run | None = None
    for _ in range(runs):
        gc.collect()
        run = fn(*args)
        if result is None or run.wall < result.wall:
            result = run
    assert result is not None
    return result


def calls(args: argparse.Namespace) -> None:
    """Print the Python and C calls per customer of each engine (one run, ``sys.setprofile``).

    Deterministic, unlike times: the same on a loaded machine as on an idle one.
    """
    print(f"calls per customer: {args.customers} customers, load {args.load}, mailbox_window "
          f"{args.window} (sys.setprofile: 'call' and 'c_call' events / customers)")
    print(f"{'c':>3} {'engine':12} {'Python':>7} {'C':>7} {'together':>9}")
    for servers in args.servers:
        work = workload(args.customers, servers, args.load, args.seed)
        runs: list[tuple[str, Any, tuple[Any, ...]]] = [
            ("SimPy", run_simpy, (work,)), ("echo_actors", run_echo, (work, args.window)),
            ("kernel only", run_kernel, (work,)),
        ]
        for label, run, run_args in runs:
            run(*run_args)  # once first: imports and first-use caches are not per customer
            counts = {"call": 0, "c_call": 0}

            def count(_frame: Any, event: str, _arg: Any, counts: dict[str, int] = counts) -> None:
                if event in counts:
                    counts[event] += 1

            sys.setprofile(count)
            try:
                run(*run_args)
            finally:
                sys.setprofile(None)
            py, c = (counts[k] / args.customers for k in ("call", "c_call"))
            print(f"{servers:3d} {label:12} {py:7.1f} {c:7.1f} {py + c:9.1f}")


def mmc(args: argparse.Namespace) -> None:
    """Print the M/M/c rows: SimPy and echo_actors side by side, with the ratio."""
    print(f"M/M/c: {args.customers} customers, load {args.load}, service mean 1, "
          f"best of {args.runs}, mailbox_window {args.window}; load average "
          f"{os.getloadavg()[0]:.2f}")
    header = (f"{'c':>3} {'engine':12} {'wall s':>7} {'customers/s':>12} {'ratio':>6} "
              f"{'cpu ratio':>9} {'mean wait':>10} {'mean in sys':>12} {'steps/cust':>11} "
              f"{'waits digest':>13}")
    print(header)
    print("-" * len(header))
    for servers in args.servers:
        work = workload(args.customers, servers, args.load, args.seed)
        wait, system = analytic(servers, args.load)
        simpy_run = best(run_simpy, args.runs, work)
        echo_run = best(run_echo, args.runs, work, args.window)
        kernel_run = best(run_kernel, args.runs, work)
        n = args.customers
        print(f"{servers:3d} {'analytic':12} {'':>7} {'':>12} {'':>6} {'':>9} {wait:10.4f} "
              f"{system:12.4f}")
        for label, run in (("SimPy", simpy_run), ("echo_actors", echo_run),
                           ("kernel only", kernel_run)):
            ratio, cpu_ratio = simpy_run.wall / run.wall, simpy_run.cpu / run.cpu
            steps = f"{run.steps / n:11.2f}" if run.steps else f"{'':>11}"
            print(f"{servers:3d} {label:12} {run.wall:7.3f} {n / run.wall:12.0f} "
                  f"{ratio:5.2f}x {cpu_ratio:8.2f}x {run.mean_wait:10.4f} "
                  f"{run.mean_system:12.4f} {steps} {run.digest:>13}")
        same = len({simpy_run.digest, echo_run.digest, kernel_run.digest}) == 1
        print(f"{'':3} every customer's wait: {'the same' if same else 'NOT the same'} in the "
              "three runs")
    print("ratio: SimPy's wall time / this engine's (above 1: faster than SimPy); cpu ratio: "
          "the same with process CPU time, steadier on a loaded machine")


# The bank


def _load_bank() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bank_example", ROOT / "examples" / "bank.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Struct's annotations through it
    spec.loader.exec_module(module)
    return module


def measure(bank: Any, runtime: str, scale: float, args: argparse.Namespace, runs: int) -> Any:
    """The best (fastest) of ``runs`` runs of the bank."""
    result = None
    for _ in range(runs):
        report = bank.run(args.accounts, args.transfers, args.seed, runtime=runtime,
                          sites=args.sites, time_scale=scale)
        if result is None or report.wall_seconds < result.wall_seconds:
            result = report
    return result


def bank_rows(args: argparse.Namespace) -> None:
    """Print the bank's rows: simulation, thread with shortened durations, thread without."""
    bank = _load_bank()
    rows = [("simulation (virtual time)", measure(bank, "simulation", 1.0, args, args.runs))]
    if args.thread_runs:
        rows += [
            ("thread, durations / 1000", measure(bank, "thread", 0.001, args, args.thread_runs)),
            ("thread, no waits", measure(bank, "thread", 0.0, args, args.thread_runs)),
        ]
    print(f"bank: {args.accounts} accounts, {args.transfers} transfers, {args.sites} tellers, "
          f"best of {args.runs} (simulation) and {args.thread_runs} (thread); load average "
          f"{os.getloadavg()[0]:.2f}")
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
    if args.thread_runs:
        print("thread 'model s' is wall time: its durations were shortened or removed.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--servers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4], help="comma-separated server counts (c)")
    parser.add_argument("--load", type=float, default=0.8, help="utilisation, below 1")
    parser.add_argument("--window", type=int, default=1,
                        help="the Sites' mailbox_window (1: FIFO service, as SimPy's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="runs of each (best of)")
    parser.add_argument("--bank", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the bank benchmark")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--sites", type=int, default=16, help="the bank's tellers")
    parser.add_argument("--thread-runs", type=int, default=1,
                        help="bank runs on the thread runtime (one OS thread per account: slow)")
    parser.add_argument("--calls", action="store_true",
                        help="count calls per customer instead of timing (try --customers 5000)")
    args = parser.parse_args()
    if not 0 < args.load < 1:
        parser.error("--load must be in (0, 1): the queue is unstable otherwise")
    if args.customers < 1 or args.runs < 1 or args.window < 1 or min(args.servers) < 1:
        parser.error("--customers, --runs, --window and every --servers must be >= 1")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("pykka").setLevel(logging.CRITICAL)
    if args.calls:
        calls(args)
        return
    mmc(args)
    if args.bank:
        print()
        bank_rows(args)


if __name__ == "__main__":
    main()
