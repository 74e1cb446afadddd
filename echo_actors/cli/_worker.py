# SPDX-License-Identifier: MIT
"""``echo-actors worker``: execute actions from a Redis stream until stopped."""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import IO, Any

from echo_actors.cli._common import (
    EXIT_CODES,
    CommandError,
    Exit,
    HelpFormatter,
    at_least,
    load_fate,
    positive_seconds,
)
from echo_actors.cli._observe import add_observe_options, observe, steps
from echo_actors.cli._plans import load_plan
from echo_actors.cli._redis import add_stream_options, open_production
from echo_actors.cli._signals import Stopping, interruptible

__all__ = ["add_command", "command", "prepare"]

DESCRIPTION = """\
Run a Sequence on a Redis stream (consumer group) until stopped: read actions in
batches, execute them, acknowledge each once it completed, was dead-lettered or
was parked for a delay. Several workers on several machines share the stream.

SIGTERM or Ctrl-C: stop reading, give the actions read but not started back to
the stream, let the running ones finish and be acknowledged, print a summary and
exit (0 for SIGTERM, 130 for Ctrl-C). A second signal leaves at once: what was
running is redelivered to other workers after the visibility timeout.

--stream a,b,c reads several streams (one Sequence of --sites Sites each): on a
Redis Cluster each stream lives on the node of its hash slot, so several streams
spread the load over the nodes.

A worker that cannot go on (its Redis reader or writer thread died of an error
that is not a Redis outage, or its Sequence failed) gives back what it has not
started and exits 1 with the error, so that systemd, supervisord or Kubernetes
restart it. A Redis outage is waited out: reconnects with a backoff, logging a
warning each time."""

EPILOG = f"""\
examples:
  export ECHO_REDIS_URL=redis://127.0.0.1:6379/0
  echo-actors worker examples/quickstart.py:plan --sites 4
  echo-actors worker myapp.plans:plan --runtime gevent --sites 200 --read-ahead 50
  echo-actors worker plan.py:plan --log-level info --log-format json

{EXIT_CODES}
  (SIGTERM gives 0 once the worker stopped cleanly)"""


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``worker`` to the subcommands."""
    run = commands.add_parser(
        "worker", parents=parents, formatter_class=HelpFormatter, description=DESCRIPTION,
        epilog=EPILOG, help="execute actions from a Redis stream until stopped",
    )
    run.add_argument("plan", metavar="MODULE:PLAN", help="where the Plan is (module or .py path)")
    add_stream_options(run)
    run.add_argument("--sites", type=at_least(1), metavar="N",
                     help="number of Sites, at least 1 (default: the configuration's, 4)")
    run.add_argument("--runtime", choices=["thread", "gevent"],
                     help="actor runtime (default: the configuration's, thread; gevent patches "
                     "the process)")
    run.add_argument("--consumer", help="consumer name (default: HOST-PID)")
    run.add_argument("--batch", type=at_least(1), default=128, metavar="N",
                     help="entries per read (default: 128)")
    run.add_argument("--read-ahead", type=at_least(1), metavar="N",
                     help="hold exactly up to N unacknowledged actions (default: adaptive: "
                     "one per Site plus 50 ms of work at the worker's pace, at most 256, so "
                     "that workers share slow actions evenly)")
    run.add_argument("--visibility-timeout", type=positive_seconds, default=30.0,
                     metavar="SECONDS",
                     help="idle time before others claim a silent worker's entries (default: 30)")
    run.add_argument("--grace", type=positive_seconds, metavar="SECONDS",
                     help="on a stop, most seconds to wait for running actions (default: all)")
    add_observe_options(run, dashboard=False)
    run.set_defaults(command=command, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    """Load the settings, and monkey-patch a gevent worker before redis (and ssl) are imported.

    Then the production's fetcher and writer threads, and redis-py's sockets,
    cooperate with the gevent hub the actors run on. The runtime comes from
    ``--runtime``, else the configuration (``--config``, ``ECHO_RUNTIME``).
    """
    fate = load_fate(args.config, sites=args.sites, runtime=args.runtime)
    if fate.runtime not in {"thread", "gevent"}:
        raise CommandError(f"a worker runs on the thread or gevent runtime, not {fate.runtime!r}")
    args.fate = fate
    if fate.runtime == "gevent":
        from gevent import monkey  # noqa: PLC0415 - only for the gevent runtime

        if not monkey.is_module_patched("socket"):
            monkey.patch_all()


def command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run until a signal; then stop cleanly (see the description)."""
    from echo_actors.sequence import Sequence  # noqa: PLC0415 - after monkey-patching

    fate = args.fate  # loaded by prepare()
    runtime = fate.runtime
    plan = load_plan(args.plan)
    streams = list(dict.fromkeys(s.strip() for s in args.stream.split(",") if s.strip()))
    if not streams:
        raise CommandError("--stream names no stream")
    productions: list[Any] = []
    sequences: list[Any] = []
    try:
        for stream in streams:  # one production and one Sequence per stream
            productions.append(open_production(
                args, fate, stream=stream, consumer=args.consumer, batch=args.batch,
                read_ahead=args.read_ahead or 256, fair=args.read_ahead is None,
                visibility_timeout=args.visibility_timeout, sites=fate.sites,
            ))
            # Named by their stream when there are several (the metrics' sequence label).
            sequences.append(Sequence(plan, production=productions[-1], fate=fate,
                                      steps=steps(args),
                                      name=stream if len(streams) > 1 else "sequence"))
        unobserve = observe(args, sequences, err)
    except BaseException:
        for production in productions:
            production.close()
        raise
    name = productions[0].consumer

    def hurry(_signum: int) -> None:
        print(f"echo-actors worker {name}: stopping now; running actions "
              "are redelivered after the visibility timeout", file=err, flush=True)

    started = time.perf_counter()
    closed = False
    failure: BaseException | None = None
    handed_back: list[Any] = []
    with Stopping(hurry=hurry) as stopping:
        try:
            for production, sequence in zip(productions, sequences, strict=True):
                sequence.start()
                print(f"echo-actors worker {name}: reading {production.stream} "
                      f"(group {production.group}, {sequence.sites} Sites, {runtime}, "
                      f"pid {os.getpid()})", file=err, flush=True)
            while not stopping.requested.wait(0.2):  # timed: signal handlers run between
                failure = next((f for f in (*(p.failure for p in productions),
                                            *(s.failure for s in sequences))
                                if f is not None), None)
                if failure is not None:  # exit non-zero so that a supervisor restarts it
                    break
        except BrokenPipeError:
            closed = True
        finally:
            for production in productions:
                production.pause()
            for production, sequence in zip(productions, sequences, strict=True):
                try:
                    handed_back += interruptible(sequence.shutdown, drain=False,
                                                 timeout=args.grace)
                finally:
                    production.close()
            unobserve()
    if closed:
        return Exit.CLOSED
    if failure is not None:
        print(f"echo-actors worker {name}: failed: "
              f"{type(failure).__name__}: {failure}; actions not started were given back",
              file=err, flush=True)
        return Exit.FAILED
    totals = [sequence.stats() for sequence in sequences]
    elapsed = time.perf_counter() - started
    print(
        f"echo-actors worker {name}: completed {sum(c.completed for c in totals)}, "
        f"dead-lettered {sum(c.dead_lettered for c in totals)}, "
        f"retried {sum(c.retried for c in totals)}, "
        f"given back {len(handed_back)} in {elapsed:.1f} s",
        file=out, flush=True,
    )
    return Exit.INTERRUPTED if stopping.signum == signal.SIGINT else Exit.OK  # SIGTERM: 0
