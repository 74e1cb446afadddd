# SPDX-License-Identifier: MIT
"""An asyncio HTTP server (aiohttp) that submits actions and awaits their results
without blocking its event loop. Needs the asyncio extra: ``pip install -e '.[asyncio]'``.

Run it (on 127.0.0.1; ``--port 0`` picks a free port). Once it accepts connections it
prints ``listening on http://127.0.0.1:PORT``:

    python examples/asyncio_server.py --port 8080 --sites 4 &
    curl -s --retry-connrefused --retry 30 --retry-delay 1 localhost:8080/health
    curl -s -X POST 'localhost:8080/actions?wait=1' -H 'content-type: application/json' \\
         -d '{"name": "Sleep", "content": 0.5}'
    curl -s localhost:8080/stats

Routes:

- ``POST /actions``: the body is a JSON Action. With ``?wait=1`` the handler awaits the
  result (up to ``?timeout=SECONDS``, default 30): 200 ``{"id", "result"}``, 422 if it
  was dead-lettered (with its error ``kind``), 504 if the wait ran out (the action runs
  on: cancelling an await never cancels the action). Otherwise 202 ``{"id"}`` at once.
  400 bad JSON or an unknown action name, 503 shutting down.
- ``GET /stats``: ``Sequence.stats()`` as JSON.  ``GET /health``: 200 ``{"ok": true}``.

The demo plan: ``Echo`` returns its content, ``Add`` adds ``{"a": int, "b": int}``,
``Sleep`` is ``async def`` and awaits ``asyncio.sleep(content)`` on the Sequence's own
loop (thousands overlap on a few Sites), ``Block`` calls the blocking ``time.sleep``
on a Site thread (as many overlap as there are Sites). Awaiting either never blocks
the server's loop: ``/health`` answers while they run. SIGINT or SIGTERM stops the
server and drains the Sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from echo_actors import Action, EchoError, Plan, Sequence, Signature

SEQUENCE: web.AppKey[Sequence] = web.AppKey("sequence", Sequence)


class Pair(msgspec.Struct):
    a: int
    b: int


async def sleep(seconds: float) -> float:
    """Await asyncio.sleep: the Site that started it is free meanwhile."""
    await asyncio.sleep(seconds)
    return seconds


def block(seconds: float) -> float:
    """Block a Site thread (a stand-in for a library that is not async)."""
    time.sleep(seconds)
    return seconds


def make_plan(**extra: Callable[..., Any]) -> Plan:
    """The demo plan, plus ``extra`` functions by action name (tests add their own)."""
    plan = (
        Plan()
        .with_signature(Signature("Echo")).with_function("Echo", lambda content: content)
        .with_signature(Signature("Add", content_type=Pair))
        .with_function("Add", lambda pair: pair.a + pair.b)
        .with_signature(Signature("Sleep", content_type=float)).with_function("Sleep", sleep)
        .with_signature(Signature("Block", content_type=float)).with_function("Block", block)
    )
    for name, function in extra.items():
        plan.with_signature(Signature(name)).with_function(name, function)
    return plan.build()


def _error(status: int, message: str, **fields: Any) -> web.Response:
    return web.json_response({"error": message, **fields}, status=status)


async def submit(request: web.Request) -> web.Response:
    sequence = request.app[SEQUENCE]
    try:
        action = msgspec.json.decode(await request.read(), type=Action)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(400, f"not an Action: {exc}")
    if action.name not in sequence.plan:
        return _error(400, f"no action named {action.name!r}")
    try:
        future = sequence.submit(action)
    except RuntimeError as exc:
        return _error(503, str(exc))
    except EchoError as exc:
        return _error(400, str(exc), kind=exc.kind)
    if request.query.get("wait") != "1":
        return web.json_response({"id": action.id}, status=202)
    timeout = float(request.query.get("timeout", "30"))
    try:
        result = await asyncio.wait_for(future, timeout)  # the loop serves others meanwhile
    except TimeoutError:
        return _error(504, f"no result within {timeout} s (the action runs on)", id=action.id)
    except EchoError as exc:
        return _error(422, str(exc), kind=exc.kind, id=action.id)
    return web.json_response({"id": action.id, "result": msgspec.to_builtins(result)})


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    figures = await asyncio.to_thread(request.app[SEQUENCE].stats)  # it asks an actor
    return web.json_response(msgspec.to_builtins(figures))


def make_app(sequence: Sequence) -> web.Application:
    """The web application around a started ``sequence`` (the caller stops both)."""
    app = web.Application()
    app[SEQUENCE] = sequence
    app.add_routes([
        web.post("/actions", submit),
        web.get("/health", health),
        web.get("/stats", stats),
    ])
    return app


async def serve(port: int, sites: int) -> None:
    """Serve on 127.0.0.1:``port`` until SIGINT or SIGTERM, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Sequence(make_plan(), sites=sites) as sequence:
        runner = web.AppRunner(make_app(sequence))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            bound = runner.addresses[0][1]
            print(f"listening on http://127.0.0.1:{bound}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="an asyncio HTTP server on echo_actors")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--sites", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.sites))


if __name__ == "__main__":
    main()
