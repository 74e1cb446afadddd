# SPDX-License-Identifier: MIT
"""A busy Site takes its next unkeyed action from the production itself (Desk.pull)."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from gevent import monkey

from echo_actors import Action, Fate, Life, Plan, Sequence, Signature, Site
from echo_actors._ledger import Ledger
from echo_actors._messages import Batch, Grant
from echo_actors._settle import Settler
from echo_actors._ticket import Ticket
from echo_actors.dispatcher import Desk
from echo_actors.errors import CancellationError
from echo_actors.production import Production
from echo_actors.runtime import Runtime, SimulationRuntime, get_runtime

LIMIT = 10.0

pytestmark = pytest.mark.timeout(120)


class _Recorder(Site):
    """Records what it runs, and the tickets of each Batch message it receives."""

    runs: list[Any]
    messages: list[list[Any]]

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Batch):
            self.messages.append([t.action.content for t in message.tickets])
        return super().on_receive(message)

    def receive(self, action: Action, life: Life) -> Any:
        self.runs.append(action.content)
        return super().receive(action, life)


def _recorder() -> type[_Recorder]:
    return type("Recorder", (_Recorder,), {"runs": [], "messages": []})


def _gated(rt: Runtime) -> tuple[Plan, Any, Any]:
    started, gate = rt.event(), rt.event()

    def hold(content: Any) -> Any:
        started.set()
        assert gate.wait(LIMIT), "gate never opened"
        return content

    plan = (
        Plan()
        .with_signature(Signature("Hold")).with_function("Hold", hold)
        .with_signature(Signature("Quick")).with_function("Quick", lambda c: c)
        .build()
    )
    return plan, started, gate


def _held(
    rt: Runtime, make_sequence: Callable[..., Sequence], fate: Fate,
) -> tuple[Sequence, type[_Recorder], Any, Any]:
    """A one-Site Sequence of a recorder, busy with a Hold action: the Sequence, its Site's
    class, the Hold's future and the gate that lets it end."""
    plan, started, gate = _gated(rt)
    site = _recorder()
    sequence = make_sequence(plan, site=site, sites=1, fate=fate, runtime=rt)
    first = sequence.submit(Action("Hold", "first"))
    assert started.wait(LIMIT)
    return sequence, site, first, gate


@pytest.mark.parametrize(("discipline", "window"), [("steal", 1), ("fifo", 1)])
def test_a_busy_site_runs_the_queue_without_a_message_per_action(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence], discipline: str,
    window: int,
) -> None:
    """Work queued behind a busy Site runs in order on it, all from one Batch message."""
    rt = every_runtime
    fate = Fate(mailbox_window=window, discipline=discipline)
    sequence, site, first, gate = _held(rt, make_sequence, fate)
    rest = [sequence.submit(Action("Quick", n)) for n in range(50)]
    gate.set()
    assert first.get(timeout=LIMIT) == "first"
    assert [f.get(timeout=LIMIT) for f in rest] == list(range(50))
    assert sequence.join(LIMIT)
    assert site.runs == ["first", *range(50)]
    assert site.messages == [["first"]], "the queued actions came as messages"
    # The dispatcher read every Done the Site left on its desk without waking it.
    stats = sequence.stats()
    assert [(s.processed, s.depth) for s in stats.sites] == [(51, 0)]


