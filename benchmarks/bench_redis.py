# SPDX-License-Identifier: MIT
"""No-op throughput through Redis: one echo-actors worker process beside one Dramatiq worker.

    python benchmarks/bench_redis.py [--runs 3] [--actions 10000]

Starts its own redis-server on a free loopback port (Debian's package). Each
run, on that server:

- ours: ``echo-actors worker`` (4 Sites, thread runtime) in its own process;
  this process adds the actions with ``RedisProduction.assign_many``
  (pipelined XADD) and waits until the stream is empty, i.e. every entry
  was acknowledged (and deleted);
- Dramatiq: ``dramatiq`` with one worker process of 4 threads on its
  RedisBroker; this process sends the messages with ``actor.send()`` and
  waits with ``broker.join`` (every message acknowledged).

Both clocks start at the first submission and stop when the last action was
acknowledged (polled every 5 ms); the workers are started and ready before.
Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer

from echo_actors import Action, Fate
from echo_actors.production.redis import RedisProduction

OUR_PLAN = textwrap.dedent('''
    from echo_actors import Plan, Signature


    def noop(content):
        return content


    plan = Plan().with_signature(Signature("Noop")).with_function("Noop", noop)
''')

DRAMATIQ_MODULE = textwrap.dedent('''
    import os

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
    dramatiq.set_broker(broker)


    @dramatiq.actor(queue_name="bench", actor_name="bench_noop")
    def noop():
        pass
''')

POLL = 0.005


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` (another process's state in Redis) until true, bounded."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        pause.wait(POLL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ours(url: str, workdir: Path, n: int, sites: int, *options: str) -> tuple[float, float]:
    """Seconds to submit ``n`` no-op actions and until all are acknowledged; and to submit."""
    client = redis.Redis.from_url(url)
    client.flushall()
    stream = "bench"
    worker = subprocess.Popen(
        [sys.executable, "-m", "echo_actors", "worker", f"{workdir / 'our_plan.py'}:plan",
         "--redis", url, "--stream", stream, "--consumer", "bench", "--sites", str(sites),
         "--runtime", "thread", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("ECHO_")},
    )
    submitter = RedisProduction(url, stream=stream, fate=Fate())
    try:
        def joined() -> bool:
            try:
                return any(c["name"] == b"bench" for c in client.xinfo_consumers(stream, "echo"))
            except redis.ResponseError:
                return False

        _wait_until(joined, "the echo-actors worker to join")
        actions = [Action("Noop", i) for i in range(n)]
        started = time.perf_counter()
        submitter.assign_many(actions)
        submitted = time.perf_counter() - started
        _wait_until(lambda: client.xlen(stream) == 0, "every action acknowledged", 600)
        return time.perf_counter() - started, submitted
    finally:
        submitter.close()
        _stop(worker)
        client.close()


def dramatiq_redis(url: str, workdir: Path, n: int, threads: int) -> tuple[float, float]:
    """Seconds to send ``n`` no-op messages and until all are acknowledged; and to send."""
    import dramatiq  # noqa: PLC0415 -- optional dependency
    from dramatiq.brokers.redis import RedisBroker  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    client.flushall()
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "dramatiq_bench", "--path", str(workdir),
         "--processes", "1", "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_REDIS_URL": url},
    )
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    try:
        dramatiq.set_broker(broker)

        def noop() -> None:
            """The worker's actor of the same name does the work."""

        actor: Any = dramatiq.actor(queue_name="bench", actor_name="bench_noop",
                                    broker=broker)(noop)
        _wait_until(lambda: client.zcard("dramatiq:__heartbeats__") > 0,
                    "the Dramatiq worker to start")
        started = time.perf_counter()
        for _ in range(n):
            actor.send()
        submitted = time.perf_counter() - started
        broker.join("bench", interval=int(POLL * 1000))
        return time.perf_counter() - started, submitted
    finally:
        _stop(worker)
        broker.close()
        broker.client.close()
        client.close()


def main(argv: list[str] | None = None) -> None:
    """Run both, ``--runs`` times, and print each run's figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--ours-only", action="store_true", help="skip Dramatiq (tuning)")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--batch", type=int, help="the worker's --batch (default: its own)")
    parser.add_argument("--read-ahead", type=int, help="the worker's --read-ahead")
    args = parser.parse_args(argv)
    options = [*(["--batch", str(args.batch)] if args.batch else []),
               *(["--read-ahead", str(args.read_ahead)] if args.read_ahead else [])]
    n = args.actions
    ratios: list[float] = []
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "our_plan.py").write_text(OUR_PLAN)
        (workdir / "dramatiq_bench.py").write_text(DRAMATIQ_MODULE)
        print(f"no-op through Redis {server.url}, {n} actions, one worker process each "
              f"(echo-actors: {args.sites} Sites; Dramatiq: {args.sites} threads)")
        print(f"{'run':>3}  {'echo-actors/s':>14} {'(submit s)':>10}  "
              f"{'dramatiq/s':>11} {'(send s)':>9}  {'ratio':>6}")
        for run in range(1, args.runs + 1):
            our_s, our_submit = ours(server.url, workdir, n, args.sites, *options)
            if args.ours_only:
                print(f"{run:>3}  {n / our_s:>14,.0f} {our_submit:>10.2f}", flush=True)
                continue
            dq_s, dq_send = dramatiq_redis(server.url, workdir, n, args.sites)
            ratio = dq_s / our_s
            ratios.append(ratio)
            print(f"{run:>3}  {n / our_s:>14,.0f} {our_submit:>10.2f}  "
                  f"{n / dq_s:>11,.0f} {dq_send:>9.2f}  {ratio:>5.1f}x", flush=True)
    if ratios:
        print(f"median ratio: {statistics.median(ratios):.1f}x Dramatiq's throughput")


if __name__ == "__main__":
    main()
