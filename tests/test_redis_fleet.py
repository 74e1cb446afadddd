# SPDX-License-Identifier: MIT
"""Issue 11 on a real Redis: results across processes, durable chains, dedup, a fleet
that stays up (dead threads, Redis restarts, heartbeats), poison and systemic failures.

Waits on other processes poll Redis in bounded loops (``wait_until``); results are
waited for with the futures' own timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from redis_server import RedisServer, redis_cluster
from test_redis import LIMIT, consumers, exit_code, group_pending, wait_until

from echo_actors import Action, Fate, Plan, Sequence, Signature
from echo_actors.errors import CrashError, EncodeError, ExecutionError
from echo_actors.production.redis import RedisFuture, RedisProduction
from echo_actors.site import Site

__all__ = ["redis_cluster"]  # a fixture, used by name

FLEET_PLAN = textwrap.dedent('''
    import os
    import time

    import redis

    from echo_actors import Plan, Signature

    _redis = redis.Redis.from_url(os.environ["ECHO_REDIS_URL"])
    _key = os.environ["TEST_KEY"]


    def record(tag):
        time.sleep(0.002)  # a little work, so that a run lasts long enough to kill a worker
        _redis.rpush(_key + ":executed", tag)
        return tag


    def flaky(tag):
        """Fails the first time it runs for a tag: a retry through the sorted set."""
        if _redis.incr(_key + ":tries:" + str(tag)) == 1:
            raise OSError("transient")
        return record(tag)


    def double(n):
        return n * 2


    def fail(n):
        raise ValueError(f"no good: {n}")


    def unencodable(n):
        return object()


    def big(n):
        return "x" * n


    plan = Plan()
    for name, function in [("Record", record), ("Flaky", flaky), ("Double", double),
                           ("Fail", fail), ("Unencodable", unencodable), ("Big", big)]:
        plan = plan.with_signature(Signature(name)).with_function(name, function)
''')


@pytest.fixture
def fleet(worker_processes: Callable[..., subprocess.Popen[bytes]]
          ) -> Callable[..., subprocess.Popen[bytes]]:
    """Start ``echo-actors worker`` processes of FLEET_PLAN (plus ``plan``, more of it)."""

    def start(name: str, *options: str, env: dict[str, str] | None = None,
              plan: str | None = None) -> subprocess.Popen[bytes]:
        return worker_processes(FLEET_PLAN + (plan or ""), name, *options, env=env)

    return start


def log_of(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")


FAST = ("--visibility-timeout", "1", "--read-ahead", "50", "--batch", "25")


# 1. Results across processes


@pytest.mark.timeout(60)
def test_results_from_a_worker_process(fleet, productions, stream) -> None:
    """A result, a final error, an unencodable and a too big result, a chain's end."""
    fleet("w1", *FAST, env={"ECHO_MAX_ATTEMPTS": "2", "ECHO_MAX_RESULT_BYTES": "100",
                            "ECHO_BACKOFF_BASE": "0.01"})
    submitter = productions()
    ok, bad, odd, big = submitter.submit_many([
        Action("Double", 21), Action("Fail", 1), Action("Unencodable", 1), Action("Big", 500),
    ])
    assert ok.get(timeout=LIMIT) == 42
    with pytest.raises(ExecutionError, match="no good: 1") as failed:
        bad.get(timeout=LIMIT)
    assert failed.value.attempts == 2  # type: ignore[attr-defined]
    with pytest.raises(EncodeError, match="cannot be encoded"):
        odd.get(timeout=LIMIT)
    with pytest.raises(EncodeError, match="over the limit of 100"):
        big.get(timeout=LIMIT)
    chain = submitter.submit(Action("Double", 1, next=Action("Double", next=Action("Double"))))
    assert chain.get(timeout=LIMIT) == 2  # the head's own result, as Sequence.submit gives
    assert chain.chain().get(timeout=LIMIT) == 8
    broken = submitter.submit(Action("Double", 1, next=Action("Fail", next=Action("Double"))))
    with pytest.raises(ExecutionError, match="no good: 2"):
        broken.chain().get(timeout=LIMIT)
    # Another process (a new client) finds the same outcome by the action's id.
    other = redis.Redis.from_url(_url(submitter))
    again = RedisFuture(other, submitter.tag, [ok.action_id])
    assert again.ready() and again.get(timeout=0) == 42
    other.close()


