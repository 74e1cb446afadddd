# SPDX-License-Identifier: MIT
"""Chaos: Sites crash under load, their supervisor restarts them, nothing is lost.

Whether an execution crashes is a function of (seed, action, attempt), so each
seed's outcome is known before the run, whatever the interleaving: which actions
end as dead letters, how many crashes, requeues and restarts. Every 1,000th
action crashes on every attempt, so each run has dead letters to check.
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Callable
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
from echo_actors.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

ACTIONS = 10_000
ATTEMPTS = 3
RATE = 5  # per cent of executions that crash their Site
POISON = 1_000  # every POISON-th action crashes on every attempt


def _crashes(seed: int, n: int, attempt: int) -> bool:
    """Whether action ``n``'s ``attempt`` crashes its Site (the same in every run)."""
    if n % POISON == POISON - 1:
        return True
    return zlib.crc32(f"{seed}:{n}:{attempt}".encode()) % 100 < RATE


def _expected(seed: int) -> tuple[set[int], int]:
    """The actions that end as dead letters, and how many executions crash in all."""
    dead: set[int] = set()
    crashes = 0
    for n in range(ACTIONS):
        attempt = 1
        while _crashes(seed, n, attempt):
            crashes += 1
            if attempt == ATTEMPTS:
                dead.add(n)
                break
            attempt += 1
    return dead, crashes


class _Ledger:
    def __init__(self, restarted: Any, starts: int) -> None:
        self.lock = threading.Lock()
        self.ran: Counter[int] = Counter()
        self.crashes = 0
        self.starts = 0
        self.expected_starts = starts
        self.restarted = restarted  # set once every crashed Site was started again


def _crashy_site(ledger: _Ledger, seed: int) -> type[Site]:
    class CrashySite(Site):
        def on_start(self) -> None:
            super().on_start()
            with ledger.lock:
                ledger.starts += 1
                if ledger.starts == ledger.expected_starts:
                    ledger.restarted.set()

        def receive(self, action: Action, life: Life) -> Any:
            if _crashes(seed, action.content, action.attempt):
                with ledger.lock:
                    ledger.crashes += 1
                raise CrashError(f"chaos on site {self.site_index}")
            return super().receive(action, life)

    return CrashySite


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashing_sites_lose_nothing(
    seed: int, every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """10,000 actions, about 5 % of executions crash their Site: each ends exactly once."""
    expected_dead, expected_crashes = _expected(seed)
    assert len(expected_dead) >= ACTIONS // POISON  # the check below is never vacuous
    ledger = _Ledger(every_runtime.event(), starts=4 + expected_crashes)

    def work(n: int) -> int:
        with ledger.lock:
            ledger.ran[n] += 1
        return n * 2

    plan = Plan().with_signature(Signature("Work")).with_function("Work", work).build()
    fate = Fate(max_attempts=ATTEMPTS, max_restarts=1_000_000, restart_within=1.0)
    with capture_events() as logs:
        sequence = make_sequence(
            plan, site=_crashy_site(ledger, seed), sites=4, fate=fate, runtime=every_runtime,
            start=False,
        )
        with sequence:
            futures = sequence.submit_many([Action("Work", n) for n in range(ACTIONS)])
            dead_futures: set[int] = set()
            for n, future in enumerate(futures):
                try:
                    assert future.get(timeout=60) == n * 2
                except CrashError:
                    dead_futures.add(n)
            assert sequence.join(timeout=30)
            # A crashed Site's exit reaches the dispatcher before its successor starts, and
            # the last crash may end its action before that: wait for every restart.
            assert ledger.restarted.wait(30)
            stats = sequence.stats()
            dead = sequence.dead_letters()

    assert dead_futures == expected_dead
    assert sorted(letter.action.content for letter in dead) == sorted(expected_dead)
    assert {(letter.error_kind, letter.attempts) for letter in dead} == {("crash", ATTEMPTS)}
    assert ledger.crashes == expected_crashes
    assert (stats.completed, stats.dead_lettered) == (ACTIONS - len(expected_dead),
                                                      len(expected_dead))
    assert (stats.outstanding, stats.cancelled, stats.retried) == (0, 0, 0)
    # A crash happens before the function runs: every completed action ran exactly once,
    # every dead-lettered one never did.
    assert ledger.ran == Counter({n: 1 for n in range(ACTIONS) if n not in expected_dead})
    # Every crash was one attempt of one action: requeued, or its last attempt.
    assert stats.crash_requeued == expected_crashes - len(expected_dead)
    assert sum(site.restarts for site in stats.sites) == expected_crashes
    crashed = [e for e in logs if e["event"] == "child_crashed"]
    assert len(crashed) == expected_crashes
