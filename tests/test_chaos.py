# SPDX-License-Identifier: MIT
"""Chaos: Sites crash under load, their supervisor restarts them, nothing is lost."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest
from logs import capture_events

from echo_actors import (
    Action,
    CrashError,
    Fate,
    Life,
    Plan,
    Sequence,
    Signature,
    Site,
)

pytestmark = pytest.mark.timeout(120)

ACTIONS = 10_000


class _Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: Counter[int] = Counter()
        self.crashes = 0


def _crashy_site(ledger: _Ledger, rate: float, seed: int) -> type[Site]:
    rng = random.Random(seed)

    class CrashySite(Site):
        def receive(self, action: Action, life: Life) -> Any:
            with ledger.lock:
                crash = rng.random() < rate
                if crash:
                    ledger.crashes += 1
            if crash:
                raise CrashError(f"chaos on site {self.site_index}")
            return super().receive(action, life)

    return CrashySite


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashing_sites_lose_nothing(seed: int) -> None:
    """10,000 actions, 5 % of executions crash their Site: each ends exactly once."""
    ledger = _Ledger()

    def work(n: int) -> int:
        with ledger.lock:
            ledger.ran[n] += 1
        return n * 2

    plan = Plan().with_signature(Signature("Work")).with_function("Work", work).build()
    fate = Fate(max_attempts=3, max_restarts=1_000_000, restart_within=1.0)
    with capture_events() as logs:
        sequence = Sequence(plan, site=_crashy_site(ledger, 0.05, seed), sites=4, fate=fate)
        with sequence:
            futures = [sequence.submit(Action("Work", n)) for n in range(ACTIONS)]
            outcomes: Counter[str] = Counter()
            for n, future in enumerate(futures):
                try:
                    assert future.get(timeout=60) == n * 2
                    outcomes["completed"] += 1
                except CrashError:
                    outcomes["dead"] += 1
            assert sequence.join(timeout=30)
            stats = sequence.stats()
            dead = sequence.dead_letters()

    assert ledger.crashes > 0
    assert outcomes["completed"] + outcomes["dead"] == ACTIONS
    assert stats.completed == outcomes["completed"]
    assert stats.dead_lettered == outcomes["dead"] == len(dead)
    assert stats.outstanding == 0 and stats.cancelled == 0
    # A crash happens before the function runs: every completed action ran exactly once,
    # every dead-lettered one never did.
    dead_numbers = {letter.action.content for letter in dead}
    assert all(ledger.ran[n] == 1 for n in range(ACTIONS) if n not in dead_numbers)
    assert all(ledger.ran[n] == 0 for n in dead_numbers)
    assert all(letter.error_kind == "crash" and letter.attempts == 3 for letter in dead)
    # Every crash was one attempt of one action: requeued, or its last attempt.
    assert stats.crash_requeued + len(dead) == ledger.crashes
    restarts = sum(site.restarts for site in stats.sites)
    assert restarts == ledger.crashes
    crashed = [e for e in logs if e["event"] == "child_crashed"]
    assert len(crashed) == ledger.crashes
