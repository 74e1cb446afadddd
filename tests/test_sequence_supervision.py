# SPDX-License-Identifier: MIT
"""A Sequence under supervision: Sites, the dispatcher and Life come back, work is kept."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from echo_actors import Action, CrashError, Fate, Plan, Sequence, Signature
from echo_actors._messages import Done
from echo_actors.runtime import Runtime
from echo_actors.supervision import ChildSpec, start_supervisor

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def _gated_plan(gate: threading.Event) -> Plan:
    def work(n: int) -> int:
        assert gate.wait(10), "gate never opened"
        return n + 1

    return Plan().with_signature(Signature("Work")).with_function("Work", work).build()


def _child(sequence: Sequence, name: str) -> object:
    assert sequence.supervisor is not None
    info = next(c for c in sequence.supervisor.which_children() if c.name == name)
    return info


def test_site_stopped_from_outside_is_restarted_and_its_work_kept() -> None:
    """Stopping a Site by hand: it is restarted and what it held still completes."""
    gate = threading.Event()
    with Sequence(_gated_plan(gate), sites=1) as sequence:
        futures = [sequence.submit(Action("Work", n)) for n in range(50)]
        site = _child(sequence, "site-0").ref  # type: ignore[attr-defined]
        site.stop(block=False)  # queued behind the batches it holds: those are put back
        gate.set()
        assert [f.get(timeout=20) for f in futures] == [n + 1 for n in range(50)]
        assert sequence.join(timeout=10)
        stats = sequence.stats()
    assert stats.completed == 50 and stats.outstanding == 0
    assert sum(s.restarts for s in stats.sites) >= 1


def test_dispatcher_crash_is_survived() -> None:
    """A crashed dispatcher is restarted on the same queues: every action completes."""
    gate = threading.Event()
    with Sequence(_gated_plan(gate), sites=2) as sequence:
        futures = [sequence.submit(Action("Work", n)) for n in range(200)]
        old = sequence._core.dispatcher  # type: ignore[union-attr]
        assert old is not None
        old.tell(Done(site=99, count=1, failed=0, busy=0.0))  # IndexError: a crash
        gate.set()
        assert [f.get(timeout=20) for f in futures] == [n + 1 for n in range(200)]
        assert sequence.join(timeout=10)
        info = _child(sequence, "dispatcher")
        assert info.restarts == 1  # type: ignore[attr-defined]
        assert sequence.stats().completed == 200


def test_life_restarts_with_its_hooks() -> None:
    """Life's actor crashes: the supervisor restarts it and its hooks are still there."""
    seen: list[int] = []
    plan = Plan().with_signature(Signature("Work")).with_function("Work", lambda n: n).build()
    with Sequence(plan, sites=1) as sequence:
        sequence.life.register_hook("seen", lambda action: seen.append(action.content))
        sequence.life.actor_ref.tell("crash-me")  # unknown message: logged, not a crash
        life_ref = sequence.life.actor_ref
        assert sequence.submit(Action("Work", 1, hooks=("seen",))).get(timeout=10) == 1
        life_ref.stop(block=True)  # stopped from outside: permanent child, restarted
        assert sequence.life.hooks() == ["seen"]
        assert sequence.submit(Action("Work", 2, hooks=("seen",))).get(timeout=10) == 2
    assert seen == [1, 2]


def test_sequence_joins_a_parent_tree() -> None:
    """With parent=, the Sequence's supervisor is a child of the application's tree."""
    root = start_supervisor([ChildSpec("spare", _Spare)], name="root")
    try:
        plan = Plan().with_signature(Signature("Work")).with_function("Work", lambda n: n).build()
        with Sequence(plan, sites=2, parent=root, name="orders") as sequence:
            names = [c.name for c in root.which_children()]
            assert names == ["spare", "orders"]
            assert sequence.submit(Action("Work", 7)).get(timeout=10) == 7
            tree = root.tree()
            orders = next(c for c in tree if c.name == "orders")
            assert [c.name for c in orders.children or []] == [
                "life", "dispatcher", "site-0", "site-1",
            ]
        assert [c.name for c in root.which_children()] == ["spare"]
    finally:
        root.stop()


def test_supervision_example_runs() -> None:
    """examples/supervision_tree.py runs and shows the restarts in its tree."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "supervision_tree.py")],
        capture_output=True, text=True, timeout=50, check=True,
    ).stdout
    assert "delivered order-1 after 2 attempts" in out
    after = out.split("after:")[1]
    assert "counter [worker] running, restarts=1" in after
    assert "fragile [supervisor] running, restarts=1" in after
    assert "site-0 [worker] running, restarts=1" in after


def test_a_function_that_always_crashes_its_site_ends_as_a_dead_letter(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """A poison action crashes its Site on every attempt: each crash counts, then a dead letter."""
    calls: list[int] = []

    def poison(n: int) -> int:
        calls.append(n)
        raise CrashError(f"poison {n}")

    plan = (
        Plan()
        .with_signature(Signature("Poison")).with_function("Poison", poison)
        .with_signature(Signature("Echo")).with_function("Echo", lambda x: x)
        .build()
    )
    fate = Fate(max_attempts=2, backoff_base=0.001, backoff_cap=0.01)
    sequence = make_sequence(plan, sites=2, fate=fate, runtime=every_runtime)
    future = sequence.submit(Action("Poison", 7))
    with pytest.raises(CrashError):
        future.get(timeout=5.0)
    assert calls == [7, 7]
    [letter] = sequence.dead_letters()
    assert (letter.error_kind, letter.attempts, letter.action.content) == ("crash", 2, 7)
    assert sequence.submit(Action("Echo", "alive")).get(timeout=5.0) == "alive"
    assert sequence.join(5.0)
    stats = sequence.stats()
    assert (stats.crash_requeued, stats.dead_lettered, stats.completed) == (1, 1, 1)
    assert sum(site.restarts for site in stats.sites) == 2


class _Spare(__import__("pykka").Actor):
    """A user's actor sitting beside the Sequence in the tree."""
