# SPDX-License-Identifier: MIT
"""examples/gevent_server.py: in-process (pywsgi in a greenlet, greenlet clients) and as a script.

The test process is not monkey-patched, so the clients speak HTTP/1.1 over
``gevent.socket`` themselves (a few lines below): they yield to the hub, where
the server, the Sequence's actors and the other clients run.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import gevent
import gevent.event
import gevent.socket
import msgspec
import pytest
from gevent.pywsgi import WSGIServer

from echo_actors import Action, Fate, Sequence

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "gevent_server.py"
LIMIT = 10.0
"""Seconds any one wait may take before it counts as a failure."""
MAX_BYTES = 4096
"""The in-process server's ``Fate.max_action_bytes``."""
JSON = {"Content-Type": "application/json"}


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gevent_server_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Struct's annotations through it
    spec.loader.exec_module(module)
    return module


example = _load_example()


# A tiny HTTP/1.1 client over gevent sockets (one request per connection)


class Reply(NamedTuple):
    """A response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def _recv_more(sock: Any, data: bytes) -> bytes:
    chunk: bytes = sock.recv(65536)
    if not chunk:
        raise ConnectionError(f"connection closed mid-response after {data!r}")
    return data + chunk


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Reply:
    """Send one request to 127.0.0.1:``port`` and read the whole response (yields to the hub)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
    try:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data = _recv_more(sock, data)
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        length = int(fields["content-length"])
        while len(rest) < length:
            rest = _recv_more(sock, rest)
        return Reply(int(status_line.split()[1]), fields, rest[:length])
    finally:
        sock.close()


def post_action(port: int, payload: Any, query: str = "", **headers: str) -> Reply:
    """POST a JSON payload (bytes are sent as they are) to /actions."""
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return request(port, "POST", f"/actions{query}", body, {**JSON, **headers})


# The in-process server


class Served(NamedTuple):
    """A running in-process server: its port and the Sequence behind it."""

    port: int
    sequence: Sequence


@pytest.fixture
def served(make_sequence: Callable[..., Sequence]) -> Iterator[Served]:
    """make_app on a gevent Sequence, served by pywsgi on a free loopback port in a greenlet."""
    plan = example.make_plan()
    sequence = make_sequence(
        plan, sites=4, fate=Fate(max_action_bytes=MAX_BYTES), runtime="gevent"
    )
    server = WSGIServer(
        ("127.0.0.1", 0), example.make_app(sequence, plan, wait_timeout=LIMIT),
        backlog=1024, log=None,
    )
    server.start()
    try:
        yield Served(server.server_port, sequence)
    finally:
        server.stop(timeout=LIMIT)
    # make_sequence shuts the Sequence down afterwards and checks no actor is left.


def test_500_concurrent_adds(served: Served) -> None:
    """500 concurrent waiting POSTs of Add from greenlets all get 200 and the right sum."""
    count = 500

    def add(i: int) -> tuple[int, int, Reply]:
        a, b = i, 1_000_003 * i + 7
        content = {"a": a, "b": b}
        if i % 2:  # half say so in the query, half in the header
            return a, b, post_action(served.port, {"name": "Add", "content": content}, "?wait=1")
        action = Action("Add", content)
        return a, b, post_action(served.port, action.encode(), **{"X-Echo-Wait": "1"})

    clients = [gevent.spawn(add, i) for i in range(count)]
    done = gevent.joinall(clients, timeout=45, raise_error=True)
    assert len(done) == count, f"only {len(done)} of {count} clients finished"
    ids = set()
    for client in clients:
        a, b, reply = client.value
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"] == "application/json"
        answer = reply.json()
        assert answer["result"] == a + b, (a, b, answer)
        ids.add(answer["id"])
    assert len(ids) == count

    stats = request(served.port, "GET", "/stats")
    assert stats.status == 200
    figures = stats.json()
    assert figures["completed"] == count
    assert figures["dead_lettered"] == 0
    assert len(figures["sites"]) == 4


