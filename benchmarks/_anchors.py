# SPDX-License-Identifier: MIT
"""Reference figures ("anchors") from the tools a user would otherwise pick.

Each benchmark prints our own figures beside these, measured in the same run.
Every function does real work, returns the wall seconds (``time.perf_counter``)
of the measured part only -- setup and teardown stay outside the timing -- and
stops everything it started (threads, actors, brokers, workers).

Dramatiq, gevent and redis are imported inside the functions, so this module
imports with only the standard library and pykka installed.

Run ``python benchmarks/_anchors.py [REDIS_URL]`` for a quick check; the Redis
anchor runs only when a URL is given.
"""

from __future__ import annotations

import concurrent.futures
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from dramatiq import Broker

__all__ = [
    "dramatiq_redis_noop",
    "dramatiq_stub_noop",
    "gevent_pool_io",
    "lower_bound",
    "pykka_pool_noop",
    "pykka_pool_skewed",
    "skewed_tasks",
    "tpe_noop",
    "tpe_skewed",
]

_DRAMATIQ_QUEUE = "echo_anchors"
_DRAMATIQ_ACTOR = "echo_anchors_noop"


def _noop() -> None:
    """Do nothing (the unit of work of the no-op anchors)."""


class _EchoActor(pykka.ThreadingActor):
    """Plain pykka actor that answers each message with the message itself."""

    def on_receive(self, message: Any) -> Any:
        """Return the message unchanged."""
        return message


class _SleepActor(pykka.ThreadingActor):
    """Plain pykka actor that sleeps for the number of seconds it is sent."""

    def on_receive(self, message: Any) -> Any:
        """Sleep ``message`` seconds and return it."""
        time.sleep(message)
        return message


def _start_actors(cls: type[pykka.ThreadingActor], count: int) -> list[pykka.ActorRef[Any]]:
    """Start ``count`` actors of ``cls``; stop those already started if one fails."""
    if count < 1:
        raise ValueError("need at least one actor")
    refs: list[pykka.ActorRef[Any]] = []
    try:
        for _ in range(count):
            refs.append(cls.start())
    except BaseException:
        _stop_actors(refs)
        raise
    return refs


def _stop_actors(refs: list[pykka.ActorRef[Any]]) -> None:
    """Stop the given actors and wait for each to finish."""
    for ref in refs:
        ref.stop(block=True)


def _round_robin(refs: list[pykka.ActorRef[Any]], messages: list[Any]) -> float:
    """Ask ``messages`` round-robin over ``refs`` (all asks first, then all gets); timed."""
    count = len(refs)
    start = time.perf_counter()
    futures = [refs[i % count].ask(msg, block=False) for i, msg in enumerate(messages)]
    for future in futures:
        future.get()
    return time.perf_counter() - start


# -- no-op throughput ---------------------------------------------------------------------------


def tpe_noop(n: int, workers: int = 4) -> float:
    """Submit n no-op callables to a ThreadPoolExecutor, then wait for each; timed."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        futures = [pool.submit(_noop) for _ in range(n)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return elapsed


def tpe_latency(n: int, workers: int = 4) -> list[float]:
    """Seconds from submit to result for n no-op tasks, one at a time."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in range(200):
            pool.submit(_noop).result()
        out = []
        for _ in range(n):
            started = time.perf_counter()
            pool.submit(_noop).result()
            out.append(time.perf_counter() - started)
    return out


def pykka_ask_latency(n: int) -> list[float]:
    """Seconds for n asks of one pykka ThreadingActor, one at a time."""
    [ref] = _start_actors(_EchoActor, 1)
    try:
        for i in range(200):
            ref.ask(i)
        out = []
        for i in range(n):
            started = time.perf_counter()
            ref.ask(i)
            out.append(time.perf_counter() - started)
        return out
    finally:
        _stop_actors([ref])


def pykka_pool_noop(n: int, actors: int = 4) -> float:
    """Ask n messages round-robin over plain pykka echo actors, then get all; timed."""
    refs = _start_actors(_EchoActor, actors)
    try:
        return _round_robin(refs, list(range(n)))
    finally:
        _stop_actors(refs)


def _dramatiq_run(
    broker: Broker, n: int, threads: int, join: Callable[[str], None] | None = None
) -> float:
    """Run n no-op Dramatiq messages through ``broker`` with one in-process Worker; timed.

    The broker is made the global one, the actor is declared on it, its queue is flushed and
    a Worker is started before the clock starts; the clock covers the ``send`` calls and the
    wait until every message was processed. The worker is stopped and the broker closed after.
    """
    import dramatiq  # noqa: PLC0415 -- optional dependency, imported lazily

    worker = None
    try:
        dramatiq.set_broker(broker)
        actor = dramatiq.actor(
            actor_name=_DRAMATIQ_ACTOR, queue_name=_DRAMATIQ_QUEUE, broker=broker
        )(_noop)
        broker.flush(_DRAMATIQ_QUEUE)
        worker = dramatiq.Worker(broker, worker_threads=threads)
        worker.start()

        start = time.perf_counter()
        for _ in range(n):
            actor.send()
        (broker.join if join is None else join)(_DRAMATIQ_QUEUE)
        worker.join()
        return time.perf_counter() - start
    finally:
        if worker is not None:
            worker.stop()
        broker.close()


