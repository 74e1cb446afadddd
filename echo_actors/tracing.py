# SPDX-License-Identifier: MIT
"""OpenTelemetry tracing: a span per attempt, one trace from submitter to chained actions.

    from echo_actors import tracing
    sequence = Sequence(plan, steps=[tracing.step])
    with tracer.start_as_current_span("import"):
        sequence.submit(tracing.inject(Action("Fetch", url)))

:func:`step` is a pipeline step that runs each attempt in a span named
``echo.run <name>`` (attributes: action name and id, attempt, Site, outcome),
a child of the context the action carries in its ``trace`` field: the one
:func:`inject` put there, across processes through Redis too. Retries carry
the same context (siblings under one parent), and a ``next`` action gets the
running span's, so what it chains shows as that attempt's child.

``trace`` is rewritten at every hop, so licenses do not sign it (see
:mod:`echo_actors.license`): a forged context can put a span in the wrong
trace, never change what runs. Without the OpenTelemetry API installed, or
with no tracer provider configured (the API's default), the step only calls
on: no span is made. Needs the ``otel`` extra (``opentelemetry-api``); an SDK
and an exporter are the application's to configure.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from echo_actors.action import Action

if TYPE_CHECKING:
    from echo_actors.pipeline import Next
    from echo_actors.site import Site

trace: Any
try:
    from opentelemetry import propagate
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the extra is not installed: tracing is off
    trace = None
else:
    trace = _trace

__all__ = ["available", "inject", "step"]

_cached: tuple[Any, Any] | None = None
_FAST = trace is not None and hasattr(trace, "_TRACER_PROVIDER") and (
    "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
)
"""Whether "no provider set" can be read from the API's global directly (its own lookup
reads the environment at every call, which costs more than a no-op action)."""


def available() -> bool:
    """Whether the OpenTelemetry API is installed."""
    return trace is not None


def _tracer() -> Any:
    """The tracer of the configured provider, or None while none is configured."""
    global _cached
    assert trace is not None
    if _FAST and trace._TRACER_PROVIDER is None:
        return None  # the API's default: nothing configured (checked without a lookup)
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer("echo_actors")
    _cached = (provider, tracer)
    return tracer


def inject(action: Action) -> Action:
    """``action`` carrying the current span's context (unchanged without one).

    Call it where you submit or assign, inside your span, so that the
    attempts are that span's children (in this process or a worker's).
    """
    if trace is None:
        return action
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return action.replace(trace=carrier) if carrier else action


def step(action: Action, site: Site, call_next: Next) -> Any:
    """A pipeline step: the rest of the attempt inside a span (see the module)."""
    if trace is None or (_FAST and trace._TRACER_PROVIDER is None):
        return call_next(action)  # not installed, or nothing configured: no span
    tracer = _tracer()
    if tracer is None:
        return call_next(action)
    known = action.name in site.site_context.plan
    parent = propagate.extract(action.trace) if action.trace else None
    with tracer.start_as_current_span(
        f"echo.run {action.name if known else 'unknown'}", context=parent,
        kind=SpanKind.CONSUMER, record_exception=False, set_status_on_exception=False,
        attributes={
            "echo.action.name": action.name, "echo.action.id": action.id,
            "echo.attempt": action.attempt, "echo.site": site.site_index,
        },
    ) as span:
        following = action.next
        ticket = site.site_ticket
        if following is not None and ticket.action is action:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # the running span: what this chains is its child
            action = action.replace(next=following.replace(trace=carrier))
            ticket.action = action  # what the Settler chains, retries and acknowledges
        try:
            result = call_next(action)
        except BaseException as exc:
            span.set_attribute("echo.outcome", "failed")
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
            raise
        span.set_attribute("echo.outcome", "completed")
        return result
