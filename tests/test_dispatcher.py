# SPDX-License-Identifier: MIT
"""The work-stealing dispatcher under concurrent load."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from echo_actors import Action, Fate, Life, Plan, Sequence, Signature, Site

pytestmark = pytest.mark.timeout(120)


def test_eight_threads_of_5000_while_sites_steal() -> None:
    """8 threads x 5,000 actions, mostly on one hot key: all run exactly once, with steals."""
    lock = threading.Lock()
    runs: Counter[str] = Counter()

    class CountingSite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            with lock:
                runs[action.id] += 1
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
    assert sum(site.steals_in for site in stats.sites) > 0
    assert sum(site.steals_in for site in stats.sites) == sum(s.steals_out for s in stats.sites)
    assert sum(site.processed for site in stats.sites) == 40_000
    assert all(site.depth == 0 for site in stats.sites)