def test_a_keyed_action_is_never_pulled_and_the_order_holds(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """A keyed action at the head goes through the dispatcher; the queue keeps its order."""
    rt = every_runtime
    sequence, site, first, gate = _held(rt, make_sequence, Fate(mailbox_window=1))
    queued = [
        Action("Quick", "u1"), Action("Quick", "k1", key="k", ordered=True),
        Action("Quick", "u2"), Action("Quick", "k2", key="k", ordered=True),
        Action("Quick", "u3"),
    ]
    futures = [sequence.submit(action) for action in queued]
    gate.set()
    assert first.get(timeout=LIMIT) == "first"
    assert [f.get(timeout=LIMIT) for f in futures] == ["u1", "k1", "u2", "k2", "u3"]
    assert sequence.join(LIMIT)
    assert site.runs == ["first", "u1", "k1", "u2", "k2", "u3"]
    # Each keyed action came in a message of the dispatcher's; the unkeyed ones were pulled.
    assert site.messages == [["first"], ["k1"], ["k2"]]


def test_an_action_cancelled_in_the_queue_is_not_pulled(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """A queued action cancelled while the Site is busy never runs; the others do."""
    rt = every_runtime
    sequence, site, first, gate = _held(rt, make_sequence, Fate(mailbox_window=1))
    a, b, c = (Action("Quick", name) for name in "abc")
    futures = [sequence.submit(action) for action in (a, b, c)]
    assert sequence.cancel(b.id)
    gate.set()
    assert first.get(timeout=LIMIT) == "first"
    assert futures[0].get(timeout=LIMIT) == "a"
    assert futures[2].get(timeout=LIMIT) == "c"
    with pytest.raises(CancellationError):
        futures[1].get(timeout=LIMIT)
    assert sequence.join(LIMIT)
    assert site.runs == ["first", "a", "c"]
    stats = sequence.stats()
    assert (stats.completed, stats.cancelled, stats.outstanding) == (3, 1, 0)


class _DirectRecorder(_Recorder):
    """Records, for each Batch message, its tickets' contents and whether a submitter
    (or the Site itself) sent it directly."""

    sent: list[tuple[list[Any], bool]]

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Batch):
            self.sent.append(([t.action.content for t in message.tickets], message.direct))
        return super().on_receive(message)


def test_an_idle_site_is_sent_the_next_action_directly(
    every_runtime: Runtime, make_sequence: Callable[..., Sequence]
) -> None:
    """One action at a time: each goes straight to the idle Site (the grant it left for
    itself), none through the dispatcher; the dispatcher's books still add up."""
    rt = every_runtime
    plan, _started, _gate = _gated(rt)
    site = type("Recorder", (_DirectRecorder,), {"runs": [], "messages": [], "sent": []})
    sequence = make_sequence(plan, site=site, sites=1, fate=Fate(mailbox_window=1), runtime=rt)
    for n in range(5):
        assert sequence.submit(Action("Quick", n)).get(timeout=LIMIT) == n
        assert sequence.join(LIMIT)  # the Site has ended its batch (and left its grant)
    assert [contents for contents, _ in site.sent] == [[n] for n in range(5)]
    # (The first may come before the Site was known to idle; then each after its Done.)
    assert [direct for _, direct in site.sent[1:]] == [True] * 4
    stats = sequence.stats()
    assert [(s.processed, s.depth) for s in stats.sites] == [(5, 0)]
    assert stats.completed == 5


def test_a_durable_production_is_never_pulled_from() -> None:
    """Only the in-memory Production lets Sites take from it (a durable one's take is its own)."""

    class Durable(Production):
        pass

    rt = SimulationRuntime(seed=3)
    plan, started, gate = _gated(rt)
    site = _recorder()
    fate = Fate(mailbox_window=1, runtime="simulation")
    with Sequence(plan, Durable(), site=site, sites=1, fate=fate, runtime=rt) as sequence:
        first = sequence.submit(Action("Hold", "first"))
        assert started.wait(LIMIT)
        rest = [sequence.submit(Action("Quick", n)) for n in range(5)]
        gate.set()
        assert [f.get(timeout=LIMIT) for f in [first, *rest]] == ["first", *range(5)]
    assert site.messages == [["first"], *([n] for n in range(5))]


def test_the_desk_is_woken_before_many_dones_pile_up() -> None:
    """A Site that pulls for a long time leaves a bounded number of events on the desk."""
    rt = SimulationRuntime(seed=5)
    most = 0
    desks: list[Any] = []

    def serve(n: int) -> int:
        nonlocal most
        most = max(most, len(desks[0].events))
        rt.sleep(1.0)
        return n

    plan = Plan().with_signature(Signature("Serve")).with_function("Serve", serve).build()
    fate = Fate(mailbox_window=1, runtime="simulation")
    with Sequence(plan, sites=1, fate=fate, runtime=rt) as sequence:
        assert sequence._run is not None
        desks.append(sequence._run.desk)
        futures = sequence.submit_many([Action("Serve", n) for n in range(500)])
        assert [f.get(timeout=1000.0) for f in futures] == list(range(500))
        assert sequence.stats().sites[0].processed == 500
    assert 0 < most <= 64


def _race(count: int) -> tuple[int, int]:
    """Two threads pull and one takes three at a time from one queue until it is empty;
    checks that each ticket was taken once; returns (pulled, taken)."""
    production = Production()
    tickets = [
        Ticket(Action("Quick", n, key="k" if n % 50 == 0 else None)) for n in range(count)
    ]
    production.put_many(tickets)
    got: list[list[Ticket]] = [[], [], []]
    go = threading.Barrier(3)

    def pull(out: list[Ticket]) -> None:
        go.wait(LIMIT)
        while production.pending():
            ticket = production.take_unkeyed()
            if ticket is not None:
                assert ticket.action.key is None
                out.append(ticket)

    def take(out: list[Ticket]) -> None:
        go.wait(LIMIT)
        while production.pending():
            out.extend(production.take(3))

    threads = [threading.Thread(target=pull, args=(got[0],)),
               threading.Thread(target=pull, args=(got[1],)),
               threading.Thread(target=take, args=(got[2],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    seen = Counter(id(t) for out in got for t in out)
    assert len(seen) == count and set(seen.values()) == {1}
    return len(got[0]) + len(got[1]), len(got[2])


@pytest.mark.skipif(monkey.is_module_patched("threading"),
                    reason="threads are greenlets here: nothing preempts them mid-take")
def test_take_unkeyed_beside_take_loses_and_repeats_nothing() -> None:
    """Threads taking the head by identity and in batches share the queue without overlap."""
    count = int(os.environ.get("ECHO_PULL_TICKETS", "20000"))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave within a few bytecodes, not 5 ms
    try:
        rounds = [_race(count) for _ in range(3)]
        while len(rounds) < 20 and not any(pulled and taken for pulled, taken in rounds):
            rounds.append(_race(count))  # until one round had both kinds take a share
    finally:
        sys.setswitchinterval(interval)
    assert any(pulled and taken for pulled, taken in rounds), rounds


def test_threads_submitting_beside_pulling_and_self_granting_sites_run_each_once() -> None:
    """Four submitter threads, four Sites that pull and grant themselves: every action
    runs exactly once and the books add up (the desk's grants are shared across threads)."""
    per = int(os.environ.get("ECHO_PULL_ACTIONS", "2000"))
    runs: Counter[Any] = Counter()
    lock = threading.Lock()

    def work(content: Any) -> Any:
        with lock:
            runs[tuple(content)] += 1
        return content

    plan = Plan().with_signature(Signature("Work")).with_function("Work", work).build()
    go = threading.Barrier(4)
    with Sequence(plan, sites=4, fate=Fate(sites=4, mailbox_window=1)) as sequence:

        def submit(t: int) -> list[Any]:
            go.wait(LIMIT)
            results = []
            for start in range(0, per, 50):  # bursts, then a wait: Sites go idle and busy
                futures = [sequence.submit(Action("Work", [t, n]))
                           for n in range(start, start + 50)]
                results += [f.get(timeout=LIMIT) for f in futures]
            return results

        threads = [ThreadPoolExecutor(1) for _ in range(4)]
        outcomes = [pool.submit(submit, t) for t, pool in enumerate(threads)]
        results = [row for outcome in outcomes for row in outcome.result(60)]
        for pool in threads:
            pool.shutdown()
        assert sequence.join(LIMIT)
        stats = sequence.stats()
    assert len(results) == 4 * per and len(runs) == 4 * per and set(runs.values()) == {1}
    assert stats.completed == stats.accepted == 4 * per and stats.outstanding == 0
    assert sum(site.processed for site in stats.sites) == 4 * per
    assert all(site.depth == 0 for site in stats.sites)


@pytest.mark.skipif(monkey.is_module_patched("threading"),
                    reason="threads are greenlets here: nothing preempts them mid-loop")
def test_a_sites_grant_bookkeeping_survives_submitters_taking_grants_meanwhile() -> None:
    """Desk.idle and Desk.withdraw, called while another thread takes and leaves grants on
    the same desk: neither raises (the grants are a deque other threads change)."""
    runtime = get_runtime("thread")
    production = Production()
    desk = Desk(8, production)
    desk.settler = Settler(Plan().build(), production, Ledger(runtime.event()),
                           runtime.scheduler(), random.Random(0), desk.post)
    desk.pulls = desk.quiet = True
    others = [Grant(site, f"urn-{site}", None) for site in range(1, 8)]
    desk.grants.extend(others)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:  # a submitter taking grants, and the dispatcher leaving them
        while not stop.is_set():
            for grant in others:
                with contextlib.suppress(ValueError):
                    desk.grants.remove(grant)
                desk.grants.append(grant)

    rounds = int(os.environ.get("ECHO_PULL_ROUNDS", "20000"))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(rounds):
            grant = desk.idle(0, "urn-0", None)
            assert grant is not None and grant.site == 0
            desk.withdraw(grant)
    except BaseException as exc:
        errors.append(exc)
    finally:
        stop.set()
        thread.join(LIMIT)
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert not any(held.site == 0 for held in desk.grants)