BAD_REQUESTS = [
    # (what, method, path, body, headers, status, words the error must contain)
    ("malformed JSON", "POST", "/actions", b'{"name": "Add", ', JSON, 400,
     ["not a valid Action", "truncated"]),
    ("a JSON list", "POST", "/actions", b"[1, 2]", JSON, 400, ["object", "array"]),
    ("an int name", "POST", "/actions", b'{"name": 5}', JSON, 400, ["str", "$.name"]),
    ("an empty name", "POST", "/actions", b'{"name": ""}', JSON, 400, ["non-empty"]),
    ("an empty body", "POST", "/actions", b"", JSON, 400, ["empty body"]),
    ("oversized", "POST", "/actions",
     msgspec.json.encode({"name": "Echo", "content": "x" * MAX_BYTES}), JSON, 413,
     ["limit", str(MAX_BYTES)]),
    ("no content type", "POST", "/actions", b'{"name": "Echo"}', {}, 415, ["Content-Type"]),
    ("text content type", "POST", "/actions", b'{"name": "Echo"}',
     {"Content-Type": "text/plain"}, 415, ["text/plain", "not JSON"]),
    ("an unknown action", "POST", "/actions?wait=1", b'{"name": "Nope"}', JSON, 422,
     ["unknown action", "Nope", "Add"]),
    ("an unknown next action", "POST", "/actions",
     b'{"name": "Echo", "next": {"name": "Later"}}', JSON, 422, ["unknown action", "Later"]),
    ("bad Add content, waiting", "POST", "/actions?wait=1",
     b'{"name": "Add", "content": {"a": "x", "b": 1}}', JSON, 422, ["int", "$.a"]),
    ("a bad wait flag", "POST", "/actions?wait=maybe", b'{"name": "Echo"}', JSON, 400,
     ["wait", "maybe"]),
    ("a bad wait timeout", "POST", "/actions?wait=1&timeout=soon", b'{"name": "Echo"}', JSON,
     400, ["timeout", "soon"]),
    ("GET /actions", "GET", "/actions", b"", {}, 405, ["GET", "POST"]),
    ("DELETE /stats", "DELETE", "/stats", b"", {}, 405, ["DELETE", "GET"]),
    ("an unknown path", "GET", "/nowhere", b"", {}, 404, ["/nowhere"]),
]


def test_bad_requests_are_refused_and_the_server_keeps_serving(served: Served) -> None:
    """Each bad request gets its 4xx and a JSON error naming the problem; then a good one works."""
    for what, method, path, body, headers, status, words in BAD_REQUESTS:
        reply = request(served.port, method, path, body, headers)
        assert reply.status == status, (what, reply)
        assert reply.headers["content-type"] == "application/json", what
        error = reply.json()["error"]
        for word in words:
            assert word in error, (what, word, error)
        if status == 405:
            assert reply.headers["allow"] == {"/actions": "POST", "/stats": "GET"}[path], what

    # The bad Add was queued, dead-lettered, and reported with its kind and id.
    bad_add = post_action(served.port, {"name": "Add", "content": {"a": "x", "b": 1}}, "?wait=1")
    assert bad_add.status == 422
    assert bad_add.json()["kind"] == "validation"
    letters = served.sequence.dead_letters()
    assert bad_add.json()["id"] in {letter.action.id for letter in letters}

    good = post_action(served.port, {"name": "Add", "content": {"a": 40, "b": 2}}, "?wait=1")
    assert good.status == 200, good
    assert good.json()["result"] == 42
    assert request(served.port, "GET", "/health").status == 200
    figures = request(served.port, "GET", "/stats").json()
    assert figures["dead_lettered"] == 2  # the two bad Adds, nothing else
    assert figures["completed"] == 1


