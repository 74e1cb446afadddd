# SPDX-License-Identifier: MIT
"""``echo-actors dead-letters list|requeue`` and ``echo-actors stats``: look at a stream."""

from __future__ import annotations

import argparse
from typing import IO, Any

import msgspec

from echo_actors.cli._common import (
    EXIT_CODES,
    Exit,
    HelpFormatter,
    at_least,
    load_fate,
    positive_seconds,
)
from echo_actors.cli._redis import add_stream_options, open_production

__all__ = ["add_commands", "dead_letters", "stats"]

DEAD_DESCRIPTION = """\
The dead letters of a Redis stream: actions that ran out of attempts or failed
for good, each with its error kind, message and attempts."""

DEAD_EPILOG = f"""\
examples:
  echo-actors dead-letters list --limit 20
  echo-actors dead-letters list --json | jq .error_kind
  echo-actors dead-letters requeue --id 1f0c2a9e-...   # one of them
  echo-actors dead-letters requeue                     # all that can be

{EXIT_CODES}"""

STATS_EPILOG = f"""\
examples:
  echo-actors stats
  echo-actors stats --stream jobs --json

{EXIT_CODES}"""


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``dead-letters`` (with ``list`` and ``requeue``) and ``stats``."""
    dead = commands.add_parser(
        "dead-letters", parents=parents, formatter_class=HelpFormatter,
        description=DEAD_DESCRIPTION, epilog=DEAD_EPILOG, help="list or requeue the dead letters",
    )
    actions = dead.add_subparsers(dest="action", required=True, metavar="{list,requeue}")
    listing = actions.add_parser(
        "list", parents=parents, formatter_class=HelpFormatter,
        description="List the dead letters, oldest first (the count goes to stderr).",
        epilog=DEAD_EPILOG, help="list the dead letters, oldest first",
    )
    add_stream_options(listing)
    listing.add_argument("--limit", type=at_least(1), metavar="N", help="list at most N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(command=dead_letters)
    requeue = actions.add_parser(
        "requeue", parents=parents, formatter_class=HelpFormatter,
        description="Put dead letters back on the stream with their attempts reset: all of "
        "them, or those named by --id (action id or dead entry id). Letters that never "
        "decoded stay. Exit 1 if an --id was not found.",
        epilog=DEAD_EPILOG, help="put dead letters back on the stream",
    )
    add_stream_options(requeue)
    requeue.add_argument("--id", action="append", metavar="ID",
                         help="requeue only this action id or dead entry id (repeatable)")
    requeue.set_defaults(command=dead_letters)

    figures = commands.add_parser(
        "stats", parents=parents, formatter_class=HelpFormatter,
        description="Stream length, pending entries per consumer, delayed and dead letters; "
        "the live workers with their last heartbeat, Sites, actions in flight and share of "
        "the work (acknowledged by each since it started).",
        epilog=STATS_EPILOG, help="stream, pending, delayed and dead-letter counts",
    )
    add_stream_options(figures)
    figures.add_argument("--json", action="store_true", help="print as JSON")
    figures.add_argument("--visibility-timeout", type=positive_seconds, default=30.0,
                         metavar="SECONDS", help="forget workers silent for longer than this "
                         "(the workers' own setting; default: 30)")
    figures.set_defaults(command=stats)


def dead_letters(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``list`` the dead letters, or ``requeue`` them (all, or ``--id`` ones)."""
    production = open_production(args, load_fate(args.config))
    try:
        if args.action == "list":
            letters = production.dead_letters(limit=args.limit)
            for letter in letters:
                if args.json:
                    print(msgspec.json.encode(letter).decode(), file=out)
                    continue
                action = letter.action
                what = f"{action.id} {action.name}" if action is not None else (
                    f"(undecodable, {letter.size} bytes)"
                )
                print(f"{letter.entry_id} {what} {letter.error_kind} "
                      f"attempts={letter.attempts}: {letter.message}", file=out)
            if not args.json:
                print(f"{len(letters)} dead letter(s)", file=err)
            return Exit.OK
        ids = args.id or None
        done = production.requeue(ids)
        print(f"requeued {len(done)}", file=out)
        if ids is not None:
            found = {x for letter in done if letter.action is not None
                     for x in (letter.action.id, letter.entry_id)}
            missing = [i for i in ids if i not in found]
            for i in missing:
                print(f"no requeueable dead letter with id {i}", file=err)
            return Exit.FAILED if missing else Exit.OK
        return Exit.OK
    finally:
        production.close()


def stats(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print stream length, pending per consumer, delayed and dead-letter counts."""
    production = open_production(args, load_fate(args.config),
                                 visibility_timeout=args.visibility_timeout)
    try:
        figures = production.stats()
    finally:
        production.close()
    if args.json:
        print(msgspec.json.encode(figures).decode(), file=out)
        return Exit.OK
    print(f"stream {figures.stream} (group {figures.group}): {figures.length} entries, "
          f"{figures.pending} pending, {figures.delayed} delayed, "
          f"{figures.dead_letters} dead letters", file=out)
    for consumer in figures.consumers:
        print(f"  {consumer.name}: {consumer.pending} pending, idle {consumer.idle_ms} ms",
              file=out)
    total = sum(worker.acked for worker in figures.workers)
    print(f"{len(figures.workers)} live worker(s)", file=out)
    for worker in figures.workers:
        share = f"{100 * worker.acked / total:.1f}%" if total else "-"
        print(f"  {worker.consumer}: heartbeat {worker.heartbeat_age:.1f} s ago, "
              f"{worker.sites} Sites, {worker.in_flight} in flight, acked {worker.acked} "
              f"({share}), pid {worker.pid} on {worker.host}", file=out)
    return Exit.OK
