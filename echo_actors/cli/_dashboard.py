# SPDX-License-Identifier: MIT
"""``echo-actors dashboard``: a live page of a Redis stream, its workers and dead letters."""

from __future__ import annotations

import argparse
import os
from typing import IO, Any

from echo_actors.cli._common import EXIT_CODES, CommandError, Exit, HelpFormatter, load_fate
from echo_actors.cli._observe import _port
from echo_actors.cli._redis import add_stream_options, open_production
from echo_actors.cli._signals import Stopping

__all__ = ["add_command", "command"]

TOKEN_ENV = "ECHO_DASHBOARD_TOKEN"  # noqa: S105 - the variable's name, not a secret

DESCRIPTION = f"""\
Serve a live page of a Redis stream on 127.0.0.1: entries waiting, pending and
not yet read, delayed, the workers (consumers) with their pending entries and
when each was last heard from, and the dead letters with their errors and a
Requeue button. Each worker's own figures (Sites, run times) are on its
--metrics-port. Runs until Ctrl-C or SIGTERM.

Off loopback (--host) it needs --allow-remote and a token (--token or
${TOKEN_ENV}), which the browser asks for as the password."""

EPILOG = f"""\
examples:
  export ECHO_REDIS_URL=redis://127.0.0.1:6379/0
  echo-actors dashboard --port 8640
  ECHO_DASHBOARD_TOKEN=s3cret echo-actors dashboard --host 0.0.0.0 --allow-remote

{EXIT_CODES}"""


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the subcommands."""
    page = commands.add_parser(
        "dashboard", parents=parents, formatter_class=HelpFormatter, description=DESCRIPTION,
        epilog=EPILOG, help="a live page of a Redis stream, its workers and dead letters",
    )
    add_stream_options(page)
    page.add_argument("--port", type=_port, default=8640, metavar="PORT",
                      help="port to serve on (default: 8640; 0 picks a free one)")
    page.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (default: 127.0.0.1)")
    page.add_argument("--allow-remote", action="store_true",
                      help="allow a --host other than loopback (needs a token)")
    page.add_argument("--token", help=f"the password off loopback (default: ${TOKEN_ENV})")
    page.set_defaults(command=command)


def command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Serve until a signal."""
    from echo_actors import dashboard  # noqa: PLC0415

    production = open_production(args, load_fate(args.config))
    try:
        try:
            board = dashboard.serve(production, args.port, args.host,
                                    token=args.token or os.environ.get(TOKEN_ENV),
                                    allow_remote=args.allow_remote)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            print(f"echo-actors dashboard: {board.url} ({production.stream}, group "
                  f"{production.group}); Ctrl-C to stop", file=err, flush=True)
            with Stopping() as stopping:
                while not stopping.requested.wait(1.0):  # timed: signal handlers run between
                    pass
        finally:
            board.close()
    finally:
        production.close()
    return Exit.OK
