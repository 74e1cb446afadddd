# SPDX-License-Identifier: MIT
"""``echo-actors submit``: add JSON-lines actions to a Redis stream."""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from typing import IO, Any

import msgspec

from echo_actors.action import Action
from echo_actors.cli._common import (
    EXIT_CODES,
    Exit,
    HelpFormatter,
    load_fate,
    positive_seconds,
)
from echo_actors.cli._input import LINE_ERRORS, BadLines, open_input, read_actions
from echo_actors.cli._output import _is_terminal
from echo_actors.cli._progress import Progress
from echo_actors.cli._redis import add_stream_options, open_production
from echo_actors.license import sign

__all__ = ["add_command", "command"]

_CHUNK = 1000

DESCRIPTION = """\
Add actions to a Redis stream, one JSON-encoded Action per line of FILE (or of
standard input). Each is signed with the first license key if ECHO_LICENSE_KEYS
(or --config) sets any. A bad line, whatever is wrong with it (not JSON, wrong
types, too large, an integer MessagePack cannot hold), is reported with its
number and skipped; the others are added.

With --wait, the workers store each action's outcome and the command prints
one JSON line per action as its outcome arrives (in the order they arrive):
{"line": N, "id": ..., "name": ..., "ok": true, "result": ...} or, for an
action that failed for good, "ok": false with "error_kind", "message" and
"attempts". --chain waits for the last action of each chain instead. Progress
goes to stderr (a bar on a terminal). Exit 1 if any failed or --timeout ran out."""

EPILOG = f"""\
examples:
  echo-actors submit examples/actions.jsonl
  generate-actions | echo-actors submit - --stream jobs
  echo-actors submit jobs.jsonl --wait --timeout 60 > results.jsonl

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
    send.add_argument("--wait", action="store_true",
                      help="wait for the outcomes and print them as JSON lines")
    send.add_argument("--chain", action="store_true",
                      help="with --wait: the outcome of each chain's last action")
    send.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                      help="with --wait: stop waiting after this long (default: no limit)")
    send.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="with --wait: show progress on stderr (default: on)")
    send.set_defaults(command=command)


def command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Submit every good line; exit 1 if any line was bad."""
    fate = load_fate(args.config)
    source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open_input(args.file)
    key = fate.license_keys[0] if fate.license_keys else None
    bad = BadLines()
    submitted = 0
    waiting: list[Any] = []  # (future, line number, action) with --wait
    failed = late = 0
    try:
        production = open_production(args, fate)
        try:
            actions = read_actions(source, fate.max_action_bytes, bad)
            while chunk := list(islice(actions, _CHUNK)):
                kept: list[Action] = []
                numbers: list[int] = []
                for number, action in chunk:
                    try:
                        signed = sign(action, key) if key else action
                        production.encode(signed)  # what assign checks: size, encodability
                    except LINE_ERRORS as exc:
                        bad.add(number, exc)
                        continue
                    kept.append(signed)
                    numbers.append(number)
                if args.wait:
                    futures = production.submit_many(kept)
                    waiting.extend(zip(futures, numbers, kept, strict=True))
                else:
                    production.assign_many(kept)
                submitted += len(kept)
            if args.wait:
                failed, late = _wait(production, waiting, args, out, err)
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
    summary = f"submitted {submitted}, bad lines {len(bad)}"
    if args.wait:
        summary += f", failed {failed}, not done in time {late}"
    print(summary, file=out if not args.wait else err, flush=True)
    return Exit.FAILED if bad or failed or late else Exit.OK


def _wait(production: Any, waiting: list[Any], args: argparse.Namespace, out: IO[str],
          err: IO[str]) -> tuple[int, int]:
    """Print outcomes as they arrive; returns (failed, not arrived before the timeout)."""
    from echo_actors.errors import EchoError  # noqa: PLC0415
    from echo_actors.production.redis import decode_outcome  # noqa: PLC0415

    mode = "off" if args.progress is False else ("bar" if _is_terminal(err) else "lines")
    progress = Progress(err, mode, 10.0)
    by_key = {}
    for future, number, action in waiting:
        chosen = future.chain() if args.chain else future
        by_key[chosen.key] = (chosen, number, action)
    pending = [entry[0] for entry in by_key.values()]
    total, failed = len(pending), 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        arrived = production.arrived(pending, timeout=min(0.5, left or 0.5))
        seen = set()
        for future, payload in arrived:
            _, number, action = by_key[future.key]
            row: dict[str, Any] = {"line": number, "id": future.action_id, "name": action.name}
            try:
                row.update(ok=True, result=decode_outcome(payload))
            except EchoError as exc:
                failed += 1
                row.update(ok=False, error_kind=exc.kind, message=str(exc),
                           attempts=getattr(exc, "attempts", 0))
            print(_json_line(row), file=out, flush=True)
            seen.add(future.key)
        if seen:
            pending = [f for f in pending if f.key not in seen]
        progress.show(total - len(pending), total)
    progress.close(total - len(pending), total)
    return failed, len(pending)


def _json_line(row: dict[str, Any]) -> str:
    try:
        return msgspec.json.encode(row).decode()
    except (TypeError, ValueError):  # bytes and such: shown as their repr
        row["result"] = repr(row.get("result"))
        return msgspec.json.encode(row).decode()
