# SPDX-License-Identifier: MIT
"""The ``echo-actors`` command line.

``echo-actors run MODULE:PLAN FILE`` executes a JSON-lines file of actions
in-process, on the in-memory Production, and prints a summary. MODULE is a
dotted module name or a path to a ``.py`` file; PLAN names a Plan in it (or a
function that returns one).

On Redis (``--redis URL`` or ``ECHO_REDIS_URL``): ``worker MODULE:PLAN`` runs
until SIGTERM/SIGINT, ``submit [FILE|-]`` adds JSON-lines actions,
``dead-letters list|requeue`` and ``stats`` inspect the stream.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import IO, Any

import msgspec
import structlog

from echo_actors.action import Action
from echo_actors.errors import DecodeError
from echo_actors.fate import Fate
from echo_actors.plan import Plan
from echo_actors.runtime import RUNTIMES
from echo_actors.sequence import Sequence
from echo_actors.worker import add_redis_commands, prepare

__all__ = ["load_plan", "main"]

_CHUNK = 512


def load_plan(spec: str) -> Plan:
    """The Plan named by ``MODULE:PLAN`` (MODULE: dotted name or ``.py`` path).

    Raises:
        ValueError: the spec is malformed, or does not name a Plan.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:PLAN, got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ImportError(f"no such file: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, Plan):
        value = value()
    if not isinstance(value, Plan):
        raise ValueError(f"{spec} is a {type(value).__name__}, not a Plan")
    return value.build()


def _read_actions(
    lines: IO[bytes], max_bytes: int, errors: list[str]
) -> Iterator[Action]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield Action.decode(line, max_bytes=max_bytes)
        except DecodeError as exc:
            errors.append(f"line {number}: {exc}")


class _Summary(msgspec.Struct):
    submitted: int
    completed: int
    dead_lettered: int
    cancelled: int
    bad_lines: int
    seconds: float
    per_second: float


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    plan = load_plan(args.plan)
    fate = Fate.load(args.config, **({"sites": args.sites} if args.sites else {}),
                     **({"runtime": args.runtime} if args.runtime else {}))
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    errors: list[str] = []
    futures: list[Any] = []
    progress = args.progress if args.progress is not None else err.isatty()
    started = time.perf_counter()
    sequence = Sequence(plan, fate=fate)
    with sequence, path.open("rb") as lines:
        actions = _read_actions(lines, fate.max_action_bytes, errors)
        while chunk := [action for _, action in zip(range(_CHUNK), actions, strict=False)]:
            futures.extend(sequence.submit_many(chunk))
        for error in errors:
            print(error, file=err)
        while not sequence.join(timeout=0.5):
            if progress:
                stats = sequence.stats()
                done = stats.completed + stats.dead_lettered
                print(f"\r{done}/{stats.accepted} done", end="", file=err, flush=True)
        if progress:
            print(file=err)
    elapsed = time.perf_counter() - started
    stats = sequence.stats()
    summary = _Summary(
        submitted=len(futures), completed=stats.completed, dead_lettered=stats.dead_lettered,
        cancelled=stats.cancelled, bad_lines=len(errors), seconds=round(elapsed, 3),
        per_second=round(len(futures) / elapsed, 1) if elapsed > 0 else 0.0,
    )
    for letter in sequence.dead_letters()[: args.show_dead]:
        print(f"dead letter {letter.action.id} ({letter.action.name}): "
              f"{letter.error_kind}: {letter.message}", file=err)
    if args.json:
        print(msgspec.json.encode(summary).decode(), file=out)
    else:
        print(
            f"completed {summary.completed}, dead-lettered {summary.dead_lettered}, "
            f"bad lines {summary.bad_lines} in {summary.seconds:.2f} s "
            f"({summary.per_second:,.0f} actions/s)",
            file=out,
        )
    return 0 if not errors and not summary.dead_lettered else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echo-actors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="structlog level for the library's events (default: warning)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute a JSON-lines file of actions in-process")
    run.add_argument("plan", metavar="MODULE:PLAN", help="where the Plan is (module or .py path)")
    run.add_argument("file", metavar="FILE", help="one JSON-encoded Action per line")
    run.add_argument("--sites", type=int, help="number of Sites (default: Fate's)")
    run.add_argument("--runtime", choices=list(RUNTIMES), help="actor runtime")
    run.add_argument("--config", metavar="TOML", help="a Fate file ([echo] table or top level)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--show-dead", type=int, default=5, metavar="N",
                     help="list the first N dead letters (default: 5)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show progress (default: when stderr is a terminal)")
    add_redis_commands(commands)
    return parser


def main(argv: Seq[str] | None = None) -> int:
    """Entry point of the ``echo-actors`` command; returns the exit status.

    0: everything completed; 1: some actions were dead-lettered or some lines
    were bad; 2: the command itself could not run (usage, plan, file).
    """
    args = _parser().parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = getattr(args, "handler", None)
    if handler is not None:  # the Redis commands (echo_actors.worker)
        return _redis_command(handler, args)
    try:
        return _run(args, sys.stdout, sys.stderr)
    except (ValueError, ImportError, OSError) as exc:
        print(f"echo-actors: error: {exc}", file=sys.stderr)
        return 2


def _redis_command(handler: Any, args: argparse.Namespace) -> int:
    prepare(args)  # a gevent worker patches the process before redis is imported
    try:
        from redis import RedisError  # noqa: PLC0415 - redis is an optional dependency
    except ImportError:
        print("echo-actors: error: the Redis commands need redis-py "
              "(pip install 'echo_actors[redis]')", file=sys.stderr)
        return 2
    try:
        status: int = handler(args, sys.stdout, sys.stderr)
    except (ValueError, ImportError, OSError, RedisError) as exc:
        print(f"echo-actors: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
