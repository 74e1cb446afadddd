# SPDX-License-Identifier: MIT
"""OpenTelemetry tracing: one trace from a submitter, through Redis, to a worker and its chain.

The worker is another process with the OpenTelemetry SDK and an in-memory
exporter; it prints its finished spans as JSON. The submitter (this process)
makes its span with a local SDK provider, never installing one globally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis_server import redis_server

from echo_actors import Action, Fate, Plan, Sequence, Signature, tracing
from echo_actors.license import sign, verify
from echo_actors.production.redis import RedisProduction

__all__ = ["redis_server"]  # the session fixture, used by name

LIMIT = 30.0

WORKER = """
import json, sys, threading
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace import SpanProcessor

from echo_actors import Fate, Plan, Signature, Sequence, tracing
from echo_actors.production.redis import RedisProduction

url, stream, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
exporter = InMemorySpanExporter()
enough = threading.Event()

class Count(SpanProcessor):
    def on_end(self, span):
        if len(exporter.get_finished_spans()) >= wanted:
            enough.set()

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
provider.add_span_processor(Count())
trace.set_tracer_provider(provider)

calls = []
def fetch(n):
    calls.append(n)
    if len(calls) == 1:
        raise ValueError("the first try fails")
    return n + 1

plan = (Plan().with_signature(Signature("Fetch")).with_function("Fetch", fetch)
        .with_signature(Signature("Store")).with_function("Store", lambda n: n * 10).build())
production = RedisProduction(url, stream=stream, fate=Fate())
fate = Fate(max_attempts=3, backoff_base=0.001, backoff_cap=0.002)
with Sequence(plan, production=production, fate=fate, steps=[tracing.step]):
    print("READY", flush=True)
    assert enough.wait(30), "the spans never ended"
production.close()
spans = [
    {"name": s.name, "trace": s.context.trace_id, "id": s.context.span_id,
     "parent": s.parent.span_id if s.parent else None, "start": s.start_time,
     "attributes": dict(s.attributes), "status": s.status.status_code.name}
    for s in exporter.get_finished_spans()
]
print(json.dumps(spans), flush=True)
"""


def test_a_chain_across_two_processes_is_one_trace(redis_server: str, tmp_path: Path) -> None:
    stream = f"t-{uuid.uuid4().hex[:10]}"
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "OTEL_"))}
    worker = subprocess.Popen(
        [sys.executable, str(script), redis_server, stream, "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "READY"
        provider = TracerProvider()  # this process's own: never installed globally
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        submitter = RedisProduction(redis_server, stream=stream, fate=Fate())
        try:
            with tracer.start_as_current_span("submit"):
                submitter.assign(tracing.inject(Action("Fetch", 1, next=Action("Store"))))
        finally:
            submitter.close()
        out, err = worker.communicate(timeout=LIMIT)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    (submit,) = exporter.get_finished_spans()
    spans = sorted(json.loads(out.splitlines()[-1]), key=lambda s: s["start"])
    assert [s["name"] for s in spans] == ["echo.run Fetch", "echo.run Fetch", "echo.run Store"]
    first, second, store = spans
    root_trace = submit.context.trace_id
    assert {s["trace"] for s in spans} == {root_trace}  # one trace, two processes
    # Both attempts of Fetch are children of the submitter's span; Store, of the one that
    # completed.
    assert first["parent"] == second["parent"] == submit.context.span_id
    assert store["parent"] == second["id"]
    assert [s["attributes"]["echo.attempt"] for s in spans] == [1, 2, 1]
    assert [s["attributes"]["echo.outcome"] for s in spans] == ["failed", "completed",
                                                                "completed"]
    assert first["status"] == "ERROR"
    assert {s["attributes"]["echo.action.name"] for s in spans} == {"Fetch", "Store"}
    assert all(isinstance(s["attributes"]["echo.site"], int) for s in spans)


def test_without_a_provider_the_step_makes_no_span_and_the_trace_is_not_signed() -> None:
    plan = Plan().with_signature(Signature("Noop")).with_function("Noop", lambda c: c).build()
    with Sequence(plan, steps=[tracing.step]) as sequence:
        assert sequence.submit(Action("Noop", 3)).get(timeout=LIMIT) == 3
    assert tracing.inject(Action("Noop")).trace == {}  # no current span: nothing to carry
    signed = sign(Action("Noop", 1), "k" * 32)
    carried = signed.replace(trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    verify(carried, ["k" * 32])  # the trace field is outside the license
    with pytest.raises(Exception, match="license"):
        verify(signed.replace(metadata={"x": 1}), ["k" * 32])


def test_trace_field_is_bounded() -> None:
    with pytest.raises(Exception, match="8"):
        Action.decode(json.dumps({"name": "N", "trace": {str(i): "v" for i in range(9)}}),
                      "json")
    decoded: Any = Action.decode(json.dumps({"name": "N", "trace": {"traceparent": "x"}}),
                                 "json")
    assert decoded.trace == {"traceparent": "x"}
