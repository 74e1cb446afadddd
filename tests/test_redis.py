# SPDX-License-Identifier: MIT
"""RedisProduction and the Redis commands, against a redis-server started for the session.

Waits on other processes poll Redis in bounded loops (``wait_until``); waits
inside this process use events set by the plan functions.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

from echo_actors import Action, Fate, Plan, Signature, sign, verify
from echo_actors.production.redis import RedisProduction

LIMIT = 20.0
"""Seconds any wait on Redis or a worker may take before it counts as a failure."""

WORKER_PLAN = textwrap.dedent('''
    import os
    import time

    import redis

    from echo_actors import Plan, Signature

    _redis = redis.Redis.from_url(os.environ["ECHO_REDIS_URL"])
    _key = os.environ["TEST_KEY"]


    def record(n: int) -> int:
        time.sleep(0.001)  # a little work, so that a run lasts long enough to kill a worker
        _redis.rpush(_key + ":executed", n)
        return n


    def slow(n: int) -> int:
        _redis.rpush(_key + ":started", n)
        _redis.blpop(_key + ":gate", timeout=60)  # held until the test lets one through
        _redis.rpush(_key + ":finished", n)
        return n


    plan = (
        Plan()
        .with_signature(Signature("Record", int)).with_function("Record", record)
        .with_signature(Signature("Slow", int)).with_function("Slow", slow)
    )
''')


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = LIMIT) -> None:
    """Poll ``predicate`` (state held by Redis or another process) until true, bounded."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.05)


def group_pending(client: redis.Redis, stream: str, consumer: str | None = None) -> int:
    """Unacknowledged entries of the group (of one consumer when given)."""
    summary: Any = client.xpending(stream, "echo")
    if consumer is None:
        return int(summary["pending"])
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"] == consumer.encode())