def _url(production: RedisProduction) -> str:
    kwargs = production._client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.mark.timeout(30)
def test_result_wait_times_out(productions) -> None:
    """Nobody runs it: get() with a timeout raises TimeoutError, and ready() says no."""
    future = productions().submit(Action("Double", 1))
    assert not future.ready()
    with pytest.raises(TimeoutError):
        future.get(timeout=0.2)
    with pytest.raises(TimeoutError):
        future.get(timeout=0)


GEVENT_CLIENT = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    from echo_actors import Action
    from echo_actors.production.redis import RedisProduction

    production = RedisProduction(sys.argv[1], stream=sys.argv[2])
    futures = [production.submit(Action("Double", n)) for n in range(50)]
    greenlets = [gevent.spawn(f.get, timeout=20) for f in futures]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    print(json.dumps([g.value for g in greenlets]))
    production.close()
''')


@pytest.mark.timeout(60)
def test_results_in_greenlets_of_another_process(fleet, redis_server, stream, tmp_path) -> None:
    """A gevent process waits for 50 results in 50 greenlets at once."""
    fleet("w1", *FAST)
    script = tmp_path / "gevent_client.py"
    script.write_text(GEVENT_CLIENT)
    done = subprocess.run([sys.executable, str(script), redis_server, stream],
                          capture_output=True, text=True, timeout=LIMIT * 2, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [n * 2 for n in range(50)]


# 2. Durable chains


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("dedup", [False, True])
def test_killed_worker_loses_no_chained_child(fleet, productions, client, stream,
                                             dedup) -> None:
    """Chains with retries and delays in flight; one of three workers SIGKILLed: every
    action and every child runs (at least once); only what the dead worker held reruns."""
    env = {"ECHO_BACKOFF_BASE": "0.01", "ECHO_MAX_ATTEMPTS": "5"}
    if dedup:
        env["ECHO_DEDUP_WINDOW"] = "600"
    procs = {name: fleet(name, *FAST, env=env) for name in ("w1", "w2", "w3")}
    wait_until(lambda: consumers(client, stream) == set(procs), "three workers reading",
               timeout=60)
    n = 600
    heads = [
        Action("Record", f"{i}a", next=Action(
            "Flaky", f"{i}b", next=Action("Record", f"{i}c", delay=0.05 if i % 3 else 0.0)
        ))
        for i in range(n)
    ]
    productions().assign_many(heads)
    executed_key = f"{stream}:executed"
    wait_until(lambda: client.llen(executed_key) >= n // 2, "a sixth of the work done")
    procs["w1"].send_signal(signal.SIGKILL)
    assert exit_code(procs["w1"]) == -signal.SIGKILL
    held_when_killed = group_pending(client, stream, "w1")
    expected = {f"{i}{part}" for i in range(n) for part in "abc"}
    wait_until(lambda: {x.decode() for x in client.lrange(executed_key, 0, -1)} == expected,
               "every action and chained child to run", timeout=120)
    wait_until(lambda: client.xlen(stream) == 0 and group_pending(client, stream) == 0
               and client.zcard(f"{{{stream}}}:delayed") == 0, "everything acknowledged",
               timeout=60)
    assert client.xlen(f"{{{stream}}}:dead") == 0
    executed = Counter(x.decode() for x in client.lrange(executed_key, 0, -1))
    twice = sum(count - 1 for count in executed.values())
    assert held_when_killed > 0
    assert twice <= held_when_killed  # only what the killed worker held ran again
    for name in ("w2", "w3"):
        procs[name].send_signal(signal.SIGTERM)
        assert exit_code(procs[name]) == 0


@pytest.mark.timeout(60)
def test_chain_is_added_with_the_acknowledgement(productions, client, stream) -> None:
    """In-process: the child reaches the stream through the completion script, never a
    local queue; the parent's entry is gone in the same step."""
    ran: list[Any] = []
    done = threading.Event()

    def step(tag: Any) -> Any:
        ran.append(tag)
        if len(ran) == 3:
            done.set()
        return tag

    plan = Plan().with_signature(Signature("Step")).with_function("Step", step).build()
    consumer = productions(visibility_timeout=5.0)
    productions().assign(Action("Step", "a", next=Action("Step", "b", next=Action("Step"))))
    sequence = Sequence(plan, production=consumer, fate=Fate(sites=2)).start()
    try:
        assert done.wait(LIMIT)
        assert ran == ["a", "b", "b"]  # the last link takes its parent's result
        assert consumer.flush(LIMIT)
        assert consumer.counts["chained"] == 2
        wait_until(lambda: group_pending(client, stream) == 0 and client.xlen(stream) == 0,
                   "every entry acknowledged")
        assert sequence.stats().completed == 3
    finally:
        sequence.shutdown(timeout=LIMIT)


# 5. Idempotency


@pytest.mark.timeout(60)
def test_dedup_window_acknowledges_a_completed_id_without_running_it(productions, client,
                                                                     stream) -> None:
    """A redelivered copy of a completed action (same id) is acknowledged, not run."""
    runs: Counter[str] = Counter()
    second = threading.Event()

    def job(tag: str) -> str:
        runs[tag] += 1
        if tag == "other":
            second.set()
        return tag

    plan = Plan().with_signature(Signature("Job")).with_function("Job", job).build()
    consumer = productions(fate=Fate(dedup_window=60.0))
    submitter = productions()
    action = Action("Job", "once")
    first = submitter.submit(action)
    sequence = Sequence(plan, production=consumer, fate=Fate(sites=2)).start()
    try:
        assert first.get(timeout=LIMIT) == "once"
        assert client.exists(f"{consumer.tag}:done:{action.id}")
        submitter.assign(action)  # the same id again, as a redelivery would bring it
        submitter.assign(Action("Job", "other"))
        assert second.wait(LIMIT)
        wait_until(lambda: consumer.counts["deduplicated"] == 1, "the copy skipped")
        assert runs == {"once": 1, "other": 1}
        wait_until(lambda: group_pending(client, stream) == 0, "everything acknowledged")
    finally:
        sequence.shutdown(timeout=LIMIT)


# 3. A fleet that stays up

INJECT_FETCH = textwrap.dedent('''

    from echo_actors.production.redis import RedisProduction

    def _broken_read(self, count, wait):
        raise RuntimeError("injected fetch failure")

    RedisProduction._read = _broken_read