def dramatiq_stub_noop(n: int, threads: int = 4) -> float:
    """Send n no-op messages through Dramatiq's in-memory StubBroker until processed; timed."""
    from dramatiq.brokers.stub import StubBroker  # noqa: PLC0415 -- lazy

    return _dramatiq_run(StubBroker(), n, threads)


def dramatiq_redis_noop(n: int, url: str, threads: int = 4) -> float:
    """Send n no-op messages through Dramatiq's RedisBroker at ``url`` until processed; timed.

    The queue is flushed before; ``broker.join`` polls Redis every 10 ms (default 100 ms) so
    the poll period does not dominate short runs.
    """
    from dramatiq.brokers.redis import RedisBroker  # noqa: PLC0415 -- lazy

    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    try:
        return _dramatiq_run(broker, n, threads, lambda q: broker.join(q, interval=10))
    finally:
        broker.client.close()
        broker.client.connection_pool.disconnect()


# -- skewed workload ----------------------------------------------------------------------------


def skewed_tasks(
    count: int = 64, every: int = 4, long: float = 0.05, short: float = 0.001
) -> list[float]:
    """Durations where every ``every``-th task (indices 0, every, 2*every, ...) is long."""
    if every < 1:
        raise ValueError("every must be >= 1")
    return [long if i % every == 0 else short for i in range(count)]


def lower_bound(durations: list[float], workers: int) -> float:
    """Best possible makespan of ``durations`` on ``workers``: max(sum / workers, max)."""
    if not durations:
        return 0.0
    return max(sum(durations) / workers, *durations)


def tpe_skewed(durations: list[float], workers: int = 4) -> float:
    """Run sleep(d) tasks for ``durations`` on a ThreadPoolExecutor; timed."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        futures = [pool.submit(time.sleep, d) for d in durations]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return elapsed


def pykka_pool_skewed(durations: list[float], actors: int = 4) -> float:
    """Send sleep durations round-robin to plain pykka actors that sleep; timed."""
    refs = _start_actors(_SleepActor, actors)
    try:
        return _round_robin(refs, list(durations))
    finally:
        _stop_actors(refs)


# -- gevent I/O ---------------------------------------------------------------------------------


def gevent_pool_io(n: int, size: int, seconds: float) -> float:
    """Run n greenlets that each gevent.sleep(seconds) in a gevent Pool(size), join; timed."""
    import gevent  # noqa: PLC0415 -- optional dependency, imported lazily
    import gevent.pool  # noqa: PLC0415

    pool = gevent.pool.Pool(size)
    try:
        start = time.perf_counter()
        for _ in range(n):
            pool.spawn(gevent.sleep, seconds)
        pool.join()
        return time.perf_counter() - start
    finally:
        pool.kill()


# -- quick check --------------------------------------------------------------------------------


def _main(argv: list[str]) -> None:
    """Run every anchor with small sizes and print one line each."""
    n = 20_000
    elapsed = tpe_noop(n)
    print(f"tpe_noop             n={n} workers=4   {elapsed:7.3f} s  {n / elapsed:9.0f} tasks/s")
    elapsed = pykka_pool_noop(n)
    print(f"pykka_pool_noop      n={n} actors=4    {elapsed:7.3f} s  {n / elapsed:9.0f} msgs/s")
    elapsed = dramatiq_stub_noop(n)
    print(f"dramatiq_stub_noop   n={n} threads=4   {elapsed:7.3f} s  {n / elapsed:9.0f} msgs/s")
    if argv:
        elapsed = dramatiq_redis_noop(n, argv[0])
        print(f"dramatiq_redis_noop  n={n} threads=4   {elapsed:7.3f} s  {n / elapsed:9.0f} msgs/s")
    else:
        print("dramatiq_redis_noop  skipped (pass a redis:// URL to run it)")

    durations = skewed_tasks()
    bound = lower_bound(durations, 4)
    elapsed = tpe_skewed(durations)
    print(
        f"tpe_skewed           {len(durations)} tasks, bound {bound:.3f} s  "
        f"{elapsed:7.3f} s  {elapsed / bound:5.2f}x bound"
    )
    elapsed = pykka_pool_skewed(durations)
    print(
        f"pykka_pool_skewed    {len(durations)} tasks, bound {bound:.3f} s  "
        f"{elapsed:7.3f} s  {elapsed / bound:5.2f}x bound"
    )

    g_n, g_size, g_sec = 2000, 1000, 0.05
    ideal = math.ceil(g_n / g_size) * g_sec
    elapsed = gevent_pool_io(g_n, g_size, g_sec)
    print(
        f"gevent_pool_io       n={g_n} size={g_size} sleep={g_sec} s, ideal {ideal:.3f} s  "
        f"{elapsed:7.3f} s  {elapsed / ideal:5.2f}x ideal"
    )


if __name__ == "__main__":
    _main(sys.argv[1:])