class Recorder:
    """Plan functions' side: what ran, and an event set once ``expected`` results are in."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list[Any] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, content: Any) -> Any:
        with self.lock:
            self.results.append(content)
            if len(self.results) >= self.expected:
                self.done.set()
        return content


def noop_plan(recorder: Recorder) -> Plan:
    return Plan().with_signature(Signature("Noop")).with_function("Noop", recorder).build()


# In-process: a Sequence on a RedisProduction


@pytest.mark.timeout(60)
def test_round_trip_through_a_sequence(productions, make_sequence, client, stream) -> None:
    """Actions assigned by another production run on the Sequence and are all acknowledged."""
    recorder = Recorder(500)
    consumer = productions(consumer="reader")
    make_sequence(noop_plan(recorder), consumer)
    submitter = productions()
    ids = submitter.assign_many([Action("Noop", i) for i in range(500)])
    assert len(ids) == 500 and all(ids)
    assert recorder.done.wait(LIMIT)
    assert sorted(recorder.results) == list(range(500))
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")
    wait_until(lambda: consumer.counts["acked"] == 500, "the writer's count")
    assert group_pending(client, stream) == 0


def _idle(sequence: Any, sites: int) -> Callable[[], bool]:
    """Every Site started and idle (the dispatcher left each a grant on its desk)."""
    return lambda: len(sequence._run.desk.grants) == sites


def _add_at_once(producer: RedisProduction, actions: list[Action]) -> list[Any]:
    """Add ``actions`` in one MULTI, so that a reader reads them in one XREADGROUP (Redis
    serves a blocked reader after the transaction); their futures."""
    pipe = producer._client.pipeline(transaction=True)
    for action in actions:
        pipe.xadd(producer.stream, {"a": producer.encode(action, reply=True)})
    pipe.execute()
    return [producer.future(action) for action in actions]


@pytest.mark.timeout(60)
def test_a_read_is_spread_over_the_idle_sites(productions, make_sequence, client,
                                              stream) -> None:
    """Entries read while Sites idle go to them, one share each: 4 actions that each wait
    for the 4 of them to run at once complete."""
    barrier = threading.Barrier(4, timeout=LIMIT)
    plan = (Plan().with_signature(Signature("Meet", int))
            .with_function("Meet", lambda n: (barrier.wait(), n)[1]).build())
    consumer = productions(consumer="reader", sites=4)
    sequence = make_sequence(plan, production=consumer, fate=Fate(sites=4))
    wait_until(_idle(sequence, 4), "every Site idle")
    futures = productions().submit_many([Action("Meet", i) for i in range(4)])
    assert sorted(f.get(timeout=LIMIT) for f in futures) == [0, 1, 2, 3]
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")


@pytest.mark.timeout(60)
def test_an_idle_site_steals_what_waits_behind_a_running_action(productions, make_sequence,
                                                                 client, stream) -> None:
    """Work conserving: read at once, [Hold, Free] go to one Site and [Other] to the other;
    once Other ended, that Site takes Free, while Hold (which waits for Free) runs on."""
    freed = threading.Event()
    ran: list[str] = []

    def hold(_: Any) -> str:
        assert freed.wait(LIMIT), "Free waited behind Hold while a Site idled"
        ran.append("hold")
        return "hold"

    def free(_: Any) -> str:
        ran.append("free")
        freed.set()
        return "free"

    plan = (Plan().with_signature(Signature("Hold")).with_function("Hold", hold)
            .with_signature(Signature("Free")).with_function("Free", free)
            .with_signature(Signature("Other")).with_function("Other", lambda _: "other")
            .build())
    consumer = productions(consumer="reader", sites=2, fair=False)  # reads all 3 at once
    sequence = make_sequence(plan, production=consumer, fate=Fate(sites=2))
    wait_until(_idle(sequence, 2), "both Sites idle")
    futures = _add_at_once(productions(), [Action("Hold"), Action("Free"), Action("Other")])
    assert [f.get(timeout=LIMIT) for f in futures] == ["hold", "free", "other"]
    assert ran == ["free", "hold"]


@pytest.mark.timeout(60)
def test_entries_sent_to_a_site_not_started_go_back_at_a_shutdown(productions, make_sequence,
                                                                   client, stream) -> None:
    """A shutdown without drain gives the entries sent to a Site's mailbox, not started,
    back to the stream; another worker then runs each of them once."""
    started, go = threading.Event(), threading.Event()
    ran: list[int] = []

    def hold(n: int) -> int:
        started.set()
        assert go.wait(LIMIT)
        ran.append(n)
        return n

    plan = (Plan().with_signature(Signature("Hold", int)).with_function("Hold", hold)
            .with_signature(Signature("Noop", int)).with_function("Noop", ran.append).build())
    consumer = productions(consumer="first", sites=1, fair=False)  # reads all ten at once
    sequence = make_sequence(plan, production=consumer, fate=Fate(sites=1))
    wait_until(_idle(sequence, 1), "the Site idle")
    _add_at_once(productions(), [Action("Hold", 0), *(Action("Noop", i) for i in range(1, 10))])
    assert started.wait(LIMIT)
    stopper = threading.Thread(target=sequence.shutdown, kwargs={"drain": False,
                                                                 "timeout": LIMIT})
    stopper.start()
    wait_until(lambda: sequence._run.settler.cancelling, "the shutdown to cancel")
    go.set()
    stopper.join(LIMIT)
    assert not stopper.is_alive()
    assert ran == [0]
    assert consumer.counts["fetched"] == 10 and consumer.counts["released"] == 9
    consumer.close()
    wait_until(lambda: client.xlen(stream) == 9, "the nine given back to the stream")
    again = productions(consumer="second", sites=2)
    make_sequence(plan, production=again, fate=Fate(sites=2))
    wait_until(lambda: len(ran) == 10, "the nine run by the next worker")
    assert sorted(ran) == list(range(10))
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")


@pytest.mark.timeout(60)
def test_keyed_entries_are_routed_by_the_dispatcher_in_order(productions, make_sequence,
                                                             client, stream) -> None:
    """Keyed entries read among unkeyed ones are routed by key, and an ordered key's
    actions run in order."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def note(content: list[Any]) -> None:
        with lock:
            seen.append((content[0], content[1]))

    plan = Plan().with_signature(Signature("Note")).with_function("Note", note).build()
    consumer = productions(consumer="reader", sites=4)
    sequence = make_sequence(plan, production=consumer, fate=Fate(sites=4))
    wait_until(_idle(sequence, 4), "every Site idle")
    actions = [Action("Note", ["free", 0]), Action("Note", ["free", 1])]
    actions += [Action("Note", ["k", i], key="k", ordered=True) for i in range(20)]
    actions.append(Action("Note", ["free", 2]))
    productions().assign_many(actions)
    wait_until(lambda: len(seen) == 23, "every action run")
    assert [n for kind, n in seen if kind == "k"] == list(range(20))
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")