@pytest.fixture
def held_sleeps(monkeypatch: pytest.MonkeyPatch) -> gevent.event.Event:
    """An event the example's Sleep waits on instead of the clock (request before ``served``)."""
    release = gevent.event.Event()

    def held(seconds: float) -> float:
        assert release.wait(LIMIT), "Sleep never released"
        return seconds

    monkeypatch.setattr(example, "sleep", held)  # make_plan() picks it up
    return release


def test_accepted_without_wait_and_wait_timeout(
    held_sleeps: gevent.event.Event, served: Served
) -> None:
    """Without wait: 202 and the action still runs; a wait that runs out answers 504 with the id."""
    reply = post_action(served.port, {"name": "Echo", "content": {"hello": [1, 2]}})
    assert reply.status == 202, reply
    assert set(reply.json()) == {"id"}
    assert served.sequence.join(timeout=LIMIT)
    assert served.sequence.stats().completed == 1

    late = post_action(served.port, {"name": "Sleep", "content": 1}, "?wait=1&timeout=0.01")
    assert late.status == 504, late  # its Sleep is held until released below
    assert late.json()["id"]
    assert "no result within" in late.json()["error"]
    assert served.sequence.stats().completed == 1
    held_sleeps.set()
    assert served.sequence.join(timeout=LIMIT)  # it went on and completed
    assert served.sequence.stats().completed == 2

    echoed = post_action(served.port, {"name": "Echo", "content": ["a", 1, None]}, "?wait=true")
    assert echoed.status == 200
    assert echoed.json()["result"] == ["a", 1, None]


def test_importing_the_example_patches_nothing() -> None:
    """Importing the example (as these tests do) leaves the standard library unpatched."""
    check = (
        "import runpy, gevent.monkey; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='imported'); "
        "print(gevent.monkey.is_anything_patched())"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"
    assert callable(example.main)


# The example as a script


def _read_port(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, bytes]:
    """Read the script's stdout until its readiness line (no sleeping: select on the pipe).

    The line is printed once the server listens, so a request sent after it is served.
    Returns the port and the bytes read so far.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    while True:
        match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)\r?\n", seen)
        if match:
            return int(match.group(1)), seen
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no address line within {LIMIT} s; stdout so far: {seen!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"the server exited before listening; stdout: {seen!r}"
        seen += chunk


def _call(port: int, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT)
    try:
        if payload is None:
            connection.request(method, path)
        else:
            connection.request(method, path, msgspec.json.encode(payload), JSON)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_script_serves_until_signalled(tmp_path: Path, signum: signal.Signals) -> None:
    """The script listens on the printed port, answers, and exits 0 on SIGTERM or SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    stderr_path = tmp_path / "stderr.txt"
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-W", "error", str(SCRIPT), "--port", "0", "--sites", "2"],
            stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=env,
        ) as proc,
    ):
        try:
            port, first = _read_port(proc, time.monotonic() + LIMIT)
            assert _call(port, "GET", "/health") == (200, {"status": "ok"})
            status, answer = _call(
                port, "POST", "/actions?wait=1", {"name": "Add", "content": {"a": 2, "b": 3}}
            )
            assert (status, answer["result"]) == (200, 5)
            status, answer = _call(port, "POST", "/actions", {"name": "Echo", "content": "hi"})
            assert status == 202
            assert _call(port, "GET", "/missing")[0] == 404
            status, stats = _call(port, "GET", "/stats")
            assert status == 200
            assert stats["accepted"] == 2

            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=LIMIT)
            assert proc.returncode == 0, stderr_path.read_text()
            assert b"stopped: completed 2, dead-lettered 0, cancelled 0" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    # stdout carries the readiness line and the summary only: logs go to stderr.
    assert (first + out).decode().splitlines() == [
        f"listening on http://127.0.0.1:{port}",
        "stopped: completed 2, dead-lettered 0, cancelled 0",
    ]
    assert "Traceback" not in stderr_path.read_text()
