# SPDX-License-Identifier: MIT
"""Shared fixtures: the runtime parameter, Sequences and Lifes that are always stopped,
and the Redis ones (a client, a stream and productions of the test's own, worker processes).

Nothing here configures logging (or anything else) globally: a test that
asserts on log events uses ``structlog.testing.capture_logs()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
import redis
import structlog
from redis_server import redis_server

from echo_actors import Fate, Life, Plan, Sequence, Site
from echo_actors.dispatcher import Dispatcher
from echo_actors.production.redis import RedisProduction
from echo_actors.runtime import Runtime, get_runtime

__all__ = ["redis_server"]  # the session's Redis server, a fixture used by name

LIMIT = 10.0
"""Seconds any wait in these tests may take before it counts as a failure."""


@pytest.fixture(params=["thread", "gevent"], ids=["thread", "gevent"])
def runtime(request: pytest.FixtureRequest) -> str:
    """The name of the runtime a behavioural test runs on."""
    name: str = request.param
    return name


@pytest.fixture(
    params=["thread", "gevent", "simulation"], ids=["thread", "gevent", "simulation"]
)
def every_runtime(request: pytest.FixtureRequest) -> Runtime:
    """A runtime object, one per runtime; pass it to Sequences, and make events with it.

    A simulation runtime is a fresh ``SimulationRuntime`` (seed 0): the events,
    futures and Sequences of one test must share it, so tests take the object,
    not its name. Waiting on its events or futures drives its virtual clock.
    """
    return get_runtime(request.param)


@pytest.fixture(autouse=True)
def _logging_left_alone() -> Iterator[None]:
    """Check (configuring nothing) that a test leaves structlog's global setup as it found it."""
    before = structlog.get_config()
    before["processors"] = list(before["processors"])
    yield
    after = structlog.get_config()
    after["processors"] = list(after["processors"])
    assert after == before, "a test (or the code under test) configured structlog globally"


@pytest.fixture
def make_life() -> Iterator[Callable[..., Life]]:
    """Build Lifes that are stopped after the test (a Sequence never stops a Life it was given)."""
    lives: list[Life] = []

    def make(fate: Fate | None = None, *, runtime: str | None = None) -> Life:
        life = Life(fate if fate is not None else Fate(), runtime=runtime)
        lives.append(life)
        return life

    yield make
    for life in reversed(lives):
        life.stop()


@pytest.fixture
def make_sequence(make_life: Callable[..., Life]) -> Iterator[Callable[..., Sequence]]:
    """Build and start Sequences that are always shut down (drain=False) after the test.

    Unless the test passes a ``fate`` or a ``life``, the Sequence gets the
    default ``Fate()`` (not whatever ``ECHO_*`` variables the environment holds).
    Afterwards, every actor the test started must be gone.
    """
    existing = set(pykka.ActorRegistry.get_all())
    sequences: list[Sequence] = []

    def make(plan: Plan, *args: Any, start: bool = True, **kwargs: Any) -> Sequence:
        life_given = kwargs.get("life") is not None or (len(args) >= 2 and args[1] is not None)
        if "fate" not in kwargs and len(args) < 5 and not life_given:
            kwargs["fate"] = Fate()
        sequence = Sequence(plan, *args, **kwargs)
        sequences.append(sequence)
        return sequence.start() if start else sequence

    yield make
    for sequence in reversed(sequences):
        sequence.shutdown(drain=False, timeout=LIMIT)
    for sequence in sequences:
        assert sequence.supervisor is None or not sequence.supervisor.is_alive()
    left = [
        ref
        for ref in pykka.ActorRegistry.get_all()
        if ref not in existing and issubclass(ref.actor_class, (Site, Dispatcher))
    ]
    assert not left, f"actors still running after shutdown: {left}"
    # make_life's teardown runs after this one and stops the Lifes it made.


@pytest.fixture
def spawn() -> Callable[..., pykka.Future[Any]]:
    """Run ``fn(*args)`` in the background on a runtime; returns a future of its outcome.

    On ``"thread"`` it is a daemon thread, on ``"gevent"`` a greenlet of the
    calling thread's hub (it runs whenever the test waits on something).
    """

    def start(runtime: str, fn: Callable[..., Any], *args: Any) -> pykka.Future[Any]:
        rt = get_runtime(runtime)
        future = rt.future()

        def run() -> None:
            try:
                value = fn(*args)
            except BaseException:  # handed to whoever waits on the future
                future.set_exception()
            else:
                future.set(value)

        rt.spawn(run)
        return future

    return start


# Redis: the session's server (``redis_server``), and what each test has of its own


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    """A client of the session's server, closed after the test."""
    connection = redis.Redis.from_url(redis_server)
    yield connection
    connection.close()


@pytest.fixture
def stream() -> str:
    """A stream name of this test's own, so tests share the server without sharing keys."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def productions(redis_server: str, stream: str) -> Iterator[Callable[..., RedisProduction]]:
    """Make RedisProductions on the test's stream; every one is closed after the test."""
    made: list[RedisProduction] = []

    def make(**options: Any) -> RedisProduction:
        options.setdefault("fate", Fate())
        production = RedisProduction(redis_server, stream=stream, **options)
        made.append(production)
        return production

    yield make
    for production in reversed(made):
        production.close()


@pytest.fixture
def worker_env(redis_server: str, stream: str) -> dict[str, str]:
    """Environment of worker processes: the server's URL, the test's key, no other ECHO_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(ECHO_REDIS_URL=redis_server, TEST_KEY=stream)
    return env


@pytest.fixture
def worker_processes(
    worker_env: dict[str, str], stream: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``start(plan_source, name, *options, env=None)``: an ``echo-actors worker`` process
    named ``name`` on the test's stream, running the ``plan`` that ``plan_source``
    defines, its output in ``tmp_path / "<name>.log"``. Every one is killed after the test.
    """
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(plan_source: str, name: str, *options: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        plan_file = tmp_path / f"{name}_plan.py"
        plan_file.write_text(plan_source)
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "echo_actors", "worker", f"{plan_file}:plan",
             "--stream", stream, "--consumer", name, *options],
            env={**worker_env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()
