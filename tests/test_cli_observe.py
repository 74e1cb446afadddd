# SPDX-License-Identifier: MIT
"""The command line's watching options: run/worker --metrics-port, run --dashboard, dashboard."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from redis_server import redis_server

from echo_actors import Action, Fate
from echo_actors.production.redis import RedisProduction

__all__ = ["redis_server"]  # the session fixture, used by name

LIMIT = 30.0

PLAN = """
from echo_actors import Plan, Signature

def double(n):
    return n * 2

def fail(n):
    raise ValueError("refused <politely>")

plan = (Plan().with_signature(Signature("Double")).with_function("Double", double)
        .with_signature(Signature("Fail")).with_function("Fail", fail).build())
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "observe_plan.py"
    path.write_text(textwrap.dedent(PLAN))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(extra)
    return env


def _start(*args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "echo_actors", *args], text=True, env=_env(**extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _line(stream: IO[str] | None, pattern: str) -> re.Match[str]:
    """Read ``stream`` up to the first line matching ``pattern`` (the process writes it soon)."""
    assert stream is not None
    seen = []
    for line in stream:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r}; the process wrote {seen}")


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read().decode()
    finally:
        connection.close()


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll state held by another process until true, bounded."""
    pause = threading.Event()
    deadline = time.monotonic() + LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {LIMIT} s waiting for {what}")
        pause.wait(0.05)


def _stop(process: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    process.send_signal(signum)
    try:
        return process.communicate(timeout=LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_with_the_dashboard_serves_the_run_and_stays_until_ctrl_c(
    plan_file: Path, tmp_path: Path
) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_text("".join(json.dumps({"name": "Double", "content": i}) + "\n"
                               for i in range(50)) + json.dumps({"name": "Fail"}) + "\n")
    process = _start("run", f"{plan_file}:plan", str(actions), "--dashboard", "--json",
                     "--no-progress", "--metrics-port", "0")
    try:
        metrics_port = int(_line(process.stderr, r"metrics at http://127\.0\.0\.1:(\d+)/")[1])
        port = int(_line(process.stderr, r"dashboard at http://127\.0\.0\.1:(\d+)/")[1])
        _line(process.stderr, "the dashboard stays open")
        status, body = _get(port, "/snapshot")
        assert status == 200
        figures = json.loads(body)
        assert figures["totals"]["completed"] == 50
        assert figures["totals"]["dead_lettered"] == 1
        assert [d["name"] for d in figures["dead"]] == ["Fail"]
        status, text = _get(metrics_port, "/metrics")
        assert status == 200
        assert 'echo_actions_completed_total{name="Double",sequence="sequence"} 50.0' in text
    finally:
        out, err = _stop(process, signal.SIGINT)
    assert process.returncode == 1, err  # a dead letter: exit 1, as without --dashboard
    assert json.loads(out)["completed"] == 50
    assert "Traceback" not in err


def test_worker_metrics_and_the_stream_dashboard(redis_server: str, plan_file: Path) -> None:
    stream = f"t-{uuid.uuid4().hex[:10]}"
    worker = _start("worker", f"{plan_file}:plan", "--stream", stream, "--metrics-port", "0",
                    "--sites", "2", ECHO_REDIS_URL=redis_server,
                    ECHO_MAX_ATTEMPTS="1")
    board = _start("dashboard", "--stream", stream, "--port", "0",
                   ECHO_REDIS_URL=redis_server)
    try:
        metrics_port = int(_line(worker.stderr, r"metrics at http://127\.0\.0\.1:(\d+)/")[1])
        _line(worker.stderr, "reading")
        port = int(_line(board.stderr, r"dashboard: http://127\.0\.0\.1:(\d+)/")[1])
        with RedisProduction(redis_server, stream=stream, fate=Fate()) as submitter:
            submitter.assign_many([Action("Double", i) for i in range(20)] + [Action("Fail", 0)])

        def scraped() -> str:
            return _get(metrics_port, "/metrics")[1]

        _wait_until(lambda: 'echo_actions_completed_total{name="Double",sequence="sequence"} '
                            '20.0' in scraped(), "20 completions in the worker's metrics")
        text = scraped()
        assert 'echo_actions_dead_lettered_total{name="Fail",sequence="sequence"} 1.0' in text
        assert 'echo_redis_pending{sequence="sequence"}' in text
        assert 'echo_site_depth{sequence="sequence",site="1"}' in text

        def snapshot() -> dict[str, Any]:
            figures: dict[str, Any] = json.loads(_get(port, "/snapshot")[1])
            return figures

        _wait_until(lambda: len(snapshot()["dead"]) == 1, "the dead letter on the page")
        figures = snapshot()
        assert figures["kind"] == "redis"
        workers = figures["workers"]
        assert isinstance(workers, list) and len(workers) == 1
        assert workers[0]["idle_ms"] >= 0
        dead = figures["dead"]
        assert isinstance(dead, list) and dead[0]["name"] == "Fail"
        assert "refused <politely>" in dead[0]["message"]
    finally:
        _, board_err = _stop(board, signal.SIGINT)
        _, worker_err = _stop(worker, signal.SIGTERM)
    assert board.returncode == 0, board_err
    assert worker.returncode == 0, worker_err


def test_a_worker_on_several_streams_shows_each_one_in_its_metrics(
    redis_server: str, plan_file: Path
) -> None:
    """``--stream a,b --metrics-port``: one family per metric, a sample per stream's Sequence."""
    first, second = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    worker = _start("worker", f"{plan_file}:plan", "--stream", f"{first},{second}",
                    "--metrics-port", "0", "--sites", "1", ECHO_REDIS_URL=redis_server)
    try:
        port = int(_line(worker.stderr, r"metrics at http://127\.0\.0\.1:(\d+)/")[1])
        _line(worker.stderr, f"reading {second}")
        for stream, count in ((first, 3), (second, 5)):
            with RedisProduction(redis_server, stream=stream, fate=Fate()) as submitter:
                for future in submitter.submit_many([Action("Double", i) for i in range(count)]):
                    future.get(timeout=LIMIT)

        def scraped() -> str:
            return _get(port, "/metrics")[1]

        done = (f'echo_actions_completed_total{{name="Double",sequence="{first}"}} 3.0',
                f'echo_actions_completed_total{{name="Double",sequence="{second}"}} 5.0')
        _wait_until(lambda: all(line in scraped() for line in done), "both streams' counts")
        helps = [line for line in scraped().splitlines() if line.startswith("# HELP")]
        assert len(helps) == len(set(helps))
    finally:
        _, worker_err = _stop(worker, signal.SIGTERM)
    assert worker.returncode == 0, worker_err


def test_dashboard_off_loopback_without_the_option_is_refused(redis_server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "echo_actors", "dashboard", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=LIMIT, env=_env(ECHO_REDIS_URL=redis_server),
        check=False,
    )
    assert done.returncode == 2
    assert "allow_remote" in done.stderr and "Traceback" not in done.stderr
