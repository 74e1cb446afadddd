# SPDX-License-Identifier: MIT
"""A gevent HTTP front that hands actions to a Redis worker fleet and returns their results.

The workers run this module's ``plan``; the server only submits and waits, each request
in its own greenlet (``RedisFuture.get`` blocks that greenlet alone):

    export ECHO_REDIS_URL=redis://127.0.0.1:6379/0
    echo-actors worker examples/redis_fleet.py:plan --sites 4 &
    python examples/redis_fleet.py --port 8080 &
    curl -s -X POST 'localhost:8080/actions' -H 'content-type: application/json' \\
         -d '{"name": "Add", "content": {"a": 2, "b": 3}}'

``POST /actions`` (a JSON Action) answers 200 ``{"id", "result"}``, 422
``{"id", "error", "kind", "attempts"}`` when the action failed for good, 504 when no
result came within ``--wait-timeout`` seconds, 400 for a body that is not an Action.
``POST /actions?chain=1`` answers with the result of the chain's last action.
``GET /health``: 200 once the server listens. SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey  # before redis and sockets are imported

    monkey.patch_all()

import argparse
import os
import signal
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import msgspec

from echo_actors import Action, EchoError, Plan, Signature
from echo_actors.production.redis import RedisProduction

__all__ = ["add", "main", "make_app", "plan"]


class _Pair(msgspec.Struct, forbid_unknown_fields=True):
    a: int
    b: int


def add(content: _Pair) -> int:
    """Add the two numbers."""
    return content.a + content.b


plan = (Plan().with_signature(Signature("Add", content_type=_Pair)).with_function("Add", add)
        .with_signature(Signature("Echo")).with_function("Echo", lambda content: content))
"""The workers' plan: ``echo-actors worker examples/redis_fleet.py:plan``."""


def make_app(production: RedisProduction, wait_timeout: float) -> Any:
    """The WSGI app: submit each POSTed action to ``production`` and wait for its result."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        def reply(status: str, body: dict[str, Any]) -> list[bytes]:
            start_response(status, [("Content-Type", "application/json")])
            return [msgspec.json.encode(body) + b"\n"]

        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/health":
            return reply("200 OK", {"status": "ok"})
        if path != "/actions" or method != "POST":
            return reply("404 Not Found", {"error": "POST /actions or GET /health"})
        size = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            action = Action.decode(environ["wsgi.input"].read(size), "json",
                                   max_bytes=production.max_action_bytes)
            future = production.submit(action)
        except EchoError as error:
            return reply("400 Bad Request", {"error": str(error), "kind": error.kind})
        if "chain=1" in environ.get("QUERY_STRING", ""):
            future = future.chain()
        try:
            result = future.get(timeout=wait_timeout)
        except TimeoutError:
            return reply("504 Gateway Timeout", {"id": action.id, "error": "no result yet"})
        except EchoError as error:
            return reply("422 Unprocessable Entity", {
                "id": action.id, "error": str(error), "kind": error.kind,
                "attempts": getattr(error, "attempts", 0),
            })
        return reply("200 OK", {"id": action.id, "result": result})

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    from gevent.pywsgi import WSGIServer  # noqa: PLC0415 - after monkey-patching

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis", default=os.environ.get("ECHO_REDIS_URL"))
    parser.add_argument("--stream", default="echo")
    parser.add_argument("--wait-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.redis:
        parser.error("no Redis server: pass --redis URL or set ECHO_REDIS_URL")
    production = RedisProduction(args.redis, stream=args.stream)
    server = WSGIServer(("127.0.0.1", args.port), make_app(production, args.wait_timeout),
                        log=None)
    server.start()
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    import gevent.event  # noqa: PLC0415

    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    server.stop()
    production.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
