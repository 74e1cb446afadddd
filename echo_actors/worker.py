# SPDX-License-Identifier: MIT
"""The Redis side of the command line: run a worker, submit, dead letters, stats.

Each function takes parsed arguments and output streams and returns an exit
status, so that :mod:`echo_actors.cli` only wires them up. The Redis URL
comes from ``--redis`` or ``ECHO_REDIS_URL``; license keys from Fate
(``ECHO_LICENSE_KEYS``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from echo_actors.action import Action
from echo_actors.errors import DecodeError
from echo_actors.fate import Fate
from echo_actors.license import sign

__all__ = [
    "REDIS_URL_ENV",
    "add_redis_commands",
    "dead_letters",
    "prepare",
    "redis_url",
    "stats",
    "submit",
    "worker",
]

REDIS_URL_ENV = "ECHO_REDIS_URL"
"""The environment variable that names the Redis server when ``--redis`` is not given."""

_SUBMIT_CHUNK = 1000


def redis_url(given: str | None) -> str:
    """``given``, else ``$ECHO_REDIS_URL``.

    Raises:
        ValueError: neither is set.
    """
    url = given or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ValueError(f"no Redis server: pass --redis URL or set {REDIS_URL_ENV}")
    return url


def _fate(args: argparse.Namespace, **overrides: Any) -> Fate:
    return Fate.load(getattr(args, "config", None),
                     **{k: v for k, v in overrides.items() if v is not None})


def _production(args: argparse.Namespace, fate: Fate, **options: Any) -> Any:
    from echo_actors.production.redis import RedisProduction  # noqa: PLC0415 - redis is optional

    return RedisProduction(
        redis_url(args.redis), stream=args.stream, group=args.group, fate=fate, **options
    )


# worker


def _runtime(args: argparse.Namespace) -> str:
    return str(getattr(args, "runtime", None) or os.environ.get("ECHO_RUNTIME") or "thread")


def prepare(args: argparse.Namespace) -> None:
    """Monkey-patch the process for a gevent worker, before redis (and ssl) are imported.

    Then the production's fetcher and writer threads, and redis-py's sockets,
    cooperate with the gevent hub the actors run on.
    """
    if args.command == "worker" and _runtime(args) == "gevent":
        from gevent import monkey  # noqa: PLC0415 - only for the gevent runtime

        if not monkey.is_module_patched("socket"):
            monkey.patch_all()


def worker(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run a Sequence on a RedisProduction until SIGTERM/SIGINT; then stop cleanly.

    On the signal it stops reading, gives the actions it read but did not
    start back to the stream, lets the running ones finish, acknowledges
    them and exits 0. A second signal exits at once (what was running is
    redelivered to other workers after the visibility timeout).
    """
    runtime = _runtime(args)
    prepare(args)
    from echo_actors.cli import load_plan  # noqa: PLC0415 - cli imports this module
    from echo_actors.sequence import Sequence  # noqa: PLC0415 - after monkey-patching

    plan = load_plan(args.plan)
    fate = _fate(args, sites=args.sites, runtime=runtime)
    production = _production(
        args, fate, consumer=args.consumer, batch=args.batch, read_ahead=args.read_ahead,
        visibility_timeout=args.visibility_timeout,
    )
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in signals}

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            os._exit(128 + signum)  # second signal: leave now, Redis redelivers
        stop.set()

    for signum in signals:
        signal.signal(signum, request_stop)
    started = time.perf_counter()
    try:
        sequence = Sequence(plan, production=production, fate=fate)
    except BaseException:
        production.close()
        raise
    try:
        sequence.start()
        print(f"echo-actors worker {production.consumer}: reading {production.stream} "
              f"(group {production.group}, {sequence.sites} Sites, {runtime})", file=err,
              flush=True)
        while not stop.wait(1.0):  # a timed wait: signal handlers run between waits
            pass
    finally:
        production.pause()
        handed_back = sequence.shutdown(drain=False, timeout=args.grace)  # idempotent
        production.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    counts = sequence.stats()
    elapsed = time.perf_counter() - started
    print(
        f"echo-actors worker {production.consumer}: completed {counts.completed}, "
        f"dead-lettered {counts.dead_lettered}, retried {counts.retried}, "
        f"given back {len(handed_back)} in {elapsed:.1f} s",
        file=out, flush=True,
    )
    return 0


# submit


def _lines(stream: IO[bytes], max_bytes: int, bad: list[str]) -> Iterator[Action]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield Action.decode(line, "json", max_bytes=max_bytes)
        except DecodeError as exc:
            bad.append(f"line {number}: {exc}")