@pytest.mark.timeout(60)
def test_a_chain_submitted_in_process_ends_in_process(productions, make_sequence, client,
                                                       stream) -> None:
    """Sequence.submit on a RedisProduction: the chain runs here, so chain() sees its end."""
    recorder = Recorder(3)
    plan = (Plan().with_signature(Signature("Noop")).with_function("Noop", recorder)
            .with_signature(Signature("Add")).with_function("Add", lambda n: n + 1).build())
    sequence = make_sequence(plan, productions(consumer="local"))
    future = sequence.submit(Action("Add", 1, next=Action("Add", next=Action("Noop"))))
    assert future.chain().get(timeout=LIMIT) == 3
    assert future.get(timeout=LIMIT) == 2
    assert recorder.results == [3]
    assert client.xlen(stream) == 0 and group_pending(client, stream) == 0  # never in Redis


@pytest.mark.timeout(60)
def test_named_production_in_life(productions, make_life, make_sequence, client, stream) -> None:
    """A RedisProduction registered in Life (Karma) feeds the Sequence that uses it."""
    recorder = Recorder(20)
    life = make_life(Fate())
    durable = productions(consumer="karma")
    life.add_production("jobs", durable)
    assert life.production("jobs") is durable
    make_sequence(noop_plan(recorder), life.production("jobs"), life=life)
    productions().assign_many([Action("Noop", i) for i in range(20)])
    assert recorder.done.wait(LIMIT)
    wait_until(lambda: group_pending(client, stream) == 0 and client.xlen(stream) == 0,
               "acknowledgements")


@pytest.mark.timeout(60)
def test_delayed_action_waits_in_the_sorted_set(productions, make_sequence, client) -> None:
    """An action with a delay is parked in the sorted set, then moved back and run."""
    recorder = Recorder(1)
    consumer = productions(consumer="delays")
    submitter = productions()
    submitter.assign(Action("Noop", "later", delay=0.3))
    assert client.zcard(submitter.delayed_key) == 1  # no consumer runs yet: nothing moves it
    make_sequence(noop_plan(recorder), consumer)
    assert recorder.done.wait(LIMIT)
    assert recorder.results == ["later"]
    assert client.zcard(submitter.delayed_key) == 0
    assert consumer.counts["moved"] == 1