''')

INJECT_WRITE = textwrap.dedent('''

    from echo_actors.production.redis import RedisProduction

    def _broken_write(self, *args, **kwargs):
        raise RuntimeError("injected write failure")

    RedisProduction._write = _broken_write
''')


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("thread", "injected"), [("fetch", INJECT_FETCH),
                                                  ("write", INJECT_WRITE)])
def test_a_dead_thread_makes_the_worker_exit_non_zero(fleet, productions, tmp_path, thread,
                                                     injected) -> None:
    """An error that is not a Redis outage kills the fetcher or the writer: exit 1, named."""
    process = fleet("w1", *FAST, plan=injected)
    productions().assign(Action("Record", "x"))
    assert exit_code(process) == 1
    assert f"injected {thread} failure" in log_of(tmp_path, "w1")


@pytest.mark.timeout(60)
def test_stats_list_live_workers_and_forget_dead_ones(fleet, productions, client,
                                                      stream) -> None:
    """Heartbeats show each worker's Sites, in-flight and share; a killed one is forgotten."""
    procs = {name: fleet(name, *FAST, "--sites", "3") for name in ("w1", "w2")}
    watcher = productions(visibility_timeout=1.0)
    wait_until(lambda: {w.consumer for w in watcher.workers()} == set(procs),
               "two workers' heartbeats")
    assert all(w.sites == 3 and w.heartbeat_age < LIMIT for w in watcher.workers())
    productions().assign_many([Action("Record", i) for i in range(200)])
    wait_until(lambda: client.llen(f"{stream}:executed") == 200, "the work done")
    wait_until(lambda: sum(w.acked for w in watcher.stats().workers) == 200,
               "the shares reported")
    procs["w1"].send_signal(signal.SIGKILL)
    exit_code(procs["w1"])
    wait_until(lambda: [w.consumer for w in watcher.workers()] == ["w2"],
               "the dead worker forgotten")
    procs["w2"].send_signal(signal.SIGTERM)
    assert exit_code(procs["w2"]) == 0
    wait_until(lambda: watcher.workers() == [], "a stopped worker leaves at once")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_workers_survive_a_killed_redis_with_aof(fleet, tmp_path) -> None:
    """kill -9 of Redis (appendfsync always) mid-run and a restart: nothing is lost."""
    with RedisServer(persistent=True) as server:
        key = f"t-{uuid.uuid4().hex[:10]}"
        env = {"ECHO_REDIS_URL": server.url, "TEST_KEY": key}
        plan_file = tmp_path / "aof_plan.py"
        plan_file.write_text(FLEET_PLAN)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
        logs = [(tmp_path / f"aof{i}.log").open("wb") for i in range(2)]
        procs = [subprocess.Popen(
            [sys.executable, "-m", "echo_actors", "worker", f"{plan_file}:plan", "--stream",
             key, "--consumer", f"aof{i}", *FAST], env={**base, **env}, stdout=log,
            stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
        try:
            submitter = RedisProduction(server.url, stream=key, fate=Fate())
            n = 2000
            submitter.assign_many([Action("Record", i) for i in range(n)])
            submitter.close()
            watch = redis.Redis.from_url(server.url)
            wait_until(lambda: watch.llen(f"{key}:executed") >= n // 5, "a fifth done")
            watch.close()
            server.kill_and_restart()
            watch = redis.Redis.from_url(server.url)
            wait_until(lambda: {int(x) for x in watch.lrange(f"{key}:executed", 0, -1)}
                       == set(range(n)), "every action run after the restart", timeout=90)
            wait_until(lambda: group_pending(watch, key) == 0, "everything acknowledged")
            assert all(p.poll() is None for p in procs)  # they carried on
            for process in procs:
                process.send_signal(signal.SIGTERM)
            assert [exit_code(p) for p in procs] == [0, 0]
            watch.close()
            logs_text = "".join((tmp_path / f"aof{i}.log").read_text() for i in range(2))
            assert "[warning" in logs_text  # the outage was logged, as a warning
        finally:
            for process, log in zip(procs, logs, strict=True):
                if process.poll() is None:
                    process.kill()
                process.wait()
                log.close()


# Poison and systemic failures on Redis (issue 10's Redis item)


@pytest.mark.timeout(90)
def test_poison_actions_are_dead_lettered_and_the_worker_stays_healthy(productions) -> None:
    """200 actions that crash their Site each time: dead letters after their attempts."""

    def poison(_: Any) -> None:
        raise CrashError("this action breaks any Site")

    plan = (Plan().with_signature(Signature("Poison")).with_function("Poison", poison)
            .with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build())
    fate = Fate(max_restarts=5, restart_within=60.0, backoff_base=0.001, sites=2)
    consumer = productions(fate=fate)
    submitter = productions()
    submitter.assign_many([Action("Poison", n) for n in range(200)])
    sequence = Sequence(plan, production=consumer, fate=fate).start()
    try:
        wait_until(lambda: consumer.stats().dead_letters == 200, "200 dead letters",
                   timeout=60)
        assert submitter.submit(Action("Echo", "alive")).get(timeout=LIMIT) == "alive"
        letters = consumer.dead_letters()
        assert all(d.error_kind == "crash" and d.attempts == 3 for d in letters)
        assert sequence.failure is None and consumer.failure is None
    finally:
        sequence.shutdown(timeout=LIMIT)


@pytest.mark.timeout(60)
def test_a_systemic_failure_releases_the_entries(productions, client, stream) -> None:
    """The Sequence fails (its supervisor gives up): what it held goes back to the stream."""
    gate = threading.Event()

    class Doomed(Site):
        def on_receive(self, message: Any) -> Any:
            if gate.is_set():
                raise RuntimeError("the disk is gone")
            return super().on_receive(message)

    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
    fate = Fate(max_restarts=2, restart_within=60.0, sites=2)
    consumer = productions(fate=fate)
    sequence = Sequence(plan, production=consumer, site=Doomed, fate=fate).start()
    gate.set()
    productions().assign_many([Action("Echo", n) for n in range(20)])
    wait_until(lambda: sequence.failure is not None, "the Sequence to fail")
    sequence.shutdown(drain=False, timeout=LIMIT)
    consumer.close()
    wait_until(lambda: group_pending(client, stream) == 0 and client.xlen(stream) == 20,
               "the 20 entries back on the stream, none pending")


# The CLI


@pytest.mark.timeout(60)
def test_cli_submit_wait_prints_results(fleet, worker_env, stream, tmp_path) -> None:
    """``submit --wait`` prints one JSON line per outcome, failures included; exit 1."""
    fleet("w1", *FAST, env={"ECHO_MAX_ATTEMPTS": "1"})
    lines = [Action("Double", n).encode("json").decode() for n in range(5)]
    lines.append(Action("Fail", 7).encode("json").decode())
    source = tmp_path / "actions.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "echo_actors", "submit", str(source), "--stream", stream,
         "--wait", "--timeout", str(LIMIT), "--no-progress"],
        env=worker_env, capture_output=True, text=True, timeout=LIMIT * 2, check=False,
    )
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((r["line"], r["ok"]) for r in rows) == [(1, True), (2, True), (3, True),
                                                          (4, True), (5, True), (6, False)]
    assert sorted(r["result"] for r in rows if r["ok"]) == [0, 2, 4, 6, 8]
    [failed] = [r for r in rows if not r["ok"]]
    assert failed["error_kind"] == "execution" and failed["attempts"] == 1
    assert "submitted 6, bad lines 0, failed 1, not done in time 0" in done.stderr


SLOW_PLAN = textwrap.dedent('''

    def slow(tag):
        time.sleep(0.3)  # slow actions, few of them: the case read-ahead must not hog
        _redis.rpush(_key + ":by:" + os.environ["WORKER_NAME"], tag)
        return tag


    plan = plan.with_signature(Signature("Slow")).with_function("Slow", slow)
