# SPDX-License-Identifier: MIT
"""Echo's Read/Write example on real temporary files.

Writes a few files through "Write" actions, reads them back through "Read" actions
chained to a "Count" action that receives what was read, and shows what a missing
file does (retried, then dead-lettered).

Run it:   python examples/file_io.py
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import msgspec

from echo_actors import Action, Fate, Life, Plan, Sequence, Signature


class WriteRequest(msgspec.Struct):
    """Where to write, and what."""

    path: str
    text: str


def write(request: WriteRequest) -> int:
    """Write the text; the result is the number of bytes written."""
    return Path(request.path).write_text(request.text, encoding="utf-8")


def read(path: str) -> str:
    """Read a whole file (a missing one raises: retried, then dead-lettered)."""
    return Path(path).read_text(encoding="utf-8")


def count(text: str) -> int:
    """Count the words of what a Read action returned."""
    return len(text.split())


plan = (
    Plan()
    .with_signature(Signature("Write", content_type=WriteRequest))
    .with_function("Write", write)
    .with_signature(Signature("Read", content_type=str))
    .with_function("Read", read)
    .with_signature(Signature("Count", content_type=str))
    .with_function("Count", count)
    .build()
)

TEXTS = {
    "echo.txt": "Echo is a Rust library for asynchronous action processing",
    "actors.txt": "each Site is an actor with its own mailbox",
    "karma.txt": "named productions live in Life",
}


def main() -> None:
    counted: dict[str, int] = {}
    done = threading.Event()
    life = Life()

    def collect(action: Action, result: Any) -> None:
        counted[action.metadata["file"]] = result
        if len(counted) == len(TEXTS):
            done.set()

    life.register_hook("collect", collect)
    fate = Fate(max_attempts=2, backoff_base=0.01)
    with tempfile.TemporaryDirectory() as folder, Sequence(plan, life=life, fate=fate) as sequence:
        paths = {name: str(Path(folder) / name) for name in TEXTS}
        writes = [
            sequence.submit(Action("Write", {"path": paths[name], "text": text}))
            for name, text in TEXTS.items()
        ]
        for name, future in zip(TEXTS, writes, strict=True):
            print(f"wrote {future.get(timeout=5)} bytes to {name}")

        for name in TEXTS:
            count_words = Action("Count", after=("collect",), metadata={"file": name})
            text = sequence.submit(Action("Read", paths[name], next=count_words)).get(timeout=5)
            print(f"read {name}: {text!r}")
        done.wait(timeout=5)
        for name, words in counted.items():
            print(f"{name} has {words} words")

        missing = sequence.submit(Action("Read", str(Path(folder) / "missing.txt")))
        try:
            missing.get(timeout=5)
        except Exception as error:  # noqa: BLE001 - shown, not handled
            print(f"missing.txt: {type(error).__name__}: {error}")
        letter = sequence.dead_letters()[0]
        print(f"dead letter: {letter.error_kind} after {letter.attempts} attempts")
    life.stop()


if __name__ == "__main__":
    main()
