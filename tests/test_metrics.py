# SPDX-License-Identifier: MIT
"""Prometheus metrics: exact names, labels and values after a known workload."""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from echo_actors import Action, Fate, Plan, Sequence, Signature, metrics
from echo_actors.errors import CancellationError

LIMIT = 10.0
HOSTILE = 'evil"} 1 echo_pwned{a="'


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed back from the exposition text."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], metric: str, /, **labels: str) -> float:
    return samples[(metric, tuple(sorted({"sequence": "shop", **labels}.items())))]


class Shop:
    def __init__(self) -> None:
        self.flaky_calls = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.plan = (
            Plan()
            .with_signature(Signature("Ok")).with_function("Ok", lambda c: c)
            .with_signature(Signature("Flaky")).with_function("Flaky", self.flaky)
            .with_signature(Signature("Bad")).with_function("Bad", self.bad)
            .with_signature(Signature("Gate")).with_function("Gate", self.wait)
            .build()
        )

    def flaky(self, content: Any) -> Any:
        with self.lock:
            self.flaky_calls += 1
            first = self.flaky_calls % 2 == 1
        if first:
            raise ValueError("first try fails")
        return content

    def bad(self, content: Any) -> Any:
        raise ValueError("always")

    def wait(self, content: Any) -> Any:
        self.started.set()
        assert self.gate.wait(LIMIT)
        return content


def test_counts_by_name_after_a_known_workload() -> None:
    shop = Shop()
    registry = CollectorRegistry()
    fate = Fate(max_attempts=2, backoff_base=0.001, backoff_cap=0.002)
    sequence = Sequence(shop.plan, sites=1, fate=fate, name="shop")
    metrics.register(sequence, registry, sample=1)

    def explode(*_: Any) -> None:
        raise RuntimeError("hook says no")

    sequence.life.register_hook("explode", explode)
    with sequence:
        futures = sequence.submit_many(
            [Action("Ok", i) for i in range(5)]
            + [Action("Flaky", 1)]                       # fails once, then completes
            + [Action("Bad", 1)]                         # two attempts, dead-lettered
            + [Action(HOSTILE, 1)]                       # no such function: dead at once
            + [Action("Ok", 9, after=("explode",))]      # ran, then its after-hook raised
        )
        for future in futures:
            with contextlib.suppress(Exception):  # the failures are what is counted
                future.get(timeout=LIMIT)
        assert sequence.join(LIMIT)
        samples = _samples(registry)
        assert _value(samples, "echo_actions_accepted_total") == 9
        assert _value(samples, "echo_actions_completed_total", name="Ok") == 5
        assert _value(samples, "echo_actions_completed_total", name="Flaky") == 1
        assert _value(samples, "echo_actions_retried_total", name="Flaky") == 1
        assert _value(samples, "echo_actions_retried_total", name="Bad") == 1
        assert _value(samples, "echo_actions_dead_lettered_total", name="Bad") == 1
        assert _value(samples, "echo_actions_dead_lettered_total", name="unknown") == 1
        # The after-hook's failure: one attempt, retried once, dead once, never completed.
        assert _value(samples, "echo_actions_retried_total", name="Ok") == 1
        assert _value(samples, "echo_actions_dead_lettered_total", name="Ok") == 1
        # Attempts timed: 5 + 2 Ok (the hooked one twice), 2 Flaky, 2 Bad, 1 unknown.
        assert _value(samples, "echo_action_run_seconds_count", name="Ok") == 7
        assert _value(samples, "echo_action_run_seconds_count", name="Flaky") == 2
        assert _value(samples, "echo_action_run_seconds_count", name="Bad") == 2
        assert _value(samples, "echo_action_run_seconds_count", name="unknown") == 1
        assert _value(samples, "echo_action_run_seconds_bucket", name="Ok", le="+Inf") == 7
        # Queue wait: first attempts only.
        assert _value(samples, "echo_action_queue_wait_seconds_count", name="Ok") == 6
        assert _value(samples, "echo_actions_outstanding") == 0
        assert _value(samples, "echo_site_processed_total", site="0") >= 6
        assert _value(samples, "echo_site_alive", site="0") == 1
        assert ("echo_site_depth", (("sequence", "shop"), ("site", "0"))) in samples
        names = {dict(labels).get("name") for (_, labels) in samples}
        assert names <= {None, "Ok", "Flaky", "Bad", "unknown"}  # the hostile name never
    assert "echo_pwned" not in generate_latest(registry).decode()