''')


@pytest.mark.timeout(90)
@pytest.mark.parametrize("count", [2, 4])
def test_workers_share_a_backlog_of_slow_actions(fleet, productions, client, stream,
                                                count) -> None:
    """Read-ahead bounded by free Sites: a backlog of few slow actions is shared evenly
    (with the old fixed read-ahead of 256, the first worker to read took them all)."""
    names = [f"w{i}" for i in range(count)]
    for name in names:
        fleet(name, "--sites", "2", env={"WORKER_NAME": name}, plan=SLOW_PLAN)
    wait_until(lambda: consumers(client, stream) == set(names), "the workers reading",
               timeout=60)
    n = 8 * count  # four rounds of two per worker
    productions().assign_many([Action("Slow", i) for i in range(n)])
    wait_until(lambda: sum(client.llen(f"{stream}:by:{name}") for name in names) == n,
               "every slow action run", timeout=60)
    shares = {name: client.llen(f"{stream}:by:{name}") for name in names}
    assert all(share >= 4 for share in shares.values()), shares  # each at least half its due


# 6. Redis Cluster


@pytest.mark.timeout(120)
def test_full_path_on_a_three_node_cluster(redis_cluster) -> None:
    """Submit, run, result, retry, delay, chain, dead letter, requeue: all on a cluster."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    fate = Fate(max_attempts=2, backoff_base=0.01)
    failing = {"on": True}
    ran: list[Any] = []

    def job(n: Any) -> Any:
        ran.append(n)
        if n == "poison" and failing["on"]:
            raise ValueError("poisoned")
        return n

    plan = Plan().with_signature(Signature("Job")).with_function("Job", job).build()
    consumer = RedisProduction(redis_cluster, stream=name, fate=fate, cluster=True,
                               visibility_timeout=5.0)
    submitter = RedisProduction(redis_cluster, stream=name, fate=fate, cluster=True)
    sequence = Sequence(plan, production=consumer, fate=fate.replace(sites=2)).start()
    try:
        plain, delayed, chained, poison = submitter.submit_many([
            Action("Job", 1), Action("Job", 2, delay=0.05),
            Action("Job", 3, next=Action("Job", 4)), Action("Job", "poison"),
        ])
        assert plain.get(timeout=LIMIT) == 1
        assert delayed.get(timeout=LIMIT) == 2
        assert chained.get(timeout=LIMIT) == 3 and chained.chain().get(timeout=LIMIT) == 4
        with pytest.raises(ExecutionError, match="poisoned"):
            poison.get(timeout=LIMIT)
        wait_until(lambda: submitter.stats().dead_letters == 1, "the dead letter")
        [letter] = submitter.dead_letters()
        assert letter.action is not None and letter.attempts == 2
        failing["on"] = False
        assert [x.action.id for x in submitter.requeue() if x.action] == [letter.action.id]
        wait_until(lambda: ran.count("poison") == 3, "the requeued letter run")
        assert consumer.flush(LIMIT)
        wait_until(lambda: submitter.stats().pending == 0, "everything acknowledged")
        assert [w.consumer for w in submitter.workers()] == [consumer.consumer]
    finally:
        sequence.shutdown(timeout=LIMIT)
        consumer.close()
        submitter.close()


# The example: a gevent front on a worker fleet


@pytest.mark.timeout(90)
def test_gevent_front_returns_results_of_a_worker_fleet(worker_env, stream, tmp_path) -> None:
    """examples/redis_fleet.py: HTTP clients get results the fleet computed, errors as 422."""
    example = Path(__file__).resolve().parents[1] / "examples" / "redis_fleet.py"
    logs = [(tmp_path / f"ex{i}.log").open("wb") for i in range(2)]
    worker = subprocess.Popen(
        [sys.executable, "-m", "echo_actors", "worker", f"{example}:plan", "--stream", stream],
        env=worker_env, stdout=logs[0], stderr=subprocess.STDOUT)
    server = subprocess.Popen(
        [sys.executable, str(example), "--port", "0", "--stream", stream,
         "--wait-timeout", str(LIMIT)],
        env=worker_env, stdout=subprocess.PIPE, stderr=logs[1], text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # blocks until it listens (or exits: empty line)
        assert first.startswith("listening on "), first
        base = first.split()[-1]

        def post(body: dict[str, Any], query: str = "") -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(
                f"{base}/actions{query}", data=json.dumps(body).encode(), method="POST",
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=LIMIT) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert post({"name": "Add", "content": {"a": 2, "b": 3}}) == (200, {
            "id": mock.ANY, "result": 5})
        status, body = post({"name": "Add", "content": {"a": 2}})
        assert status == 422 and body["kind"] == "validation", body
        chained = {"name": "Add", "content": {"a": 1, "b": 1},
                   "next": {"name": "Echo", "content": "last"}}
        assert post(chained, "?chain=1")[1]["result"] == "last"
        assert post({"name": 5})[0] == 400
    finally:
        for process in (server, worker):
            process.send_signal(signal.SIGTERM)
        codes = (server.wait(timeout=LIMIT), worker.wait(timeout=LIMIT))
        if server.stdout is not None:
            server.stdout.close()
        for log in logs:
            log.close()
    assert codes == (0, 0)


@pytest.mark.timeout(60)
def test_one_worker_reads_several_streams(fleet, redis_server, client, stream) -> None:
    """``--stream a,b``: one worker serves both (how a fleet spreads over cluster nodes)."""
    other = f"{stream}-b"
    process = fleet("w1", "--stream", f"{stream},{other}")
    first = RedisProduction(redis_server, stream=stream, fate=Fate())
    second = RedisProduction(redis_server, stream=other, fate=Fate())
    try:
        assert first.submit(Action("Double", 1)).get(timeout=LIMIT) == 2
        assert second.submit(Action("Double", 2)).get(timeout=LIMIT) == 4
    finally:
        first.close()
        second.close()
    process.send_signal(signal.SIGTERM)
    assert exit_code(process) == 0


DOOMED_SITES = textwrap.dedent('''

    from echo_actors.site import Site

    _receive = Site.on_receive


    def _doomed(self, message):
        if _redis.exists(_key + ":doom"):
            raise RuntimeError("the disk is gone")
        return _receive(self, message)


    Site.on_receive = _doomed
''')


@pytest.mark.timeout(60)
def test_a_failed_sequence_makes_the_worker_exit_non_zero(fleet, productions, client, stream,
                                                          tmp_path) -> None:
    """Sites that fail whatever they receive exhaust the supervisor: the worker gives its
    entries back to the stream and exits 1, naming the failure."""
    process = fleet("w1", *FAST, env={"ECHO_MAX_RESTARTS": "2"}, plan=DOOMED_SITES)
    wait_until(lambda: consumers(client, stream) == {"w1"}, "the worker reading")
    client.set(f"{stream}:doom", 1)
    productions().assign_many([Action("Record", n) for n in range(20)])
    assert exit_code(process) == 1
    assert "failed" in log_of(tmp_path, "w1")
    assert group_pending(client, stream) == 0 and client.xlen(stream) == 20
    assert client.llen(f"{stream}:executed") == 0
