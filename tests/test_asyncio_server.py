# SPDX-License-Identifier: MIT
"""examples/asyncio_server.py: a real aiohttp server on 127.0.0.1, many concurrent clients.

The slow actions wait on gates the test opens only once ``/health`` has answered:
had awaiting blocked the server's loop, that answer could never come (ordering,
not wall time). One test runs the example as a script, as its docstring says.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from echo_actors import Sequence

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "asyncio_server.py"
LIMIT = 10.0
"""Seconds any one wait may take before it counts as a failure."""


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncio_server_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Struct's annotations through it
    spec.loader.exec_module(module)
    return module


example = _load_example()


def test_health_answers_while_many_slow_actions_are_awaited() -> None:
    n_async, n_sync = 40, 8
    sync_gate = threading.Event()
    async_gate: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    started = threading.Semaphore(0)

    async def gate_async(content: Any) -> Any:
        if not async_gate:  # the Sequence's loop, where every gate_async runs
            async_gate.append((asyncio.get_running_loop(), asyncio.Event()))
        started.release()
        await async_gate[0][1].wait()
        return content

    def gate_sync(content: Any) -> Any:
        started.release()
        assert sync_gate.wait(LIMIT)
        return content

    plan = example.make_plan(GateAsync=gate_async, GateSync=gate_sync)
    sites = 4
    order: list[str] = []

    async def main() -> list[dict[str, Any]]:
        async with Sequence(plan, sites=sites) as sequence:
            runner = web.AppRunner(example.make_app(sequence))
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                base = f"http://127.0.0.1:{port}"
                timeout = aiohttp.ClientTimeout(total=LIMIT)
                async with aiohttp.ClientSession(timeout=timeout) as client:

                    async def slow(name: str, i: int) -> dict[str, Any]:
                        url = f"{base}/actions?wait=1&timeout={LIMIT}"
                        async with client.post(url, json={"name": name, "content": i}) as r:
                            assert r.status == 200, await r.text()
                            body: dict[str, Any] = await r.json()
                        order.append(f"slow-{name}-{i}")
                        return body

                    tasks = [asyncio.create_task(slow("GateAsync", i)) for i in range(n_async)]
                    tasks += [asyncio.create_task(slow("GateSync", i)) for i in range(n_sync)]
                    # Every async action and one per Site has started: all are in flight.
                    for _ in range(n_async + sites):
                        assert await asyncio.to_thread(started.acquire, timeout=LIMIT)
                    async with client.get(f"{base}/health") as r:
                        assert r.status == 200 and await r.json() == {"ok": True}
                    order.append("health")
                    loop, event = async_gate[0]
                    loop.call_soon_threadsafe(event.set)
                    sync_gate.set()
                    return list(await asyncio.gather(*tasks))
            finally:
                await runner.cleanup()

    bodies = asyncio.run(main())
    assert [b["result"] for b in bodies] == [*range(n_async), *range(n_sync)]
    assert order[0] == "health" and len(order) == 1 + n_async + n_sync


def test_errors_and_timeouts_are_json() -> None:
    async def never(_: Any) -> None:
        await asyncio.Event().wait()

    plan = example.make_plan(Never=never)

    async def main() -> list[tuple[int, dict[str, Any]]]:
        async with Sequence(plan, sites=2) as sequence:
            runner = web.AppRunner(example.make_app(sequence))
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                base = f"http://127.0.0.1:{runner.addresses[0][1]}"
                replies = []
                async with aiohttp.ClientSession() as client:
                    for body, query in [
                        ({"name": "Add", "content": {"a": 2, "b": 3}}, "?wait=1"),
                        ({"name": "Add", "content": {"a": "x"}}, "?wait=1"),
                        ({"name": "Nope"}, ""),
                        ({"name": "Echo", "content": 1}, ""),
                        ({"name": "Never"}, "?wait=1&timeout=0.01"),
                    ]:
                        async with client.post(f"{base}/actions{query}", json=body) as r:
                            replies.append((r.status, await r.json()))
                    async with client.get(f"{base}/stats") as r:
                        replies.append((r.status, await r.json()))
                await sequence.shutdown_async(drain=False, timeout=0.01)
                return replies
            finally:
                await runner.cleanup()

    replies = asyncio.run(main())
    assert replies[0][0] == 200 and replies[0][1]["result"] == 5
    assert replies[1][0] == 422 and replies[1][1]["kind"] == "validation"
    assert replies[2][0] == 400 and "Nope" in replies[2][1]["error"]
    assert replies[3][0] == 202 and set(replies[3][1]) == {"id"}
    assert replies[4][0] == 504 and "runs on" in replies[4][1]["error"]
    assert replies[5][0] == 200 and replies[5][1]["accepted"] == 4


@pytest.mark.timeout(60)
def test_runs_as_a_script() -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--sites", "2"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base = line.split()[-1]

        def call(path: str, body: Any = None) -> Any:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(base + path, data=data,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=LIMIT) as reply:
                return json.loads(reply.read())

        assert call("/health") == {"ok": True}
        assert call("/actions?wait=1", {"name": "Sleep", "content": 0.01})["result"] == 0.01
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=LIMIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