def test_cancelled_counted_by_name() -> None:
    shop = Shop()
    registry = CollectorRegistry()
    sequence = Sequence(shop.plan, sites=1, name="shop")
    metrics.register(sequence, registry)
    sequence.start()
    running = sequence.submit(Action("Gate", 0))
    assert shop.started.wait(LIMIT)
    queued = sequence.submit_many([Action("Ok", i) for i in range(3)])
    stopper = threading.Thread(target=sequence.shutdown, kwargs={"drain": False})
    stopper.start()
    try:
        for future in queued:
            with pytest.raises(CancellationError):
                future.get(timeout=LIMIT)
    finally:
        shop.gate.set()
        stopper.join(LIMIT)
    assert running.get(timeout=LIMIT) == 0
    samples = _samples(registry)
    assert _value(samples, "echo_actions_cancelled_total", name="Ok") == 3
    assert _value(samples, "echo_actions_completed_total", name="Gate") == 1


def test_register_after_start_is_refused_and_serve_answers_on_loopback() -> None:
    shop = Shop()
    sequence = Sequence(shop.plan, sites=1, name="shop")
    registry = CollectorRegistry()
    metrics.register(sequence, registry)
    with sequence:
        started = Sequence(shop.plan).start()
        try:
            with pytest.raises(RuntimeError, match="before the Sequence starts"):
                metrics.register(started, CollectorRegistry())
        finally:
            started.shutdown()
        sequence.submit(Action("Ok", 1)).get(timeout=LIMIT)
        server = metrics.serve(0, registry=registry)
        try:
            assert server.server_address[0] == "127.0.0.1"
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            with urllib.request.urlopen(url, timeout=LIMIT) as reply:
                text = reply.read().decode()
        finally:
            server.shutdown()
            server.server_close()
    assert 'echo_actions_completed_total{name="Ok",sequence="shop"} 1.0' in text


def test_timings_sample_one_attempt_in_n_and_counts_stay_exact() -> None:
    shop = Shop()
    registry = CollectorRegistry()
    sequence = Sequence(shop.plan, sites=1, name="shop")
    metrics.register(sequence, registry, sample=4)
    with sequence:
        for future in sequence.submit_many([Action("Ok", i) for i in range(22)]):
            future.get(timeout=LIMIT)
        samples = _samples(registry)
    assert _value(samples, "echo_actions_completed_total", name="Ok") == 22
    # Attempts 0, 4, 8, 12, 16, 20 of the one Site were timed.
    assert _value(samples, "echo_action_run_seconds_count", name="Ok") == 6
    assert _value(samples, "echo_action_queue_wait_seconds_count", name="Ok") == 6
    with pytest.raises(ValueError, match="sample"):
        metrics.register(Sequence(shop.plan), registry, sample=0)


def test_several_sequences_share_one_family_per_metric() -> None:
    """Two Sequences in one registry: each metric is one family with a sample per Sequence."""
    shop = Shop()
    registry = CollectorRegistry()
    first = Sequence(shop.plan, sites=1, name="shop")
    second = Sequence(shop.plan, sites=2, name="depot")
    metrics.register([first, second], registry)
    with first, second:
        first.submit(Action("Ok", 1)).get(timeout=LIMIT)
        for future in second.submit_many([Action("Ok", i) for i in range(3)]):
            future.get(timeout=LIMIT)
        assert first.join(LIMIT) and second.join(LIMIT)
        text = generate_latest(registry).decode()
        samples = _samples(registry)
    # One HELP line per family: a second collector per Sequence would repeat them.
    helps = [line for line in text.splitlines() if line.startswith("# HELP")]
    assert len(helps) == len(set(helps)) and "# HELP echo_actions_completed_total" in text
    assert _value(samples, "echo_actions_completed_total", name="Ok") == 1
    assert samples[("echo_actions_completed_total",
                    (("name", "Ok"), ("sequence", "depot")))] == 3
    alive = {labels: v for (name, labels), v in samples.items() if name == "echo_site_alive"}
    assert alive == {(("sequence", "shop"), ("site", "0")): 1.0,
                     (("sequence", "depot"), ("site", "0")): 1.0,
                     (("sequence", "depot"), ("site", "1")): 1.0}
    with pytest.raises(ValueError, match="distinct names"):
        metrics.register([Sequence(shop.plan), Sequence(shop.plan)], CollectorRegistry())
    with pytest.raises(ValueError, match="distinct names"):
        metrics.register([], CollectorRegistry())