@pytest.mark.timeout(60)
def test_retry_backoff_goes_through_the_sorted_set(productions, make_sequence, client,
                                                    stream) -> None:
    """A failed attempt waits its backoff in the sorted set, comes back and completes.

    The first consumer stops reading (and moving due entries) as its attempt
    fails, so the retry stays parked until a second consumer starts.
    """
    calls: Counter[str] = Counter()
    failed = threading.Event()
    done = threading.Event()
    fate = Fate(backoff_base=0.2, backoff_jitter=0.0)
    consumer = productions(consumer="retries", fate=fate)

    def flaky(content: str) -> str:
        calls[content] += 1
        if calls[content] == 1:
            consumer.pause()
            failed.set()
            raise RuntimeError("first attempt fails")
        done.set()
        return content

    plan = Plan().with_signature(Signature("Flaky")).with_function("Flaky", flaky).build()
    sequence = make_sequence(plan, consumer, fate=fate)
    productions().assign(Action("Flaky", "x"))
    assert failed.wait(LIMIT)
    # Parked in one script; the consumer counts it once that script has answered.
    wait_until(lambda: client.zcard(consumer.delayed_key) == 1
               and consumer.counts["deferred"] == 1, "the retry in the sorted set, counted")
    assert group_pending(client, stream) == 0  # its entry was acknowledged when parked
    assert not done.is_set()
    mover = productions(consumer="mover", fate=fate)
    make_sequence(plan, mover, fate=fate)
    assert done.wait(LIMIT)
    assert calls["x"] == 2
    assert (consumer.counts["moved"], mover.counts["moved"]) == (0, 1)
    assert sequence.stats().retried == 1
    wait_until(lambda: client.xlen(stream) == 0 and group_pending(client, stream) == 0,
               "acknowledgements")


def server_ms(client: redis.Redis) -> int:
    """The Redis server's clock, in milliseconds."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def last_delivery(client: redis.Redis, stream: str) -> tuple[int, dict[str, Any]]:
    """The one pending entry: when (server ms) it was last delivered or touched, and its row."""
    pipe = client.pipeline(transaction=True)  # one instant: the clock and the idle time
    pipe.time()
    pipe.xpending_range(stream, "echo", "-", "+", 1)
    (seconds, micros), [row] = pipe.execute()
    now = int(seconds) * 1000 + int(micros) // 1000
    return now - int(row["time_since_delivered"]), row


@pytest.mark.timeout(60)
def test_heartbeat_keeps_a_running_actions_entry_fresh(
    productions, make_sequence, client, stream,
) -> None:
    """While a long action runs, the heartbeat resets its entry's idle time (what claims use)."""
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def long(content: str) -> str:
        runs.append(content)
        started.set()
        release.wait(LIMIT)  # the action's work: outlast several heartbeats
        return content

    plan = Plan().with_signature(Signature("Long")).with_function("Long", long).build()
    busy = productions(consumer="busy", visibility_timeout=0.3)
    make_sequence(plan, busy)
    productions().assign(Action("Long", "once"))
    assert started.wait(LIMIT)
    try:
        delivered, row = last_delivery(client, stream)
        assert (row["consumer"], row["times_delivered"]) == (b"busy", 1)
        wait_until(lambda: server_ms(client) > delivered + 2, "the server clock to move on")
        beats = busy.counts["heartbeats"]
        # Counted before it touches: two more mean one touch ran entirely after this point.
        wait_until(lambda: busy.counts["heartbeats"] >= beats + 2, "a heartbeat")
        touched, row = last_delivery(client, stream)
        assert touched > delivered, "the heartbeat did not reset the entry's idle time"
        assert (row["consumer"], row["times_delivered"]) == (b"busy", 1)  # not redelivered
    finally:
        release.set()
    wait_until(lambda: group_pending(client, stream) == 0, "the acknowledgement")
    assert runs == ["once"] and busy.counts["claimed"] == 0


