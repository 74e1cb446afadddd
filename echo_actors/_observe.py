# SPDX-License-Identifier: MIT
"""Recorder: per-name outcome counts and per-Site timings, cheap enough to leave on.

Metrics and the dashboard read a Sequence's own figures (``stats()``, the
ledger) when they are looked at; what those lack is the action's name and
how long it took. The Recorder adds just that: ``on_end`` counts each ending
by name (the Settler calls it once per ending), and ``step``, a pipeline
step, times each attempt into buckets that belong to one Site, so no lock is
taken per action; the buckets are merged when someone reads them. Names the
Plan does not know count as ``unknown``, so hostile names cannot grow the maps.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from time import time
from typing import TYPE_CHECKING, Any

from echo_actors.action import Action

if TYPE_CHECKING:
    from echo_actors.pipeline import Next
    from echo_actors.sequence import Sequence
    from echo_actors.site import Site

__all__ = ["BOUNDS", "OUTCOMES", "UNKNOWN", "Recorder", "Timing", "attach"]

BOUNDS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))
"""Histogram bucket upper bounds, in seconds (the last one catches everything)."""

OUTCOMES = ("completed", "retried", "crash_requeued", "dead_lettered", "cancelled")
UNKNOWN = "unknown"


class Timing:
    """One histogram: a count per bucket of :data:`BOUNDS` and the sum of the values."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(BOUNDS)
        self.total = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def merge(self, other: Timing) -> None:
        counts = list(other.counts)  # a copy first: its Site may be writing
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.total += other.total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile (a bucket's bound), None when empty."""
        total = self.count
        if not total:
            return None
        rank, running = q * total, 0
        for bound, n in zip(BOUNDS, self.counts, strict=True):
            running += n
            if running >= rank:
                return bound if bound != float("inf") else BOUNDS[-2]
        return BOUNDS[-2]


class _Entry:
    """One name's figures on one Site: written by that Site only."""

    __slots__ = ("completed", "run", "seen", "wait")

    def __init__(self) -> None:
        self.run = Timing()
        self.wait = Timing()
        self.completed = 0
        self.seen = 0  # attempts started: every ``sample``-th is timed


class Recorder:
    """Counts endings by name and times attempts; read with :meth:`outcomes`, :meth:`timings`.

    Completions, the hot path, are counted by :meth:`step` in the Site's own
    entry (an attempt whose pipeline returned is settled as completed, exactly
    once); the rarer endings (retried, dead-lettered, cancelled...) by
    :meth:`on_end` under a lock. Counts are exact; timings are of one attempt
    in ``sample`` per Site and name (reading two clocks costs more than a no-op
    action: with ``sample=1`` every attempt is timed, at about 15 % of a no-op
    action's throughput).
    """

    def __init__(self, known: Iterable[str], sample: int = 1) -> None:
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            raise ValueError(f"sample must be a positive int, not {sample!r}")
        self.sample = sample
        self.known = frozenset(known)
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, str], int] = {}
        self._sites: dict[int, dict[str, _Entry]] = {}

    def label(self, name: str) -> str:
        """``name`` if the Plan knows it, else ``"unknown"``."""
        return name if name in self.known else UNKNOWN

    def on_end(self, outcome: str, action: Action) -> None:
        """Count one ending other than a completion (the Settler's observer)."""
        if outcome == "completed":
            return  # counted by the step, without a lock
        key = (outcome, action.name if action.name in self.known else UNKNOWN)
        with self._lock:
            self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def step(self, action: Action, site: Site, call_next: Next) -> Any:
        """A pipeline step: time the rest of the attempt, its queue wait; count completions."""
        entries = self._sites.get(site.site_index)
        if entries is None:
            entries = self._sites.setdefault(site.site_index, {})
        name = action.name
        entry = entries.get(name)
        if entry is None:
            if name not in self.known:
                name = UNKNOWN  # kept under one key: hostile names cannot grow the map
            entry = entries.get(name)
            if entry is None:
                entry = entries[name] = _Entry()
        seen = entry.seen
        entry.seen = seen + 1
        if seen % self.sample:  # not timed this time: only counted
            result = call_next(action)
            entry.completed += 1
            return result
        started = time()  # one clock for both: wall time, as created_at is
        if action.attempt == 1:  # later attempts waited for a backoff too: not queue time
            waited = started - action.created_at
            wait = entry.wait
            if waited > 0:
                wait.counts[bisect_left(BOUNDS, waited)] += 1
                wait.total += waited
            else:  # the clock stepped back: counted as no wait
                wait.counts[0] += 1
        try:
            result = call_next(action)
        finally:
            elapsed = time() - started
            if elapsed < 0:
                elapsed = 0.0
            run = entry.run
            run.counts[bisect_left(BOUNDS, elapsed)] += 1  # Timing.add, inlined: hot path
            run.total += elapsed
        entry.completed += 1
        return result

    def outcomes(self) -> dict[tuple[str, str], int]:
        """``{(outcome, name): count}`` so far."""
        with self._lock:
            out = dict(self._outcomes)
        for entries in list(self._sites.values()):
            for name, entry in list(entries.items()):
                if entry.completed:
                    key = ("completed", name)
                    out[key] = out.get(key, 0) + entry.completed
        return out

    def timings(self) -> tuple[dict[str, Timing], dict[str, Timing]]:
        """Run time and queue wait by name, merged over the Sites."""
        run: dict[str, Timing] = {}
        wait: dict[str, Timing] = {}
        for entries in list(self._sites.values()):
            for name, entry in list(entries.items()):
                run.setdefault(name, Timing()).merge(entry.run)
                if entry.wait.total or any(entry.wait.counts):
                    wait.setdefault(name, Timing()).merge(entry.wait)
        return run, wait


_attached: weakref.WeakKeyDictionary[Sequence, Recorder] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def attach(sequence: Sequence, sample: int = 1) -> Recorder:
    """The Recorder of ``sequence``, made and wired in the first time (before it starts).

    ``sample``: time one attempt in this many (per Site and name); the first
    call's choice holds.

    Raises:
        RuntimeError: ``sequence`` started without one (its pipeline is fixed by then).
    """
    with _attach_lock:
        recorder = _attached.get(sequence)
        if recorder is not None:
            return recorder
        if sequence._run is not None or sequence._starting:
            raise RuntimeError(
                "register metrics or the dashboard before the Sequence starts: its "
                "pipeline is built when it starts"
            )
        recorder = Recorder(sequence.plan.names(), sample)
        previous = sequence.on_end
        if previous is None:
            sequence.on_end = recorder.on_end
        else:
            def both(outcome: str, action: Action) -> None:
                previous(outcome, action)
                recorder.on_end(outcome, action)

            sequence.on_end = both
        sequence.steps = (recorder.step, *sequence.steps)
        _attached[sequence] = recorder
        return recorder
