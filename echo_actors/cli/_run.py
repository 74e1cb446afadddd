# SPDX-License-Identifier: MIT
"""``echo-actors run``: execute a JSON-lines file of actions in this process, then summarise."""

from __future__ import annotations

import argparse
import time
from itertools import islice
from typing import IO, Any

import msgspec

from echo_actors.action import Action
from echo_actors.cli._common import (
    EXIT_CODES,
    Exit,
    HelpFormatter,
    at_least,
    load_fate,
    positive_seconds,
)
from echo_actors.cli._input import BadLines, open_input, read_actions
from echo_actors.cli._observe import add_observe_options, observe, steps
from echo_actors.cli._plans import load_plan
from echo_actors.cli._progress import Progress
from echo_actors.cli._signals import Stopping, interruptible
from echo_actors.runtime import RUNTIMES
from echo_actors.sequence import Sequence

__all__ = ["add_command", "command"]

_CHUNK = 512
_POLL = 0.2  # seconds between looks at the figures while waiting

DESCRIPTION = """\
Execute a JSON-lines FILE (one encoded Action per line) in this process, on the
in-memory Production, and print a summary: completed, dead-lettered, bad lines,
throughput. Bad lines are reported with their numbers and skipped; dead letters
are listed once, with the line they came from, in file order.

MODULE is a dotted module name (found from the current directory too) or a path
to a .py file. PLAN names a Plan in it, or a function of no arguments that
returns one (a factory); nothing else is called.

Ctrl-C stops reading, lets the running actions finish, cancels the rest and
prints the summary (exit 130); a second Ctrl-C leaves at once. An empty FILE is
not an error: exit 0, and a word saying it held no actions."""

EPILOG = f"""\
examples:
  echo-actors run examples/quickstart.py:plan examples/actions.jsonl
  echo-actors run myapp.plans:make_plan actions.jsonl --sites 8 --json
  echo-actors run plan.py:plan big.jsonl --no-progress 2> errors.log

{EXIT_CODES}"""


class _DeadLetterRow(msgspec.Struct):
    line: int | None
    id: str
    name: str
    error_kind: str
    message: str
    attempts: int


class _Summary(msgspec.Struct):
    submitted: int
    completed: int
    dead_lettered: int
    cancelled: int
    bad_lines: int
    seconds: float
    per_second: float
    interrupted: bool
    dead_letters: list[_DeadLetterRow]


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``run`` to the subcommands."""
    run = commands.add_parser(
        "run", parents=parents, formatter_class=HelpFormatter, description=DESCRIPTION,
        epilog=EPILOG, help="execute a JSON-lines file of actions in this process",
    )
    run.add_argument("plan", metavar="MODULE:PLAN", help="where the Plan is (module or .py path)")
    run.add_argument("file", metavar="FILE", help="one JSON-encoded Action per line")
    run.add_argument("--sites", type=at_least(1), metavar="N",
                     help="number of Sites, at least 1 (default: the configuration's, 4)")
    run.add_argument("--runtime", choices=list(RUNTIMES), help="actor runtime (default: thread)")
    run.add_argument("--config", metavar="TOML", help="a Fate file ([echo] table or top level)")
    run.add_argument("--json", action="store_true",
                     help="print the summary, dead letters included, as one JSON object")
    run.add_argument("--show-dead", type=at_least(0), default=5, metavar="N",
                     help="list the first N dead letters on stderr (default: 5)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show progress on stderr: a bar on a terminal, else a line every "
                     "--progress-every seconds (default: on)")
    run.add_argument("--progress-every", type=positive_seconds, default=10.0, metavar="SECONDS",
                     help="seconds between progress lines when stderr is not a terminal "
                     "(default: 10)")
    add_observe_options(run, dashboard=True)
    run.set_defaults(command=command)


def _count_lines(source: IO[bytes]) -> int:
    count = sum(1 for line in source if line.strip())
    source.seek(0)
    return count


def _remember(lines: dict[str, int], action: Action, number: int) -> None:
    """Map the action's id, and those of its chain, to its input line."""
    current: Action | None = action
    while current is not None:
        lines[current.id] = number
        current = current.next