def submit(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Add JSON-lines actions to the stream (signed with the first license key, if any).

    Bad lines are reported with their numbers and counted; exit status 1 if any.
    """
    fate = _fate(args)
    production = _production(args, fate)
    bad: list[str] = []
    submitted = 0
    key = fate.license_keys[0] if fate.license_keys else None
    source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    try:
        actions = _lines(source, fate.max_action_bytes, bad)
        while True:
            chunk: list[Action] = []
            for action in actions:
                chunk.append(sign(action, key) if key else action)
                if len(chunk) >= _SUBMIT_CHUNK:
                    break
            if not chunk:
                break
            kept: list[Action] = []
            for action in chunk:
                try:
                    production.encode(action)  # the size check assign would make
                    kept.append(action)
                except ValueError as exc:
                    bad.append(f"action {action.id}: {exc}")
            production.assign_many(kept)
            submitted += len(kept)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        production.close()
    for line in bad:
        print(line, file=err)
    print(f"submitted {submitted}, bad lines {len(bad)}", file=out)
    return 1 if bad else 0


# dead letters


def dead_letters(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``list`` the dead letters, or ``requeue`` them (all, or ``--id`` ones)."""
    production = _production(args, _fate(args))
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
                print(f"{letter.entry_id} {what} {letter.kind} attempts={letter.attempts}: "
                      f"{letter.message}", file=out)
            if not args.json:
                print(f"{len(letters)} dead letter(s)", file=err)
            return 0
        ids = args.id or None
        done = production.requeue(ids)
        print(f"requeued {len(done)}", file=out)
        if ids is not None:
            found = {x for letter in done if letter.action is not None
                     for x in (letter.action.id, letter.entry_id)}
            missing = [i for i in ids if i not in found]
            for i in missing:
                print(f"no requeueable dead letter with id {i}", file=err)
            return 1 if missing else 0
        return 0
    finally:
        production.close()


# stats


def stats(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print stream length, pending per consumer, delayed and dead-letter counts."""
    production = _production(args, _fate(args))
    try:
        figures = production.stats()
    finally:
        production.close()
    if args.json:
        print(msgspec.json.encode(figures).decode(), file=out)
        return 0
    print(f"stream {figures.stream} (group {figures.group}): {figures.length} entries, "
          f"{figures.pending} pending, {figures.delayed} delayed, "
          f"{figures.dead_letters} dead letters", file=out)
    for consumer in figures.consumers:
        print(f"  {consumer.name}: {consumer.pending} pending, idle {consumer.idle_ms} ms",
              file=out)
    return 0


# argument parsing


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL",
                        help=f"redis:// URL (default: ${REDIS_URL_ENV})")
    parser.add_argument("--stream", default="echo", help="stream name (default: echo)")
    parser.add_argument("--group", default="echo", help="consumer group (default: echo)")
    parser.add_argument("--config", metavar="TOML", help="a Fate file ([echo] table or top level)")


def add_redis_commands(commands: Any) -> None:
    """Add ``worker``, ``submit``, ``dead-letters`` and ``stats`` to a subparsers object."""
    run = commands.add_parser("worker", help="execute actions from a Redis stream until stopped")
    run.add_argument("plan", metavar="MODULE:PLAN", help="where the Plan is (module or .py path)")
    _common(run)
    run.add_argument("--sites", type=int, help="number of Sites (default: Fate's)")
    run.add_argument("--runtime", choices=["thread", "gevent"], help="actor runtime")
    run.add_argument("--consumer", help="consumer name (default: HOST-PID)")
    run.add_argument("--batch", type=int, default=128, help="entries per read (default: 128)")
    run.add_argument("--read-ahead", type=int, default=256,
                     help="most unacknowledged actions this worker holds; lower it for long "
                     "actions, so that idle workers get them (default: 256)")
    run.add_argument("--visibility-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="idle time before others claim a silent worker's entries (default: 30)")
    run.add_argument("--grace", type=float, metavar="SECONDS",
                     help="on SIGTERM, most seconds to wait for running actions (default: all)")
    run.set_defaults(handler=worker)

    send = commands.add_parser("submit", help="add JSON-lines actions to a Redis stream")
    send.add_argument("file", metavar="FILE", nargs="?", default="-",
                      help="one JSON-encoded Action per line ('-' or absent: stdin)")
    _common(send)
    send.set_defaults(handler=submit)

    dead = commands.add_parser("dead-letters", help="list or requeue the dead letters")
    dead.add_argument("action", choices=["list", "requeue"])
    _common(dead)
    dead.add_argument("--id", action="append", metavar="ID",
                      help="requeue only this action id or dead entry id (repeatable)")
    dead.add_argument("--limit", type=int, help="list at most this many")
    dead.add_argument("--json", action="store_true", help="one JSON object per line")
    dead.set_defaults(handler=dead_letters)

    figures = commands.add_parser("stats", help="stream, pending, delayed and dead-letter counts")
    _common(figures)
    figures.add_argument("--json", action="store_true", help="print as JSON")
    figures.set_defaults(handler=stats)