@pytest.mark.timeout(60)
def test_tampered_unsigned_and_oversized_are_dead_lettered(productions, make_sequence,
                                                          client, stream) -> None:
    """With a license key: unsigned, tampered and oversized actions are dead-lettered."""
    recorder = Recorder(1)
    fate = Fate(license_keys=("secret",), max_action_bytes=4096)
    consumer = productions(consumer="licensed", fate=fate)
    make_sequence(noop_plan(recorder), consumer, fate=fate)
    submitter = productions(fate=Fate(max_action_bytes=1 << 20))
    unsigned = Action("Noop", "unsigned")
    tampered = sign(Action("Noop", "original"), "secret").replace(content="changed")
    oversized = sign(Action("Noop", "x" * 10_000), "secret")
    with pytest.raises(ValueError, match="over the limit"):
        productions(fate=fate).assign(oversized)  # the submitter's own check
    submitter.assign_many([unsigned, tampered, oversized])
    submitter.assign(sign(Action("Noop", "good"), "secret"))
    assert recorder.done.wait(LIMIT)
    assert recorder.results == ["good"]
    wait_until(lambda: client.xlen(consumer.dead_key) == 3, "three dead letters")
    letters = {
        (letter.action.id if letter.action else "raw"): letter
        for letter in consumer.dead_letters()
    }
    assert letters[unsigned.id].error_kind == "license"
    assert letters[tampered.id].error_kind == "license"
    assert letters["raw"].error_kind == "decode" and letters["raw"].size > 4096
    assert "over the limit" in letters["raw"].message
    wait_until(lambda: client.xlen(stream) == 0 and group_pending(client, stream) == 0,
               "acknowledgements")


@pytest.mark.timeout(60)
def test_dead_letters_requeue(productions, make_sequence, client, stream) -> None:
    """A dead letter in Redis can be requeued: it runs again with its attempts reset."""
    fails = threading.Event()
    runs: list[int] = []

    def fragile(content: Any) -> Any:
        runs.append(1)
        if len(runs) == 1:
            fails.set()
            raise ValueError("bad input")  # wrapped: retryable, but max_attempts is 1
        return content

    fate = Fate(max_attempts=1)
    plan = Plan().with_signature(Signature("Fragile")).with_function("Fragile", fragile).build()
    consumer = productions(consumer="requeue", fate=fate)
    sequence = make_sequence(plan, consumer, fate=fate)
    action = Action("Fragile", "v")
    productions().assign(action)
    wait_until(lambda: len(consumer.dead_letters()) == 1, "the dead letter")
    [letter] = consumer.dead_letters()
    assert letter.action is not None and letter.action.id == action.id
    assert letter.error_kind == "execution" and letter.attempts == 1
    assert sequence.dead_letters() == []  # kept in Redis, not in the process
    assert [x.action.id for x in consumer.requeue([action.id]) if x.action] == [action.id]
    wait_until(lambda: len(runs) == 2, "the requeued action to run")
    wait_until(lambda: client.xlen(stream) == 0 and client.xlen(consumer.dead_key) == 0,
               "the requeued action acknowledged")


@pytest.mark.timeout(60)
def test_assign_from_many_threads_adds_each_action_once(productions, client, stream) -> None:
    """Threads assigning at once share the production's own connection or go through the
    client when it is busy: every action is added exactly once."""
    submitter = productions()
    errors: list[BaseException] = []

    def send(start: int) -> None:
        try:
            for i in range(start, start + 200):
                submitter.assign(Action("Noop", i))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n * 200,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIMIT)
    assert not errors and not any(t.is_alive() for t in threads)
    contents = sorted(submitter.decode(fields[b"a"]).content
                      for _, fields in client.xrange(stream))
    assert contents == list(range(1600))


@pytest.mark.timeout(60)
def test_assign_after_its_connection_was_killed(productions, client, stream) -> None:
    """Redis drops every client connection: the next assign still adds its action, once
    (the client reconnects and retries), and so do the ones after it."""
    submitter = productions()
    submitter.assign(Action("Noop", 0))
    killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    submitter.assign(Action("Noop", 1))
    submitter.assign(Action("Noop", 2))
    contents = [submitter.decode(fields[b"a"]).content for _, fields in client.xrange(stream)]
    assert contents == [0, 1, 2]


@pytest.mark.timeout(60)
def test_acknowledgements_after_their_connection_was_killed(productions, make_sequence,
                                                            client, stream) -> None:
    """Redis drops every client connection between two batches: the writer's next
    acknowledgements and results still reach Redis (its connection of its own gives way to
    the client's reconnection), and nothing stays pending."""
    recorder = Recorder(20)
    consumer = productions(consumer="reader")
    make_sequence(noop_plan(recorder), consumer)
    submitter = productions()
    assert submitter.submit(Action("Noop", 0)).get(timeout=LIMIT) == 0
    assert client.client_kill_filter(_type="normal", skipme=True) >= 1
    futures = [submitter.submit(Action("Noop", i)) for i in range(1, 20)]
    assert [f.get(timeout=LIMIT) for f in futures] == list(range(1, 20))
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")
    assert group_pending(client, stream) == 0


