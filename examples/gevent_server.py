# SPDX-License-Identifier: MIT
"""A greenlet-based HTTP server (gevent's pywsgi, plain WSGI) that executes actions
on a gevent Sequence.

Run it (on 127.0.0.1; ``--port 0`` picks a free port). Once it accepts connections it
prints ``listening on http://127.0.0.1:PORT``; wait for that line (or let curl retry)
before sending requests:

    python examples/gevent_server.py --port 8080 --sites 4 &
    curl -s --retry-connrefused --retry 30 --retry-delay 1 localhost:8080/health
    curl -s -X POST 'localhost:8080/actions?wait=1' -H 'content-type: application/json' \\
         -d '{"name": "Add", "content": {"a": 2, "b": 3}}'
    curl -s localhost:8080/stats

Routes:

- ``POST /actions``: the body is a JSON Action (``Content-Type: application/json``).
  With ``?wait=1`` (or the header ``X-Echo-Wait: 1``) the reply waits for the result
  (up to ``?timeout=SECONDS``, at most ``--wait-timeout``): 200 ``{"id", "result"}``;
  otherwise 202 ``{"id"}`` at once. Refusals are JSON ``{"error": ...}``: 400 bad JSON
  or wrong types, 413 too large (``Fate.max_action_bytes``), 415 not JSON, 422 an
  unknown action name (refused before it is queued) or, when waiting, an action that
  was dead-lettered (with its error ``kind``), 503 shutting down, 504 no result in time.
- ``GET /stats``: ``Sequence.stats()`` as JSON.  ``GET /health``: 200.

The demo plan: ``Echo`` returns its content, ``Add`` adds ``{"a": int, "b": int}``,
``Sleep`` sleeps ``content`` seconds with ``gevent.sleep`` (up to ``--sites`` Sleeps
overlap: each Site is a greenlet running one action at a time). SIGINT or SIGTERM
stops the server and drains the Sequence.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Only as a script: importing this module (tests do) must not patch anything.
    from gevent import monkey

    monkey.patch_all()

# (The imports below follow the monkey-patching above, on purpose.)
import argparse
import logging
import signal
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import gevent
import gevent.event
import msgspec
import pykka
import structlog
from gevent.pywsgi import WSGIServer

from echo_actors import (
    Action,
    CancellationError,
    DecodeError,
    EchoError,
    Fate,
    Plan,
    Sequence,
    Signature,
    Stats,
)

__all__ = ["AddContent", "main", "make_app", "make_plan", "serve"]

WAIT_HEADER = "X-Echo-Wait"
"""The request header that asks ``POST /actions`` to wait for the result, like ``?wait=1``."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


# The demo plan


class AddContent(msgspec.Struct, forbid_unknown_fields=True):
    """What an Add action carries."""

    a: int
    b: int


def echo(content: Any) -> Any:
    """Return the content as it came."""
    return content


def add(content: AddContent) -> int:
    """Add the two numbers."""
    return content.a + content.b


def sleep(seconds: float) -> float:
    """Sleep (yielding to the other greenlets), then return the seconds slept."""
    gevent.sleep(seconds)
    return seconds


def make_plan() -> Plan:
    """The demo plan: Echo, Add and Sleep."""
    return (
        Plan()
        .with_signature(Signature("Echo"))
        .with_function("Echo", echo)
        .with_signature(Signature("Add", content_type=AddContent))
        .with_function("Add", add)
        .with_signature(
            Signature("Sleep", content_type=Annotated[float, msgspec.Meta(ge=0, le=60)])
        )
        .with_function("Sleep", sleep)
        .build()
    )


# The WSGI application


