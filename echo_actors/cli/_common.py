# SPDX-License-Identifier: MIT
"""What every command shares: exit statuses, the user-mistake error, option types, help layout."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from echo_actors.fate import Fate

__all__ = [
    "EXIT_CODES",
    "CommandError",
    "Exit",
    "HelpFormatter",
    "at_least",
    "load_fate",
    "positive_seconds",
]


class Exit(IntEnum):
    """The exit statuses of ``echo-actors`` (listed in every command's ``--help``)."""

    OK = 0
    """Everything read was done."""
    FAILED = 1
    """Some actions were dead-lettered, some lines were bad, or some ids were not found."""
    USAGE = 2
    """The command could not run: wrong usage, a PLAN, FILE, configuration or server problem."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT); what had not started was not run."""
    CLOSED = 141
    """The output was closed (``| head``); stopped as on Ctrl-C, without a word."""


EXIT_CODES = """\
exit status:
  0    everything read was done
  1    some actions were dead-lettered, some lines were bad, or some ids were not found
  2    could not run: usage, PLAN, FILE, configuration or Redis server problem
  130  interrupted (Ctrl-C): the summary says what was done
  141  the output was closed (e.g. piped into head): stopped quietly"""


class CommandError(ValueError):
    """A user's mistake the command reports in one line and exits 2 for (no traceback)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples and exit statuses in descriptions and epilogs as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``, with a message saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def load_fate(config: str | None, **overrides: Any) -> Fate:
    """Fate from ``--config`` and ``ECHO_*`` (the only place the CLI reads them), then options.

    Raises:
        CommandError: the file cannot be read, or a setting is wrong (named).
    """
    try:
        return Fate.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read --config {config}: {exc.strerror or exc}") from None