@pytest.mark.timeout(60)
def test_results_are_stored_after_redis_forgot_the_script(productions, make_sequence, client,
                                                         stream) -> None:
    """SCRIPT FLUSH under a running worker (as a restarted Redis forgets its scripts): the
    next completion's EVALSHA fails inside the writer's MULTI, which raises instead of
    passing for written; the writer loads the script again and the result arrives."""
    recorder = Recorder(2)
    consumer = productions(consumer="reader")
    make_sequence(noop_plan(recorder), consumer)
    submitter = productions()
    assert submitter.submit(Action("Noop", 1)).get(timeout=LIMIT) == 1
    client.script_flush()
    assert submitter.submit(Action("Noop", 2)).get(timeout=LIMIT) == 2
    wait_until(lambda: client.xlen(stream) == 0, "every entry acknowledged and deleted")
    assert group_pending(client, stream) == 0


@pytest.mark.timeout(30)
def test_the_writers_transaction_raises_what_redis_refused(productions, client,
                                                           stream) -> None:
    """The writer's MULTI on its own connection: a command refused when queued aborts the
    whole transaction and raises; one that fails inside it raises too; either way its
    connection stays in step, so the next transaction runs, and it is all or nothing."""
    production = productions()
    direct = production._out_direct
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        direct.transaction([("SET", f"{stream}:a", "1"), ("GET",)])
    assert client.get(f"{stream}:a") is None  # aborted: not even the first command ran
    with pytest.raises(redis.exceptions.NoScriptError):
        direct.transaction([("SET", f"{stream}:b", "1"), ("EVALSHA", "0" * 40, 0)])
    assert client.get(f"{stream}:b") == b"1"  # Redis runs the rest of an EXEC that failed
    assert direct.transaction([("SET", f"{stream}:c", "1"), ("INCR", f"{stream}:c")])
    assert client.get(f"{stream}:c") == b"2"
    with direct._lock:  # busy (another thread writes): the caller uses a pipeline instead
        assert direct.transaction([("SET", f"{stream}:d", "1")]) is False
    assert client.get(f"{stream}:d") is None


# Worker processes