class _Reply(Exception):
    """Raised inside the app to answer at once with ``status`` and a JSON body."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = list(headers)


def _refuse(status: int, message: str, **extra: Any) -> _Reply:
    return _Reply(status, {"error": message, **extra})


def _flag(value: str, what: str) -> bool:
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _refuse(400, f"{what} must be 1/true/yes or 0/false/no, not {value!r}")


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def make_app(sequence: Sequence, plan: Plan, *, wait_timeout: float = 30.0) -> WSGIApplication:
    """The WSGI app serving ``sequence`` (which runs ``plan``) over HTTP.

    ``wait_timeout`` is the longest a ``?wait=1`` request waits for its result
    (a request may ask for less with ``?timeout=SECONDS``). Limits on the body
    come from ``sequence.fate.max_action_bytes``. Call it from the hub's thread
    (the one the Sequence runs on): gevent objects are not thread-safe.
    """
    if wait_timeout <= 0:
        raise ValueError("wait_timeout must be > 0 seconds")
    max_bytes = sequence.fate.max_action_bytes
    known = ", ".join(plan.names())

    def read_body(environ: WSGIEnvironment) -> bytes:
        content_type = environ.get("CONTENT_TYPE", "")
        if not content_type:
            raise _refuse(415, "missing Content-Type: send the Action as application/json")
        if not _is_json(content_type):
            raise _refuse(
                415, f"Content-Type {content_type!r} is not JSON: send application/json"
            )
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > max_bytes:
            raise _Reply(
                413,
                {"error": f"body is {declared} bytes, over the limit of {max_bytes}"},
                # Say the connection ends: the client need not send the rest.
                [("Connection", "close")],
            )
        body: bytes = environ["wsgi.input"].read(max_bytes + 1)
        if len(body) > max_bytes:  # chunked, or no Content-Length
            raise _Reply(
                413,
                {"error": f"body is over the limit of {max_bytes} bytes"},
                [("Connection", "close")],
            )
        if not body:
            raise _refuse(400, "empty body: send a JSON Action such as {\"name\": \"Echo\"}")
        return body

    def wait_for(environ: WSGIEnvironment, query: dict[str, list[str]]) -> float | None:
        """The seconds to wait for the result, or None to answer 202 at once."""
        wait = _flag(query["wait"][-1], "wait") if "wait" in query else False
        header = environ.get("HTTP_" + WAIT_HEADER.upper().replace("-", "_"))
        if header is not None:
            wait = _flag(header, WAIT_HEADER) or wait
        if not wait:
            return None
        if "timeout" not in query:
            return wait_timeout
        raw = query["timeout"][-1]
        try:
            seconds = float(raw)
        except ValueError:
            raise _refuse(400, f"timeout must be a number of seconds, not {raw!r}") from None
        if not 0 < seconds <= wait_timeout:
            raise _refuse(400, f"timeout must be within (0, {wait_timeout}] seconds")
        return seconds

    def post_action(environ: WSGIEnvironment) -> tuple[int, dict[str, Any]]:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        timeout = wait_for(environ, query)
        body = read_body(environ)
        try:
            action = Action.decode(body, max_bytes=max_bytes)
        except DecodeError as exc:
            raise _refuse(400, str(exc)) from None
        for step in action.chain():  # the chain's next actions too: refused up front
            if plan.lookup(step.name) is None:
                raise _refuse(422, f"unknown action {step.name!r}; this server runs: {known}")
        try:
            future = sequence.submit(action)
        except RuntimeError as exc:  # shutting down
            raise _refuse(503, str(exc)) from None
        if timeout is None:
            return 202, {"id": action.id}
        try:
            result = future.get(timeout=timeout)
        except pykka.Timeout:
            raise _refuse(
                504, f"no result within {timeout} s; the action goes on", id=action.id
            ) from None
        except CancellationError as exc:
            raise _refuse(503, str(exc), id=action.id, kind=exc.kind) from None
        except EchoError as exc:  # dead-lettered: it failed for good
            raise _refuse(422, str(exc), id=action.id, kind=exc.kind) from None
        return 200, {"id": action.id, "result": result}

    routes: dict[str, dict[str, Callable[[WSGIEnvironment], tuple[int, Any]]]] = {
        "/actions": {"POST": post_action},
        "/stats": {"GET": lambda _: (200, sequence.stats())},
        "/health": {"GET": lambda _: (200, {"status": "ok"})},
    }

    def respond(
        start_response: StartResponse,
        status: int,
        body: Any,
        headers: Iterable[tuple[str, str]] = (),
    ) -> list[bytes]:
        try:
            data = msgspec.json.encode(body)
        except (TypeError, ValueError, OverflowError) as exc:
            status = 500
            data = msgspec.json.encode({"error": f"the result is not JSON-encodable: {exc}"})
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *headers,
            ],
        )
        return [data]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        methods = routes.get(path)
        if methods is None:
            return respond(
                start_response, 404,
                {"error": f"no such path {path!r}; try POST /actions, GET /stats, GET /health"},
            )
        method = environ.get("REQUEST_METHOD", "GET")
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(methods)
            return respond(
                start_response, 405,
                {"error": f"{method} is not allowed on {path}; use {allowed}"},
                [("Allow", allowed)],
            )
        try:
            status, body = handler(environ)
        except _Reply as reply:
            return respond(start_response, reply.status, reply.body, reply.headers)
        # The server answers every request; what went wrong is in the reply and the log.
        except Exception as exc:  # noqa: BLE001
            structlog.get_logger("gevent_server").exception("request_failed", path=path)
            return respond(start_response, 500, {"error": f"{type(exc).__name__}: {exc}"})
        return respond(start_response, status, body)

    return app


# Running it


def serve(
    port: int = 8080,
    sites: int = 4,
    *,
    host: str = "127.0.0.1",
    stop: gevent.event.Event | None = None,
    on_ready: Callable[[int], object] | None = None,
    fate: Fate | None = None,
    wait_timeout: float = 30.0,
    drain_timeout: float = 30.0,
    access_log: Any = "default",
) -> Stats:
    """Serve the demo plan on ``host:port`` until ``stop`` is set; returns the final stats.

    Without ``stop``, SIGINT and SIGTERM stop it (call from the main thread).
    ``on_ready(port)`` is called once the server listens (``port=0`` picks a free
    one); by default the address is printed. Then the server stops taking
    requests, answers those in flight (up to 5 s) and drains the Sequence (up to
    ``drain_timeout`` s). ``access_log`` is pywsgi's ``log`` (None: silent).
    """
    handlers: list[Any] = []
    if stop is None:
        stop = gevent.event.Event()
        handlers = [gevent.signal_handler(s, stop.set) for s in (signal.SIGINT, signal.SIGTERM)]
    plan = make_plan()
    sequence = Sequence(plan, fate=fate, sites=sites, runtime="gevent").start()
    try:
        server = WSGIServer(
            (host, port), make_app(sequence, plan, wait_timeout=wait_timeout),
            backlog=1024, log=access_log,
        )
        server.start()
        try:
            if on_ready is None:
                print(f"listening on http://{host}:{server.server_port}", flush=True)
            else:
                on_ready(server.server_port)
            stop.wait()
        finally:
            server.stop(timeout=5)
    finally:
        for handler in handlers:
            handler.cancel()
        sequence.shutdown(drain=True, timeout=drain_timeout)
    return sequence.stats()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--sites", type=int, default=4, help="Site actors (default 4)")
    parser.add_argument(
        "--wait-timeout", type=float, default=30.0,
        help="longest a ?wait=1 request waits, in seconds (default 30)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.sites < 1 or args.wait_timeout <= 0:
        parser.error("--port must be 0..65535, --sites >= 1 and --wait-timeout > 0")
    # The application decides where the library's log goes: stderr, beside the
    # access log, so that stdout carries only the address line and the summary.
    # The library logs to the standard library's ``echo_actors.*`` loggers (info and
    # up shown here); structlog's own loggers (this script's) print to stderr too.
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        stats = serve(args.port, args.sites, wait_timeout=args.wait_timeout)
    except OSError as exc:  # the port is taken, say
        print(f"cannot serve on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"stopped: completed {stats.completed}, dead-lettered {stats.dead_lettered}, "
        f"cancelled {stats.cancelled}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
