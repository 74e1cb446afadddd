# SPDX-License-Identifier: MIT
"""What ``run`` and ``worker`` share to be watched: --metrics-port, --trace, --dashboard."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import IO, Any

from echo_actors.cli._common import CommandError, at_least

__all__ = ["add_observe_options", "observe", "steps"]


def _port(text: str) -> int:
    port = at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, not {port}")
    return port


def add_observe_options(parser: argparse.ArgumentParser, *, dashboard: bool) -> None:
    """``--metrics-port``/``--metrics-host``, ``--trace`` and, for ``run``, ``--dashboard``."""
    group = parser.add_argument_group("watching it run")
    group.add_argument("--metrics-port", type=_port, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics "
                       "(needs the metrics extra)")
    group.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                       help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 lets "
                       "another machine scrape)")
    group.add_argument("--trace", action="store_true",
                       help="an OpenTelemetry span per attempt (needs the otel extra, and a "
                       "tracer provider configured, e.g. by opentelemetry-instrument)")
    if dashboard:
        group.add_argument("--dashboard", action="store_true",
                           help="serve a live dashboard on 127.0.0.1 and keep it open after "
                           "the run until Ctrl-C")
        group.add_argument("--dashboard-port", type=_port, default=0, metavar="PORT",
                           help="port for --dashboard (default: a free one, printed)")


def steps(args: argparse.Namespace) -> list[Any]:
    """The pipeline steps the options ask for (tracing)."""
    if not args.trace:
        return []
    from echo_actors import tracing  # noqa: PLC0415

    if not tracing.available():
        raise CommandError("--trace needs OpenTelemetry: pip install 'echo_actors[otel]'")
    return [tracing.step]


def observe(args: argparse.Namespace, sequences: list[Any], err: IO[str]) -> Callable[[], None]:
    """Before the Sequences start: register their metrics and (``run``'s one Sequence) the
    dashboard; returns their closer."""
    closers: list[Callable[[], None]] = []
    if args.metrics_port is not None:
        try:
            from prometheus_client import CollectorRegistry  # noqa: PLC0415

            from echo_actors import metrics  # noqa: PLC0415
        except ImportError:
            raise CommandError("--metrics-port needs prometheus_client: "
                               "pip install 'echo_actors[metrics]'") from None
        registry = CollectorRegistry()
        metrics.register(sequences, registry)
        server = metrics.serve(args.metrics_port, args.metrics_host, registry)
        closers.append(server.shutdown)
        print(f"echo-actors: metrics at http://{args.metrics_host}:{server.server_port}/metrics",
              file=err, flush=True)
    if getattr(args, "dashboard", False):
        from echo_actors import dashboard  # noqa: PLC0415

        board = dashboard.serve(sequences[0], args.dashboard_port)
        closers.append(board.close)
        print(f"echo-actors: dashboard at {board.url}", file=err, flush=True)

    def close() -> None:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()

    return close
