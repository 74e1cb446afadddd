# SPDX-License-Identifier: MIT
"""Prometheus metrics for a Sequence (a worker included): one call registers them.

    from echo_actors import metrics
    metrics.register(sequence)          # before sequence.start()
    metrics.serve(9464)                 # or let your app expose the registry

Nothing is incremented per action on Prometheus's side: a collector reads the
Sequence's own figures (``stats()``, and a Redis production's ``stats()``)
when Prometheus scrapes, plus what :mod:`echo_actors._observe` keeps per name
(endings, and run time and queue wait in per-Site buckets). Needs the
``metrics`` extra (``prometheus_client``).

Metric names (every one with a ``sequence`` label, the Sequence's ``name``):

- ``echo_actions_accepted_total``, ``echo_actions_outstanding``,
  ``echo_actions_queued``, ``echo_actions_waiting``
- ``echo_actions_{completed,retried,crash_requeued,dead_lettered,cancelled}_total``
  by ``name`` (names the Plan does not know count as ``unknown``)
- ``echo_action_run_seconds`` and ``echo_action_queue_wait_seconds``
  (histograms by ``name``; the wait of first attempts only; one attempt in
  ``sample`` per Site and name, 4 by default: their ``_count`` is of the timed
  attempts, use the ``_total`` counters for throughput)
- by ``site``: ``echo_site_depth``, ``echo_site_mailbox``, ``echo_site_backlog``,
  ``echo_site_processed_total``, ``echo_site_steals_total``,
  ``echo_site_restarts_total``, ``echo_site_alive``
- on Redis: ``echo_redis_stream_length``, ``echo_redis_pending``,
  ``echo_redis_lag``, ``echo_redis_delayed``, ``echo_redis_dead_letters``
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from echo_actors._observe import BOUNDS, OUTCOMES, Recorder, Timing, attach

if TYPE_CHECKING:
    from echo_actors.sequence import Sequence

__all__ = ["SequenceCollector", "register", "serve"]


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - an optional extra
        from prometheus_client import core  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "echo_actors.metrics needs prometheus_client: pip install 'echo_actors[metrics]'"
        ) from exc
    return prometheus_client, core


class SequenceCollector:
    """A Prometheus collector that reads its Sequences' figures at each scrape.

    Each metric family is yielded once, with one sample per Sequence (told apart by
    the ``sequence`` label), as the exposition format requires.
    """

    def __init__(self, sequences: list[tuple[Sequence, Recorder]]) -> None:
        self.sequences = sequences

    def describe(self) -> list[Any]:
        return []  # figures appear as they are collected; no clash checks at register time

    def collect(self) -> Iterator[Any]:
        _, core = _prometheus()
        base = ["sequence"]
        figures = [(sequence.name, sequence.stats(), recorder, _redis_stats(sequence))
                   for sequence, recorder in self.sequences]

        def family(name: str, kind: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            maker = core.GaugeMetricFamily if kind == "gauge" else core.CounterMetricFamily
            return maker(name, doc, labels=[*base, *labels])

        totals = (
            ("echo_actions_accepted", "counter",
             "Actions accepted (submitted, chained, assigned)", "accepted"),
            ("echo_actions_outstanding", "gauge", "Accepted actions not ended yet",
             "outstanding"),
            ("echo_actions_queued", "gauge", "Actions waiting in the production", "queued"),
            ("echo_actions_waiting", "gauge", "Actions waiting on a delay or a retry backoff",
             "waiting"),
        )
        for name, kind, doc, field in totals:
            metric = family(name, kind, doc)
            for seq, stats, _, _ in figures:
                metric.add_metric([seq], getattr(stats, field))
            yield metric

        for outcome in OUTCOMES:
            metric = family(f"echo_actions_{outcome}", "counter",
                            f"Attempts ended as {outcome}, by action name", ("name",))
            for seq, _, recorder, _ in figures:
                for (kind, name), value in sorted(recorder.outcomes().items()):
                    if kind == outcome:
                        metric.add_metric([seq, name], value)
            yield metric

        timed = [(seq, *recorder.timings()) for seq, _, recorder, _ in figures]
        yield _histogram(core, "echo_action_run_seconds",
                         "Seconds an attempt ran (steps, hooks and function)",
                         [(seq, run) for seq, run, _ in timed])
        yield _histogram(core, "echo_action_queue_wait_seconds",
                         "Seconds from admission to the first attempt's start",
                         [(seq, wait) for seq, _, wait in timed])

        site_figures = (
            ("echo_site_depth", "gauge", "Tickets queued for the Site (mailbox + backlog)",
             "depth"),
            ("echo_site_mailbox", "gauge", "Tickets in the Site's mailbox", "in_mailbox"),
            ("echo_site_backlog", "gauge", "Tickets held back for the Site", "backlog"),
            ("echo_site_alive", "gauge", "1 while the Site runs", "alive"),
            ("echo_site_processed", "counter", "Attempts the Site ran", "processed"),
            ("echo_site_steals", "counter", "Tickets the Site stole from others", "steals_in"),
            ("echo_site_restarts", "counter", "Times the Site was restarted", "restarts"),
        )
        for name, kind, doc, field in site_figures:
            metric = family(name, kind, doc, ("site",))
            for seq, stats, _, _ in figures:
                for site in stats.sites:
                    metric.add_metric([seq, str(site.site)], float(getattr(site, field)))
            yield metric

        on_redis = [(seq, redis) for seq, _, _, redis in figures if redis is not None]
        redis_figures = (
            ("echo_redis_stream_length", "Entries in the work stream", "length"),
            ("echo_redis_pending", "Entries read by the group, not acknowledged", "pending"),
            ("echo_redis_lag", "Entries the group has not read yet", "lag"),
            ("echo_redis_delayed", "Actions parked for a delay", "delayed"),
            ("echo_redis_dead_letters", "Entries in the dead stream", "dead_letters"),
        )
        for name, doc, field in redis_figures if on_redis else ():
            metric = family(name, "gauge", doc)
            for seq, redis in on_redis:
                value = getattr(redis, field)
                if value is not None:
                    metric.add_metric([seq], value)
            yield metric


def _redis_stats(sequence: Sequence) -> Any:
    stats = getattr(sequence.production, "stats", None)
    if stats is None:
        return None
    try:
        return stats()
    except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is away for a moment
        return None


def _histogram(core: Any, name: str, doc: str,
               per_sequence: list[tuple[str, dict[str, Timing]]]) -> Any:
    family = core.HistogramMetricFamily(name, doc, labels=["sequence", "name"])
    for seq, timings in per_sequence:
        for action_name, timing in sorted(timings.items()):
            cumulative = timing.cumulative()
            buckets = [
                ("+Inf" if math.isinf(bound) else repr(bound), count)
                for bound, count in zip(BOUNDS, cumulative, strict=True)
            ]
            family.add_metric([seq, action_name], buckets, timing.total)
    return family


def register(
    sequence: Sequence | Iterable[Sequence], registry: Any = None, *, sample: int = 4,
) -> SequenceCollector:
    """Collect the metrics of ``sequence``, or of several, into ``registry``
    (default: prometheus_client's).

    Call it before the Sequences start (the timings are a pipeline step).
    Counts are exact; the run-time and queue-wait histograms time one attempt
    in ``sample`` per Site and action name (``sample=1``: every attempt, at
    about 15 % of a no-op action's throughput; with 4, about 4 %). The
    Sequences of one process (a worker reading several streams) go in one
    call, so that each metric is one family with a sample per Sequence, told
    apart by their ``name``. Registering the same Sequence twice returns a
    new collector over the same figures; register it in one registry once.

    Raises:
        ImportError: prometheus_client is not installed (the ``metrics`` extra).
        RuntimeError: a Sequence already started.
        ValueError: no Sequence, or two with the same ``name``.
    """
    from echo_actors.sequence import Sequence  # noqa: PLC0415 - the package imports this module

    prometheus_client, _ = _prometheus()
    sequences = [sequence] if isinstance(sequence, Sequence) else list(sequence)
    names = [s.name for s in sequences]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"metrics need one Sequence or more, with distinct names: {names!r}")
    collector = SequenceCollector([(s, attach(s, sample)) for s in sequences])
    target = registry if registry is not None else prometheus_client.REGISTRY
    target.register(collector)
    return collector


def serve(port: int, host: str = "127.0.0.1", registry: Any = None) -> Any:
    """Serve ``registry`` (default: prometheus_client's) at ``http://host:port/metrics``.

    Loopback by default: pass ``host="0.0.0.0"`` to let a Prometheus elsewhere
    scrape. Returns the HTTP server (``shutdown()`` and ``server_close()`` stop it);
    ``server.server_port`` is the port (useful with ``port=0``).
    """
    prometheus_client, _ = _prometheus()
    target = registry if registry is not None else prometheus_client.REGISTRY
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=target)
    return server
