# SPDX-License-Identifier: MIT
"""JSON-lines input: one action per line, each bad line reported with its number and skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from echo_actors.action import Action
from echo_actors.cli._common import CommandError
from echo_actors.errors import EchoError

__all__ = ["LINE_ERRORS", "BadLines", "open_input", "read_actions"]

LINE_ERRORS = (EchoError, ValueError, TypeError, OverflowError, RecursionError,
               msgspec.MsgspecError)
"""What decoding or encoding one line may raise: the line is bad, the others go on."""


class BadLines:
    """The bad lines of one input: counted, and described with their numbers."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, number: int, error: BaseException) -> None:
        self.messages.append(f"line {number}: {error}")

    def __len__(self) -> int:
        return len(self.messages)


def open_input(name: str) -> IO[bytes]:
    """The FILE argument opened for reading bytes.

    Raises:
        CommandError: it does not exist, is a directory, or cannot be read.
    """
    path = Path(name)
    if path.is_dir():
        raise CommandError(f"{path} is a directory, not a file of actions")
    if not path.exists():
        raise CommandError(f"no such file: {path}")
    try:
        return path.open("rb")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_actions(
    lines: IO[bytes],
    max_bytes: int,
    bad: BadLines,
) -> Iterator[tuple[int, Action]]:
    """``(line number, action)`` for each good line; blank lines are skipped, bad ones counted."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            action = Action.decode(line, "json", max_bytes=max_bytes)
        except LINE_ERRORS as exc:
            bad.add(number, exc)
            continue
        yield number, action