def command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run the file; the exit status says how it went (see the epilog)."""
    plan = load_plan(args.plan)
    fate = load_fate(args.config, sites=args.sites, runtime=args.runtime)
    source = open_input(args.file)
    bad = BadLines()
    lines: dict[str, int] = {}
    submitted = 0
    with source:
        expected = _count_lines(source)
        mode = "off" if args.progress is False else (
            "bar" if _is_terminal(err) else "lines"
        )

        def hurry(_signum: int) -> None:
            print("\necho-actors: interrupted again: leaving without waiting for the "
                  "running actions", file=err, flush=True)

        sequence = Sequence(plan, fate=fate, steps=steps(args))
        unobserve = observe(args, [sequence], err)
        progress = Progress(err, "off", args.progress_every)
        closed = False
        started = time.perf_counter()
        with Stopping(hurry=hurry) as stopping:
            try:
                sequence.start()
                progress = Progress(err, mode, args.progress_every)
                actions = read_actions(source, fate.max_action_bytes, bad)
                looked = time.monotonic()
                while not stopping.requested.is_set():
                    chunk = list(islice(actions, _CHUNK))
                    if not chunk:
                        break
                    for number, action in chunk:
                        _remember(lines, action, number)
                    sequence.submit_many([action for _, action in chunk])
                    submitted += len(chunk)
                    if time.monotonic() - looked >= _POLL:
                        looked = time.monotonic()
                        _show(progress, sequence, expected - len(bad))
                while not stopping.requested.is_set() and not sequence.join(timeout=_POLL):
                    _show(progress, sequence, expected - len(bad))
                if stopping.requested.is_set():
                    progress.abandon()
                    print("\necho-actors: stopping: the running actions finish, the rest are "
                          "cancelled (Ctrl-C again to leave now)", file=err, flush=True)
            except BrokenPipeError:  # the reader of our output went away
                closed = True
                progress.abandon()
                stopping.request()
            finally:
                # Idle unless stopped early: cancels the rest, waits for what runs.
                interruptible(sequence.shutdown, drain=False)
            elapsed = time.perf_counter() - started
            if closed:
                unobserve()
                return Exit.CLOSED
            stats = sequence.stats()
            progress.close(stats.completed + stats.dead_lettered,
                           max(expected - len(bad), stats.accepted))
    interrupted = stopping.signum is not None
    finished = stats.completed + stats.dead_lettered
    rows = sorted(
        (_DeadLetterRow(lines.get(letter.action.id), letter.action.id, letter.action.name,
                        letter.error_kind, letter.message, letter.attempts)
         for letter in sequence.dead_letters()),
        key=lambda row: (row.line is None, row.line or 0),
    )
    summary = _Summary(
        submitted=submitted, completed=stats.completed, dead_lettered=stats.dead_lettered,
        cancelled=stats.cancelled, bad_lines=len(bad), seconds=round(elapsed, 3),
        per_second=round(finished / elapsed, 1) if elapsed > 0 else 0.0,
        interrupted=interrupted, dead_letters=rows,
    )
    _report(args, summary, bad, out, err)
    if args.dashboard and not interrupted:
        _linger(err)
    unobserve()
    if interrupted:
        return Exit.INTERRUPTED
    return Exit.FAILED if bad or summary.dead_lettered else Exit.OK


def _linger(err: IO[str]) -> None:
    """Keep the dashboard open after the run, until Ctrl-C or SIGTERM."""
    print("echo-actors: the run ended; the dashboard stays open (Ctrl-C to close)",
          file=err, flush=True)
    with Stopping() as stopping:
        while not stopping.requested.wait(1.0):  # timed: signal handlers run between
            pass


def _show(progress: Progress, sequence: Sequence, expected: int) -> None:
    stats = sequence.stats()
    progress.show(stats.completed + stats.dead_lettered, max(expected, stats.accepted))


def _report(args: argparse.Namespace, summary: _Summary, bad: BadLines, out: IO[str],
            err: IO[str]) -> None:
    for message in bad.messages:
        print(message, file=err)
    if summary.interrupted:
        print("echo-actors: interrupted: stopped reading; actions not started were cancelled",
              file=err)
    elif not summary.submitted and not summary.bad_lines:
        print(f"echo-actors: {args.file} holds no actions (empty, or blank lines only)",
              file=err)
    if args.json:
        print(msgspec.json.encode(summary).decode(), file=out, flush=True)
        return
    for row in summary.dead_letters[: args.show_dead]:
        where = f"line {row.line}" if row.line is not None else "chained"
        print(f"dead letter ({where}): {row.id} {row.name}: {row.error_kind}: {row.message}",
              file=err)
    hidden = len(summary.dead_letters) - args.show_dead
    if hidden > 0:
        print(f"... and {hidden} more dead letter(s) (--show-dead N, or --json for all)",
              file=err)
    cancelled = f", cancelled {summary.cancelled}" if summary.cancelled else ""
    print(
        f"completed {summary.completed}, dead-lettered {summary.dead_lettered}, "
        f"bad lines {summary.bad_lines}{cancelled} in {summary.seconds:.2f} s "
        f"({summary.per_second:,.0f} actions/s)",
        file=out, flush=True,
    )


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):
        return False

