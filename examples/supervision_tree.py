# SPDX-License-Identifier: MIT
"""A supervision tree: a root supervisor over a Sequence's own supervisor and a
user's actors. Children crash and are restarted; one branch exceeds its restart
intensity and escalates to the root, which restarts that branch whole.

Run it:   python examples/supervision_tree.py
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka

from echo_actors import Action, CrashError, Plan, Sequence, Signature
from echo_actors.supervision import ChildInfo, ChildSpec, start_supervisor, supervisor_spec


class Counter(pykka.Actor):
    """A user's actor with state: it counts what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("the counter was asked to crash")
        self.count += 1
        return self.count


def show(title: str, children: list[ChildInfo], depth: int = 0) -> None:
    """Print a tree of ChildInfo, one child per line."""
    if depth == 0:
        print(title)
    for child in children:
        kind = "supervisor" if child.supervisor else "worker"
        print(f"{'    ' * (depth + 1)}{child.name} [{kind}] {child.state}, "
              f"restarts={child.restarts}")
        show(title, child.children or [], depth + 1)


def main() -> None:
    # The application decides what is logged: the library's supervision events (on
    # stderr, with their fields), without pykka's tracebacks.
    logging.basicConfig(format="%(levelname)-8s %(name)s %(message)s",
                        level=logging.WARNING)
    logging.getLogger("echo_actors.supervision").setLevel(logging.INFO)
    logging.getLogger("pykka").setLevel(logging.CRITICAL)
    started = threading.Event()
    root = start_supervisor(
        [
            ChildSpec("counter", Counter),
            supervisor_spec(
                "fragile", [ChildSpec("worker", Counter, on_start=lambda _: started.set())],
                max_restarts=2, within=60.0,
            ),
        ],
        "one_for_one", max_restarts=10, within=60.0, name="root",
    )

    attempts: list[int] = []

    def deliver(order: str) -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:  # the first try breaks the Site itself, not just the action
            raise CrashError("the site lost its connection")
        return f"delivered {order}"

    plan = Plan().with_signature(Signature("Deliver")).with_function("Deliver", deliver).build()
    with Sequence(plan, sites=2, parent=root, name="orders") as sequence:
        show("before:", root.tree())

        counter = next(c for c in root.which_children() if c.name == "counter").ref
        assert counter is not None
        counter.tell("crash")  # a user's actor crashes: one_for_one restarts it

        result = sequence.submit(Action("Deliver", "order-1")).get(timeout=10)
        print(f"{result} after {len(attempts)} attempts (the Site crashed once)")

        # The fragile branch allows 2 restarts: the third crash escalates to the root.
        for _ in range(3):
            fragile = next(c for c in root.tree() if c.name == "fragile")
            worker = (fragile.children or [])[0].ref
            started.clear()
            if worker is not None:
                worker.tell("crash")
            started.wait(timeout=10)
        sequence.join(timeout=10)
        show("after:", root.tree())
    root.stop()


if __name__ == "__main__":
    main()
