# SPDX-License-Identifier: MIT
"""The Lua scripts that make each multi-key step atomic, read from the ``lua/`` files
shipped with the package (each file says what its keys and arguments are)."""

from __future__ import annotations

from importlib.resources import files

__all__ = [
    "BEAT", "CLAIM", "COMPLETE", "LEAVE", "MOVE", "PARK", "RELEASE", "REQUEUE", "TOUCH",
    "WORKERS",
]


def _load(name: str) -> str:
    return files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


BEAT = _load("beat")
"""Stamps a worker's heartbeat and description (or forgets it when it leaves)."""
CLAIM = _load("claim")
"""Records a license nonce for one admission."""
COMPLETE = _load("complete")
"""Ends completed attempts: acknowledgement, result, ``next`` and completion mark."""
LEAVE = _load("leave")
"""Leaves the consumer group when nothing is pending on this consumer."""
MOVE = _load("move")
"""Moves due delayed actions back to the stream."""
PARK = _load("park")
"""Parks actions in the sorted set until due and acknowledges their entries."""
RELEASE = _load("release")
"""Gives entries back: acknowledged and added anew."""
REQUEUE = _load("requeue")
"""Requeues dead letters, each by one requeuer only."""
TOUCH = _load("touch")
"""Resets the idle time of the entries this consumer still holds."""
WORKERS = _load("workers")
"""Lists the live workers and forgets the silent ones."""
