# SPDX-License-Identifier: MIT
"""The ``echo-actors`` entry point: options, logging, and one exit status per outcome."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import IO

from echo_actors import __version__
from echo_actors.cli import _admin, _dashboard, _run, _submit, _worker
from echo_actors.cli._common import EXIT_CODES, CommandError, Exit, HelpFormatter
from echo_actors.cli._output import LEVELS, configure_logging, silence

__all__ = ["main"]

DESCRIPTION = """\
Execute echo_actors actions from the command line: a JSON-lines file in this
process (run), or a Redis stream shared by workers on many machines (worker,
submit, dead-letters, stats). Each command has its own --help."""

EPILOG = f"""\
examples:
  echo-actors run examples/quickstart.py:plan examples/actions.jsonl
  echo-actors run plan.py:plan actions.jsonl --json --log-level info
  export ECHO_REDIS_URL=redis://127.0.0.1:6379/0
  echo-actors worker examples/quickstart.py:plan --sites 4 &
  echo-actors submit examples/actions.jsonl
  echo-actors stats
  echo-actors dead-letters list
  echo-actors dashboard

configuration: Fate settings come from --config TOML, then ECHO_* variables
(ECHO_MAX_ATTEMPTS=5, ECHO_LICENSE_KEYS=new,old), then the command's options.

{EXIT_CODES}"""


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (SUPPRESS: a later parser keeps the value)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    group.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS,
                       help="least level of log events shown on stderr (default: warning)")
    group.add_argument("--log-format", choices=["console", "json"], default=argparse.SUPPRESS,
                       help="log events as console lines or one JSON object per line "
                       "(default: console)")
    group.add_argument("--version", action="version", version=f"echo-actors {__version__}",
                       help="print the version and exit")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global options and every command."""
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="echo-actors", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=HelpFormatter, parents=[common],
    )
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND",
                                     title="commands")
    _run.add_command(commands, [common])
    _worker.add_command(commands, [common])
    _submit.add_command(commands, [common])
    _admin.add_commands(commands, [common])
    _dashboard.add_command(commands, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``echo-actors`` command; returns its exit status (see ``--help``)."""
    try:
        return _main(argv, sys.stdout, sys.stderr)
    except BrokenPipeError:  # the reader of our output went away: end without a word
        silence()
        return Exit.CLOSED
    except KeyboardInterrupt:  # before a command took over Ctrl-C (e.g. importing the plan)
        with contextlib.suppress(OSError, ValueError):
            print("\necho-actors: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED


def _main(argv: Sequence[str] | None, out: IO[str], err: IO[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: a usage error (2), or --help/--version (0)
        return exit_.code if isinstance(exit_.code, int) else Exit.USAGE
    undo = configure_logging(getattr(args, "log_level", "warning"),
                             getattr(args, "log_format", "console"), err)
    try:
        prepare = getattr(args, "prepare", None)
        if prepare is not None:
            prepare(args)  # a gevent worker patches the process before redis is imported
        status: int = args.command(args, out, err)
        return status
    except CommandError as exc:
        return _refuse(args.name, str(exc), err)
    except BrokenPipeError:  # not a mistake: main ends quietly
        raise
    except OSError as exc:  # a file, a socket: say which and why
        if exc.filename is not None:
            return _refuse(args.name, f"{exc.filename}: {exc.strerror or exc}", err)
        return _refuse(args.name, str(exc) or type(exc).__name__, err)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] == "redis":  # no server, refused, auth...
            return _refuse(args.name, f"Redis: {exc}", err)
        raise
    finally:
        undo()


def _refuse(command: str, message: str, err: IO[str]) -> int:
    print(f"echo-actors {command}: error: {message}", file=err, flush=True)
    return Exit.USAGE
