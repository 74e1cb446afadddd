# SPDX-License-Identifier: MIT
"""Echo's README usage example in Python: a "Read" action, a plan, a production,
a life, a simple site and a sequence.

Run it:   python examples/quickstart.py
Or feed its plan a file of actions:
          echo-actors run examples/quickstart.py:plan examples/actions.jsonl
"""

from __future__ import annotations

from typing import Any

import msgspec

from echo_actors import Action, Life, Plan, Production, Sequence, Signature, Site


class ReadRequest(msgspec.Struct):
    """What a Read action carries: the path to read, and how much of it."""

    path: str
    limit: int = 80


def read(request: ReadRequest) -> str:
    """The action's logic: here it pretends, see file_io.py for real files."""
    return f"read {request.limit} bytes of {request.path}"


plan = (
    Plan()
    .with_signature(Signature("Read", content_type=ReadRequest))
    .with_function("Read", read)
    .build()
)


class SimpleSite(Site):
    """A Site that says what it receives, then executes it as usual."""

    def receive(self, action: Action, life: Life) -> Any:
        print(f"site {self.site_index} received {action.name} {action.content}")
        return super().receive(action, life)


def main() -> None:
    life = Life()
    life.register_hook("audit", lambda action: print(f"audit: {action.name} #{action.id}"))
    production = Production()
    with Sequence(plan, production, life, SimpleSite, sites=2) as sequence:
        action = Action("Read", {"path": "/etc/hostname"}, hooks=("audit",))
        print(sequence.submit(action).get(timeout=5))

        production.assign(Action("Read", {"path": "README.md", "limit": 10}))
        try:
            sequence.submit(Action("Read", {"limit": 3})).get(timeout=5)
        except Exception as error:  # noqa: BLE001 - shown, not handled
            print(f"refused: {type(error).__name__}: {error}")
        sequence.join(timeout=5)
        stats = sequence.stats()
    print(f"completed {stats.completed}, dead-lettered {stats.dead_lettered}")


if __name__ == "__main__":
    main()