@pytest.fixture
def workers(worker_processes: Callable[..., subprocess.Popen[bytes]]
            ) -> Callable[..., subprocess.Popen[bytes]]:
    """Start ``echo-actors worker`` processes of WORKER_PLAN on the test's stream."""

    def start(name: str, *options: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        return worker_processes(WORKER_PLAN, name, *options, env=env)

    return start


def consumers(client: redis.Redis, stream: str) -> set[str]:
    """Names of the group's consumers (a worker joins on its first read)."""
    try:
        rows: Any = client.xinfo_consumers(stream, "echo")
    except redis.ResponseError:
        return set()
    return {row["name"].decode() for row in rows}


def exit_code(process: subprocess.Popen[bytes], timeout: float = LIMIT) -> int:
    """Wait for ``process`` to exit (bounded) and return its status."""
    return process.wait(timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_worker_loses_nothing(workers, productions, client, stream) -> None:
    """Three workers, 5,000 actions, one SIGKILLed mid-run: every action completes."""
    n = 5000
    options = ("--sites", "4", "--visibility-timeout", "1", "--read-ahead", "100",
               "--batch", "50")
    procs = {name: workers(name, *options) for name in ("w1", "w2", "w3")}
    wait_until(lambda: consumers(client, stream) == set(procs), "three workers reading",
               timeout=60)
    productions().assign_many([Action("Record", i) for i in range(n)])
    executed_key = f"{stream}:executed"
    wait_until(lambda: client.llen(executed_key) >= n // 5, "a fifth of the actions run")
    procs["w1"].send_signal(signal.SIGKILL)
    assert exit_code(procs["w1"]) == -signal.SIGKILL
    held_when_killed = group_pending(client, stream, "w1")
    wait_until(lambda: len(set(client.lrange(executed_key, 0, -1))) == n,
               "every action to run", timeout=120)
    wait_until(lambda: client.xlen(stream) == 0 and group_pending(client, stream) == 0,
               "every entry acknowledged", timeout=60)
    executed = [int(x) for x in client.lrange(executed_key, 0, -1)]
    assert set(executed) == set(range(n))
    duplicates = len(executed) - n
    # Only actions the killed worker held unacknowledged may have run twice.
    assert duplicates <= held_when_killed
    assert held_when_killed > 0
    assert client.xlen(f"{{{stream}}}:dead") == 0
    print(f"\nkill test: {n} actions, {duplicates} duplicates "
          f"(w1 held {held_when_killed} unacknowledged when killed)")
    for name in ("w2", "w3"):
        procs[name].send_signal(signal.SIGTERM)
        assert exit_code(procs[name]) == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("runtime", ["thread", "gevent"])
def test_sigterm_finishes_in_flight_and_exits_zero(workers, productions, client, stream,
                                                  runtime) -> None:
    """SIGTERM: running actions finish and are acknowledged, the rest go back, exit 0."""
    n = 40
    # A window of 1: each Site holds only the action it runs; the rest wait in the process.
    # A fixed read-ahead: the worker reads all 40 while four run (the adaptive one would
    # hold about one per Site, leaving little to give back).
    worker = workers("graceful", "--sites", "4", "--visibility-timeout", "30",
                     "--runtime", runtime, "--read-ahead", "64",
                     env={"ECHO_MAILBOX_WINDOW": "1"})
    wait_until(lambda: consumers(client, stream) == {"graceful"}, "the worker reading")
    productions().assign_many([Action("Slow", i) for i in range(n)])
    started, finished, gate = f"{stream}:started", f"{stream}:finished", f"{stream}:gate"
    wait_until(lambda: client.llen(started) == 4 and group_pending(client, stream) == n,
               "four actions running, all read")
    worker.send_signal(signal.SIGTERM)  # lands while the four are held at the gate
    wait_until(lambda: group_pending(client, stream, "graceful") == 4,
               "what did not start given back")
    client.rpush(gate, *["go"] * 4)
    assert exit_code(worker) == 0
    ran = sorted(int(x) for x in client.lrange(started, 0, -1))
    done = sorted(int(x) for x in client.lrange(finished, 0, -1))
    assert ran == done  # whatever started, finished
    assert len(set(done)) == len(done) == 4
    assert group_pending(client, stream, "graceful") == 0
    assert group_pending(client, stream) == 0
    assert client.xlen(stream) == n - len(done)  # the rest are queued again
    # Another worker takes the rest: each action ran exactly once.
    client.rpush(gate, *["go"] * (n - 4))
    relay = workers("relay", "--sites", "4")
    wait_until(lambda: client.llen(finished) == n, "the rest to run")
    assert sorted(int(x) for x in client.lrange(finished, 0, -1)) == list(range(n))
    relay.send_signal(signal.SIGTERM)
    assert exit_code(relay) == 0


@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_worker_with_130(workers, client, stream, tmp_path) -> None:
    """SIGINT (Ctrl-C): the worker stops cleanly, prints its summary and exits 130."""
    worker = workers("interrupted", "--sites", "2")
    wait_until(lambda: consumers(client, stream) == {"interrupted"}, "the worker reading")
    worker.send_signal(signal.SIGINT)
    assert exit_code(worker) == 130
    log = (tmp_path / "interrupted.log").read_text()
    assert "echo-actors worker interrupted: completed 0" in log
    assert "Traceback" not in log


@pytest.mark.timeout(60)
def test_malformed_entries_do_not_stop_a_worker(workers, productions, client, stream) -> None:
    """Garbage entries are dead-lettered (kind decode) and the worker carries on."""
    worker = workers("sturdy", "--sites", "2")
    client.xadd(stream, {"a": b"\xc1\xc1 not msgpack \xff"})
    client.xadd(stream, {"x": b"no action field"})
    client.xadd(stream, {"a": msgspec.msgpack.encode({"name": 5})})
    client.xadd(stream, {"a": msgspec.msgpack.encode({"name": "Record", "delay": "soon"})})
    productions().assign_many([Action("Record", i) for i in range(10)])
    executed = f"{stream}:executed"
    wait_until(lambda: client.llen(executed) == 10, "the good actions to run")
    dead = client.xrange(f"{{{stream}}}:dead")
    assert [fields[b"error_kind"] for _, fields in dead] == [b"decode"] * 4
    wait_until(lambda: client.xlen(stream) == 0 and group_pending(client, stream) == 0,
               "acknowledgements")
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert exit_code(worker) == 0


@pytest.mark.timeout(60)
def test_cli_submit_stats_and_dead_letters(worker_env, client, stream, tmp_path) -> None:
    """`submit` signs and adds lines, reports bad ones; `stats` and `dead-letters` read Redis."""
    lines = tmp_path / "actions.jsonl"
    lines.write_text('{"name": "Record", "content": 1}\nnot json\n'
                     '{"name": "Record", "content": 2, "delay": 60}\n{"content": 3}\n'
                     '{"name": "Record", "content": 18446744073709551616}\n')  # > MessagePack
    env = {**worker_env, "ECHO_LICENSE_KEYS": "k1,k0"}

    def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "echo_actors", *args, "--stream", stream],
            env=env, input=stdin, capture_output=True, timeout=LIMIT, check=False,
        )

    result = cli("submit", str(lines))
    assert result.returncode == 1
    assert b"submitted 2, bad lines 3" in result.stdout
    assert b"line 2:" in result.stderr and b"line 4:" in result.stderr
    assert b"line 5:" in result.stderr and b"Traceback" not in result.stderr
    [(_, fields)] = client.xrange(stream)
    verify(RedisProduction(client, stream=stream, fate=Fate()).decode(fields[b"a"]), ["k1"])
    result = cli("submit", "-", stdin=b'{"name": "Record", "content": 5}\n')
    assert result.returncode == 0 and b"submitted 1, bad lines 0" in result.stdout

    result = cli("stats", "--json")
    assert result.returncode == 0
    figures = json.loads(result.stdout)
    assert (figures["length"], figures["delayed"], figures["dead_letters"]) == (2, 1, 0)

    # A dead letter stored by 0.1 (`kind`, not `error_kind`) is still read.
    client.xadd(f"{stream}:dead", {"d": msgspec.msgpack.encode({
        "kind": "execution", "message": "boom", "attempts": 3, "failed_at": 1.0,
        "action": msgspec.to_builtins(Action("Record", 9, id="dead-1")),
    })})
    result = cli("dead-letters", "list", "--json")
    assert result.returncode == 0, result.stderr
    [letter] = [json.loads(line) for line in result.stdout.splitlines()]
    assert letter["action"]["id"] == "dead-1" and letter["error_kind"] == "execution"
    result = cli("dead-letters", "requeue", "--id", "dead-1", "--id", "missing")
    assert result.returncode == 1
    assert b"requeued 1" in result.stdout and b"missing" in result.stderr
    assert client.xlen(stream) == 3 and client.xlen(f"{{{stream}}}:dead") == 0

    result = subprocess.run(
        [sys.executable, "-m", "echo_actors", "stats"],
        env={k: v for k, v in env.items() if k != "ECHO_REDIS_URL"},
        capture_output=True, timeout=LIMIT, check=False,
    )
    assert result.returncode == 2 and b"ECHO_REDIS_URL" in result.stderr
