# SPDX-License-Identifier: MIT
"""The work-stealing dispatcher under concurrent load."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from echo_actors import Action, Fate, Life, Plan, Sequence, Signature, Site
from echo_actors.runtime import Runtime

LIMIT = 10.0

pytestmark = pytest.mark.timeout(120)


def test_eight_threads_of_5000_while_sites_steal() -> None:
    """8 threads x 5,000 actions, mostly on one hot key: all run exactly once, with steals."""
    lock = threading.Lock()
    runs: Counter[str] = Counter()
    hot_on: Counter[int] = Counter()  # hot-key executions per Site index

    class CountingSite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            with lock:
                runs[action.id] += 1
                if action.key == "hot":
                    hot_on[self.site_index] += 1
            return super().receive(action, life)

    plan = Plan().with_signature(Signature("Echo")).with_function("Echo", lambda c: c).build()
    barrier = threading.Barrier(8)
    with Sequence(plan, site=CountingSite, sites=4, fate=Fate(mailbox_window=8)) as sequence:

        def produce(t: int) -> list[tuple[str, Any, Any]]:
            barrier.wait(10)
            submitted = []
            for i in range(5_000):
                # Three in four share one key: queued behind one Site, for the others to steal.
                action = Action("Echo", [t, i], key="hot" if i % 4 else f"k{t}-{i}")
                submitted.append((action.id, action.content, sequence.submit(action)))
            return [(aid, content, f.get(timeout=60)) for aid, content, f in submitted]

        with ThreadPoolExecutor(8) as pool:
            outcomes = [row for rows in pool.map(produce, range(8)) for row in rows]
        assert sequence.join(timeout=30)
        stats = sequence.stats()

    assert len(outcomes) == 40_000
    assert all(result == content for _, content, result in outcomes)
    assert len(runs) == 40_000 and set(runs.values()) == {1}
    assert stats.completed == stats.accepted == 40_000 and stats.outstanding == 0
    assert sum(site.processed for site in stats.sites) == 40_000
    # The hot key routes to one Site; any other Site ran hot actions only by stealing them.
    assert sum(hot_on.values()) == 30_000
    assert len(hot_on) > 1, "no hot action ran anywhere but on its key's Site"
    assert sum(1 for s in stats.sites if hot_on[s.site] > s.steals_in) <= 1
    assert all(site.depth == 0 for site in stats.sites)


def test_idle_site_steals_from_a_busy_sites_mailbox(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """One Site blocked with work queued in its mailbox: the idle Site runs all that work."""
    rt = every_runtime
    started = {"key": rt.event(), "other": rt.event()}
    gates = {"key": rt.event(), "other": rt.event()}
    where: dict[Any, int] = {}

    class WhereSite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            where[action.content] = self.site_index
            return super().receive(action, life)

    def hold(name: str) -> str:
        started[name].set()
        assert gates[name].wait(LIMIT), "gate never opened"
        return name

    plan = (
        Plan()
        .with_signature(Signature("Hold")).with_function("Hold", hold)
        .with_signature(Signature("Quick")).with_function("Quick", lambda n: n)
        .build()
    )
    sequence = make_sequence(
        plan, site=WhereSite, sites=2, fate=Fate(mailbox_window=4), runtime=rt
    )
    blocker = sequence.submit(Action("Hold", "key", key="k"))
    assert started["key"].wait(LIMIT)
    other = sequence.submit(Action("Hold", "other"))  # unkeyed: to the shallower, idle Site
    assert started["other"].wait(LIMIT)
    busy, idle = where["key"], where["other"]
    assert busy != idle
    quick = sequence.submit_many([Action("Quick", n) for n in range(6)])
    stats = sequence.stats()  # answered after the dispatcher handled the submit
    # Nothing waits outside the Sites' mailboxes, and some waits behind the blocker:
    # only stealing from a mailbox lets the idle Site run that.
    assert stats.queued == 0
    assert [s.backlog for s in stats.sites] == [0, 0]
    assert stats.sites[busy].depth > 1
    try:
        gates["other"].set()
        assert other.get(timeout=LIMIT) == "other"
        # The blocker still holds its Site: every Quick ran on the idle one.
        assert [f.get(timeout=5.0) for f in quick] == list(range(6))
        assert {where[n] for n in range(6)} == {idle}
    finally:
        gates["key"].set()
    assert blocker.get(timeout=LIMIT) == "key"
    assert sequence.join(LIMIT)
    sites = sequence.stats().sites
    stolen = sites[idle].steals_in
    assert stolen > 0 and sites[busy].steals_out == stolen
    assert (sites[idle].processed, sites[busy].processed) == (7, 1)
