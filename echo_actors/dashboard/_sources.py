# SPDX-License-Identifier: MIT
"""What the dashboard shows, as plain JSON-ready dicts: from a running Sequence or a stream.

A source answers :meth:`snapshot` (figures now) and :meth:`requeue` (one dead
letter back). :class:`History` samples a source every second into the last
minutes of throughput and latency, for the chart.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from echo_actors._observe import Recorder, Timing, _attached, attach

if TYPE_CHECKING:
    from echo_actors.production.redis import RedisProduction
    from echo_actors.sequence import Sequence
    from echo_actors.supervision import ChildInfo

__all__ = ["History", "RedisSource", "SequenceSource"]

_DEAD_SHOWN = 50
_MESSAGE_SHOWN = 500


def _letter(action_id: str, name: str, kind: str, message: str, attempts: int,
            failed_at: float) -> dict[str, Any]:
    return {"id": action_id, "name": name, "error_kind": kind,
            "message": message[:_MESSAGE_SHOWN], "attempts": attempts, "failed_at": failed_at}


def _tree(infos: list[ChildInfo]) -> list[dict[str, Any]]:
    return [
        {"name": info.name, "state": str(info.state), "restarts": info.restarts,
         "children": _tree(info.children or [])}
        for info in infos
    ]


class SequenceSource:
    """A running Sequence in this process: its stats, tree, dead letters and timings."""

    kind = "sequence"

    def __init__(self, sequence: Sequence) -> None:
        self.sequence = sequence
        recorder = _attached.get(sequence)
        if recorder is None and sequence._run is None and not sequence._starting:
            recorder = attach(sequence)
        self.recorder: Recorder | None = recorder

    def title(self) -> str:
        return f"Sequence {self.sequence.name}"

    def snapshot(self) -> dict[str, Any]:
        sequence = self.sequence
        stats = sequence.stats()
        supervisor = sequence.supervisor
        tree: list[dict[str, Any]] = []
        if supervisor is not None:
            try:
                tree = [{"name": sequence.name, "state": "running", "restarts": 0,
                         "children": _tree(supervisor.tree())}]
            except Exception:  # noqa: BLE001 - stopping: the tree is gone; show none this time
                tree = []
        dead = [
            _letter(d.action.id, d.action.name, d.error_kind, d.message, d.attempts, d.failed_at)
            for d in sequence.dead_letters()[-_DEAD_SHOWN:]
        ]
        names: list[dict[str, Any]] = []
        if self.recorder is not None:
            outcomes = self.recorder.outcomes()
            run, _ = self.recorder.timings()
            for name in sorted({n for _, n in outcomes} | set(run)):
                timing = run.get(name, Timing())
                names.append({
                    "name": name,
                    "completed": outcomes.get(("completed", name), 0),
                    "retried": outcomes.get(("retried", name), 0),
                    "dead_lettered": outcomes.get(("dead_lettered", name), 0),
                    "p50": timing.quantile(0.5), "p95": timing.quantile(0.95),
                })
        return {
            "kind": self.kind,
            "totals": {
                "accepted": stats.accepted, "completed": stats.completed,
                "dead_lettered": stats.dead_lettered, "retried": stats.retried,
                "cancelled": stats.cancelled, "outstanding": stats.outstanding,
                "queued": stats.queued, "waiting": stats.waiting,
            },
            "sites": [
                {"site": s.site, "depth": s.depth, "mailbox": s.in_mailbox,
                 "backlog": s.backlog, "processed": s.processed, "steals": s.steals_in,
                 "restarts": s.restarts, "alive": s.alive}
                for s in stats.sites
            ],
            "names": names,
            "tree": tree,
            "dead": dead,
            "workers": [],
        }

    def done(self) -> int:
        """Actions ended for good so far (for the throughput chart)."""
        stats = self.sequence.stats()
        return stats.completed + stats.dead_lettered

    def run_timing(self) -> Timing | None:
        """Run times so far, all names merged (for the latency chart)."""
        if self.recorder is None:
            return None
        total = Timing()
        for timing in self.recorder.timings()[0].values():
            total.merge(timing)
        return total

    def requeue(self, action_id: str) -> int:
        return len(self.sequence.requeue([action_id]))


class RedisSource:
    """A Redis stream shared by workers: lengths, consumers (their heartbeats), dead letters."""

    kind = "redis"

    def __init__(self, production: RedisProduction) -> None:
        self.production = production

    def title(self) -> str:
        return f"stream {self.production.stream} (group {self.production.group})"

    def snapshot(self) -> dict[str, Any]:
        figures = self.production.stats()
        dead = [
            _letter(d.action.id, d.action.name, d.error_kind, d.message, d.attempts,
                    d.failed_at)
            if d.action is not None else
            _letter(d.entry_id, "(undecodable)", d.error_kind, d.message, d.attempts,
                    d.failed_at)
            for d in self.production.dead_letters(limit=_DEAD_SHOWN)
        ]
        return {
            "kind": self.kind,
            "totals": {
                "stream": figures.length, "pending": figures.pending,
                "lag": figures.lag, "delayed": figures.delayed,
                "dead_lettered": figures.dead_letters, "read": figures.entries_read,
            },
            "sites": [],
            "names": [],
            "tree": [],
            "dead": dead,
            "workers": [
                {"name": c.name, "pending": c.pending, "idle_ms": c.idle_ms}
                for c in figures.consumers
            ],
        }

    def done(self) -> int:
        """Entries the group has read and acknowledged (0 when the server does not say)."""
        figures = self.production.stats()
        if figures.entries_read is None:
            return 0
        return max(0, figures.entries_read - figures.pending)

    def run_timing(self) -> Timing | None:
        return None  # run times live in the workers (their /metrics)

    def requeue(self, action_id: str) -> int:
        return len(self.production.requeue([action_id]))


class History:
    """Throughput and latency per second over the last ``span`` seconds, sampled in a thread."""

    def __init__(self, source: Any, span: int = 300, every: float = 1.0) -> None:
        self.source = source
        self.every = every
        self.points: deque[dict[str, Any]] = deque(maxlen=int(span / every))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last: tuple[float, int, Timing | None] | None = None
        self._thread = threading.Thread(target=self._loop, name="echo-dashboard-history",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def points_now(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.points)

    def sample(self) -> None:
        """Take one sample now (the thread does every ``every`` seconds)."""
        now = time.time()
        try:
            done = self.source.done()
            timing = self.source.run_timing()
        except Exception:  # noqa: BLE001 - stopping, or Redis away for a moment: skip this one
            return
        last, self._last = self._last, (now, done, timing)
        if last is None:
            return
        then, done_then, timing_then = last
        point: dict[str, Any] = {"t": now, "rate": max(0.0, (done - done_then) / (now - then)),
                                 "mean_ms": None, "p95_ms": None}
        if timing is not None and timing_then is not None:
            delta = Timing()
            delta.counts = [a - b for a, b in zip(timing.counts, timing_then.counts, strict=True)]
            delta.total = timing.total - timing_then.total
            count = delta.count
            if count > 0:
                point["mean_ms"] = delta.total / count * 1000
                p95 = delta.quantile(0.95)
                point["p95_ms"] = None if p95 is None else p95 * 1000
        with self._lock:
            self.points.append(point)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()
