# SPDX-License-Identifier: MIT
"""A Sequence under supervision: Sites, the dispatcher and Life come back, work is kept."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from echo_actors import Action, CrashError, Fate, Plan, Production, Sequence, Signature
from echo_actors.runtime import Event, Runtime
from echo_actors.supervision import ChildInfo, ChildSpec, start_supervisor

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def _gated_plan(gate: Event, started: Event | None = None) -> Plan:
    def work(n: int) -> int:
        if started is not None:
            started.set()
        assert gate.wait(10), "gate never opened"
        return n + 1

    return Plan().with_signature(Signature("Work")).with_function("Work", work).build()


def _child(sequence: Sequence, name: str) -> ChildInfo:
    assert sequence.supervisor is not None
    return next(c for c in sequence.supervisor.which_children() if c.name == name)


class _FlakyProduction(Production):
    """An in-memory production whose next ``take`` raises when ``fail_next`` is set."""

    fail_next = False

    def take(self, limit: int) -> list[Any]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the store failed once")
        return super().take(limit)


def test_site_stopped_from_outside_is_restarted_and_its_work_kept(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """Stopping a Site by hand: it is restarted and what it held still completes."""
    gate, started = every_runtime.event(), every_runtime.event()
    sequence = make_sequence(_gated_plan(gate, started), sites=1,
                             fate=Fate(mailbox_window=10), runtime=every_runtime)
    futures = sequence.submit_many([Action("Work", n) for n in range(50)])
    assert started.wait(10)  # the Site runs its first batch of 10, held at the gate
    site = _child(sequence, "site-0").ref
    assert site is not None
    site.stop(block=False)  # after that batch: the next ones reach a stopped Site, put back
    gate.set()
    assert [f.get(timeout=20) for f in futures] == [n + 1 for n in range(50)]
    assert sequence.join(timeout=10)
    stats = sequence.stats()
    assert (stats.completed, stats.outstanding, stats.crash_requeued) == (50, 0, 0)
    assert [s.restarts for s in stats.sites] == [1]
    assert _child(sequence, "site-0").restarts == 1


def test_dispatcher_crash_is_survived(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """The dispatcher crashes (its production failed once): restarted, every action completes."""
    gate = every_runtime.event()
    production = _FlakyProduction()
    sequence = make_sequence(_gated_plan(gate), production, sites=2, runtime=every_runtime)
    production.fail_next = True  # the dispatcher's next take raises
    futures = sequence.submit_many([Action("Work", n) for n in range(200)])
    gate.set()
    assert [f.get(timeout=20) for f in futures] == [n + 1 for n in range(200)]
    assert sequence.join(timeout=10)
    assert not production.fail_next
    assert _child(sequence, "dispatcher").restarts == 1
    assert sequence.stats().completed == 200


def test_life_restarts_with_its_hooks(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """Life's actor is stopped from outside: the supervisor restarts it with its hooks."""
    seen: list[int] = []
    plan = Plan().with_signature(Signature("Work")).with_function("Work", lambda n: n).build()
    sequence = make_sequence(plan, sites=1, runtime=every_runtime)
    sequence.life.register_hook("seen", lambda action: seen.append(action.content))
    sequence.life.actor_ref.tell("crash-me")  # unknown message: logged, not a crash
    life_ref = sequence.life.actor_ref
    assert sequence.submit(Action("Work", 1, hooks=("seen",))).get(timeout=10) == 1
    life_ref.stop(block=True)  # stopped from outside: permanent child, restarted
    assert not life_ref.is_alive() and sequence.life.actor_ref.is_alive()
    assert sequence.life.hooks() == ["seen"]
    assert sequence.submit(Action("Work", 2, hooks=("seen",))).get(timeout=10) == 2
    assert seen == [1, 2]


def test_sequence_joins_a_parent_tree(every_runtime: Runtime) -> None:
    """With parent=, the Sequence's supervisor is a child of the application's tree."""
    root = start_supervisor([ChildSpec("spare", _Spare)], name="root", runtime=every_runtime)
    try:
        plan = Plan().with_signature(Signature("Work")).with_function("Work", lambda n: n).build()
        sequence = Sequence(plan, sites=2, parent=root, name="orders", fate=Fate(),
                            runtime=every_runtime)
        with sequence:
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
    # whichever of the two Sites ran the first attempt crashed once and was restarted
    sites = [line.strip() for line in after.splitlines() if line.strip().startswith("site-")]
    assert sorted(line.rsplit("=", 1)[1] for line in sites) == ["0", "1"]


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


def test_completed_work_of_a_crashed_batch_is_counted(
    make_sequence: Callable[..., Sequence]
) -> None:
    """Two actions complete, the third crashes the Site: the Site's figures count all four."""
    from echo_actors import Life, Site  # noqa: PLC0415 - only this test subclasses Site

    class CrashOnce(Site):
        def receive(self, action: Action, life: Life) -> object:
            if action.content == 2 and action.attempt == 1:
                raise CrashError("crash once")
            return super().receive(action, life)

    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda x: x).build()
    sequence = make_sequence(plan, site=CrashOnce, sites=1, fate=Fate(mailbox_window=4),
                             runtime="simulation")
    futures = sequence.submit_many([Action("Echo", n) for n in range(4)])  # one batch
    assert [f.get(timeout=10) for f in futures] == [0, 1, 2, 3]
    assert sequence.join(10)
    stats = sequence.stats()
    assert (stats.completed, stats.crash_requeued) == (4, 1)
    assert [site.processed for site in stats.sites] == [4]


class _Spare(__import__("pykka").Actor):
    """A user's actor sitting beside the Sequence in the tree."""
