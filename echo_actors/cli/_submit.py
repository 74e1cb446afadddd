# SPDX-License-Identifier: MIT
"""``echo-actors submit``: add JSON-lines actions to a Redis stream."""

from __future__ import annotations

import argparse
import sys
from itertools import islice
from typing import IO, Any

from echo_actors.action import Action
from echo_actors.cli._common import EXIT_CODES, Exit, HelpFormatter, load_fate
from echo_actors.cli._input import LINE_ERRORS, BadLines, open_input, read_actions
from echo_actors.cli._redis import add_stream_options, open_production
from echo_actors.license import sign

__all__ = ["add_command", "command"]

_CHUNK = 1000

DESCRIPTION = """\
Add actions to a Redis stream, one JSON-encoded Action per line of FILE (or of
standard input). Each is signed with the first license key if ECHO_LICENSE_KEYS
(or --config) sets any. A bad line, whatever is wrong with it (not JSON, wrong
types, too large, an integer MessagePack cannot hold), is reported with its
number and skipped; the others are added."""

EPILOG = f"""\
examples:
  echo-actors submit examples/actions.jsonl
  generate-actions | echo-actors submit - --stream jobs

{EXIT_CODES}"""


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``submit`` to the subcommands."""
    send = commands.add_parser(
        "submit", parents=parents, formatter_class=HelpFormatter, description=DESCRIPTION,
        epilog=EPILOG, help="add JSON-lines actions to a Redis stream",
    )
    send.add_argument("file", metavar="FILE", nargs="?", default="-",
                      help="one JSON-encoded Action per line ('-' or absent: standard input)")
    add_stream_options(send)
    send.set_defaults(command=command)


def command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Submit every good line; exit 1 if any line was bad."""
    fate = load_fate(args.config)
    source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open_input(args.file)
    key = fate.license_keys[0] if fate.license_keys else None
    bad = BadLines()
    submitted = 0
    try:
        production = open_production(args, fate)
        try:
            actions = read_actions(source, fate.max_action_bytes, bad)
            while chunk := list(islice(actions, _CHUNK)):
                kept: list[Action] = []
                for number, action in chunk:
                    try:
                        signed = sign(action, key) if key else action
                        production.encode(signed)  # what assign checks: size, encodability
                    except LINE_ERRORS as exc:
                        bad.add(number, exc)
                        continue
                    kept.append(signed)
                production.assign_many(kept)
                submitted += len(kept)
        finally:
            production.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    for message in bad.messages:
        print(message, file=err)
    if not submitted and not bad:
        print(f"echo-actors: {args.file} holds no actions (empty, or blank lines only)",
              file=err)
    print(f"submitted {submitted}, bad lines {len(bad)}", file=out, flush=True)
    return Exit.FAILED if bad else Exit.OK
