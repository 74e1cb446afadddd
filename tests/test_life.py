# SPDX-License-Identifier: MIT
"""Life: hooks, Fate, cache and named productions, pushed to running Sites without asking."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka
import pytest

from echo_actors import (
    Action,
    Fate,
    LicenseError,
    Life,
    Plan,
    Production,
    RoutingError,
    Sequence,
    Signature,
    sign,
)
from echo_actors.runtime import get_runtime

pytestmark = pytest.mark.timeout(30)

LIMIT = 10.0

MakeLife = Callable[..., Life]
MakeSequence = Callable[..., Sequence]
Spawn = Callable[..., "pykka.Future[Any]"]


def _plan() -> Plan:
    return Plan().with_signature(Signature("Echo")).with_function("Echo", lambda c: c).build()


class _Recorder(pykka.ThreadingActor):
    """Keeps every message it is told; answers "messages" with them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "messages":
            return list(self.seen)
        self.seen.append(message)
        return None


# Hooks


def test_register_and_list_hooks(make_life: MakeLife) -> None:
    """Registered hooks are listed by name, sorted; removing one forgets it."""
    life = make_life()
    assert life.hooks() == []
    life.register_hook("b", lambda action: None)
    life.register_hook("a", lambda action: None)
    assert life.hooks() == ["a", "b"]
    life.remove_hook("a")
    assert life.hooks() == ["b"]
    life.remove_hook("never-registered")  # no error
    assert life.hooks() == ["b"]


def test_hook_decorator(make_life: MakeLife) -> None:
    """@life.hook registers the function and returns it unchanged."""
    life = make_life()

    @life.hook("audit")
    def audit(action: Action) -> str:
        return action.name

    assert life.hooks() == ["audit"]
    assert audit(Action("A")) == "A"
    assert life.snapshot().hooks["audit"] is audit


def test_register_hook_replaces(make_life: MakeLife) -> None:
    """Registering a name again replaces the hook."""
    life = make_life()

    def first(action: Action) -> None:
        return None

    def second(action: Action) -> None:
        return None

    life.register_hook("h", first)
    life.register_hook("h", second)
    assert life.snapshot().hooks["h"] is second


@pytest.mark.parametrize(
    ("name", "hook"),
    [("", print), (3, print), ("h", 42)],
    ids=["empty", "int-name", "not-callable"],
)
def test_register_hook_rejects_bad_input(make_life: MakeLife, name: Any, hook: Any) -> None:
    """A hook needs a non-empty str name and a callable."""
    life = make_life()
    with pytest.raises(TypeError):
        life.register_hook(name, hook)


def test_snapshot_is_immutable(make_life: MakeLife) -> None:
    """The snapshot's hooks cannot be changed by whoever holds it."""
    life = make_life()
    life.register_hook("h", print)
    snapshot = life.snapshot()
    with pytest.raises(TypeError):
        snapshot.hooks["x"] = print  # type: ignore[index]


# Fate


def test_fate_and_set_fate(make_life: MakeLife) -> None:
    """Life holds the Fate it was given; set_fate replaces it."""
    life = make_life(Fate(max_attempts=7))
    assert life.fate.max_attempts == 7
    life.set_fate(Fate(max_attempts=2))
    assert life.fate.max_attempts == 2
    with pytest.raises(TypeError):
        life.set_fate({"max_attempts": 2})  # type: ignore[arg-type]


def test_default_fate() -> None:
    """Life() without a Fate uses the defaults (and starts nothing until used)."""
    life = Life()
    try:
        assert not life.started
        assert life.fate == Fate()
        assert not life.started  # the Fate is read from the last snapshot, no round trip
        assert life.hooks() == []
        assert life.started
    finally:
        life.stop()
    assert not life.started


# Cache


def test_cache(make_life: MakeLife) -> None:
    """cache_set/cache_get/cache_delete keep and forget values."""
    life = make_life()
    assert life.cache_get("k") is None
    assert life.cache_get("k", "default") == "default"
    life.cache_set("k", {"v": 1})
    assert life.cache_get("k") == {"v": 1}
    life.cache_set("k", 2)
    assert life.cache_get("k") == 2
    assert life.cache_delete("k") is True
    assert life.cache_delete("k") is False
    assert life.cache_get("k") is None


def test_cache_none_value_is_kept(make_life: MakeLife) -> None:
    """A cached None is a value: deleting it reports it was there."""
    life = make_life()
    life.cache_set("k", None)
    assert life.cache_get("k", "default") is None
    assert life.cache_delete("k") is True


def test_state_survives_a_stop(make_life: MakeLife) -> None:
    """Stopping the actor keeps its state: the next call starts a fresh actor with it."""
    life = make_life()
    life.cache_set("k", 1)
    life.register_hook("h", print)
    first = life.actor_ref
    life.stop()
    assert not life.started
    assert life.cache_get("k") == 1
    assert life.hooks() == ["h"]
    assert life.actor_ref is not first


# Named productions (Karma)


def test_named_productions(make_life: MakeLife) -> None:
    """production(name) creates one on first use and returns the same one afterwards."""
    life = make_life()
    assert life.productions() == []
    orders = life.production("orders")
    assert isinstance(orders, Production)
    assert life.production("orders") is orders
    durable = Production("durable")
    life.add_production("b-durable", durable)
    assert life.production("b-durable") is durable
    assert life.productions() == ["b-durable", "orders"]
    life.add_production("b-durable", durable)  # the same one again is fine
    with pytest.raises(ValueError, match="b-durable"):
        life.add_production("b-durable", Production())
    with pytest.raises(TypeError):
        life.add_production("x", "not a production")  # type: ignore[arg-type]


def test_named_production_feeds_a_sequence(
    make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """Actions assigned to a named production before any Sequence runs are executed by one."""
    life = make_life()
    seen: list[Any] = []
    both = threading.Event()

    def keep(content: Any) -> None:
        seen.append(content)
        if len(seen) == 2:
            both.set()

    plan = Plan().with_signature(Signature("Keep")).with_function("Keep", keep).build()
    production = life.production("jobs")
    production.assign(Action("Keep", 1))
    production.assign(Action("Keep", 2))
    sequence = make_sequence(plan, production=production, life=life, sites=1)
    assert both.wait(LIMIT)
    assert sequence.join(LIMIT)
    assert seen == [1, 2]
    stats = sequence.stats()
    assert (stats.accepted, stats.completed, stats.outstanding) == (2, 2, 0)


# Subscribers


def test_subscribe_and_unsubscribe(make_life: MakeLife) -> None:
    """A subscriber is told every change until it unsubscribes."""
    life = make_life()
    recorder = _Recorder.start()
    try:
        snapshot = life.subscribe(recorder)
        assert snapshot.version == life.snapshot().version
        life.register_hook("h", print)
        life.set_fate(Fate(max_attempts=9))
        messages = recorder.ask("messages", timeout=LIMIT)
        assert len(messages) == 2
        assert [m.snapshot.version for m in messages] == [
            snapshot.version + 1,
            snapshot.version + 2,
        ]
        assert "h" in messages[0].snapshot.hooks
        assert messages[1].snapshot.fate.max_attempts == 9
        life.unsubscribe(recorder)
        life.register_hook("later", print)
        life.cache_set("k", 1)  # a round trip after the change: its tell would be queued
        assert len(recorder.ask("messages", timeout=LIMIT)) == 2
    finally:
        recorder.stop()


def test_dead_subscriber_is_dropped(make_life: MakeLife) -> None:
    """A subscriber that died does not break the next change."""
    life = make_life()
    recorder = _Recorder.start()
    life.subscribe(recorder)
    recorder.stop()
    life.register_hook("h", print)
    assert life.hooks() == ["h"]


class _Crasher(pykka.ThreadingActor):
    """Subscribes to a Life when it starts; crashes (without unsubscribing) when told."""

    def __init__(self, life: Life) -> None:
        super().__init__()
        self.life = life

    def on_start(self) -> None:
        self.life.subscribe(self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crashed")
        return message


def test_crashed_subscribers_do_not_pile_up(make_life: MakeLife) -> None:
    """50 subscribers that crash one after another leave only the living one subscribed."""
    life = make_life()
    for _ in range(50):
        crasher = _Crasher.start(life)
        assert crasher.ask("ping", timeout=LIMIT) == "ping"  # on_start (subscribed) ran
        crasher.tell("crash")
        assert crasher.actor_stopped.wait(LIMIT)
        assert len(life.subscribers()) == 1  # the one that just died: pruned at the next
    survivor = _Crasher.start(life)
    try:
        assert survivor.ask("ping", timeout=LIMIT) == "ping"
        assert life.subscribers() == [survivor]
        life.subscribe(survivor)  # twice is once
        assert life.subscribers() == [survivor]
    finally:
        survivor.stop()


# Changes seen by running Sites


def test_hook_registered_while_running_is_used(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """A hook registered while a Sequence runs is used by an action submitted afterwards."""
    life = make_life(runtime=runtime)
    calls: list[str] = []
    sequence = make_sequence(_plan(), life=life, sites=2, runtime=runtime)
    assert sequence.submit(Action("Echo", 1)).get(timeout=LIMIT) == 1
    life.register_hook("audit", lambda action: calls.append(action.id))
    action = Action("Echo", 2, hooks=("audit",))
    assert sequence.submit(action).get(timeout=LIMIT) == 2
    assert calls == [action.id]


def test_set_fate_reaches_running_sites(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """A license key set with set_fate while a Sequence runs is checked from the next action."""
    life = make_life(runtime=runtime)
    sequence = make_sequence(_plan(), life=life, sites=2, runtime=runtime)
    assert sequence.submit(Action("Echo", "open")).get(timeout=LIMIT) == "open"
    life.set_fate(life.fate.replace(license_keys=("secret",)))
    with pytest.raises(LicenseError):
        sequence.submit(Action("Echo", "unsigned")).get(timeout=LIMIT)
    signed = sign(Action("Echo", "signed"), "secret")
    assert sequence.submit(signed).get(timeout=LIMIT) == "signed"
    life.set_fate(life.fate.replace(license_keys=()))
    assert sequence.submit(Action("Echo", "open again")).get(timeout=LIMIT) == "open again"


def test_removed_hook_is_no_longer_found(
    runtime: str, make_life: MakeLife, make_sequence: MakeSequence
) -> None:
    """After remove_hook, an action naming the hook fails (routing) instead of calling it."""
    life = make_life(runtime=runtime)
    life.attach(get_runtime(runtime))
    life.register_hook("audit", lambda action: None)
    sequence = make_sequence(_plan(), life=life, sites=1, runtime=runtime)
    assert sequence.submit(Action("Echo", 1, hooks=("audit",))).get(timeout=LIMIT) == 1
    life.remove_hook("audit")
    with pytest.raises(RoutingError, match="audit"):
        sequence.submit(Action("Echo", 2, hooks=("audit",))).get(timeout=LIMIT)


class _BlockingKey:
    """A cache key whose hash blocks the Life actor until ``release`` is set."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered = entered
        self.release = release

    def __hash__(self) -> int:
        self.entered.set()
        assert self.release.wait(LIMIT), "never released"
        return 1

    def __eq__(self, other: object) -> bool:
        return other is self


def test_sites_do_not_ask_life_per_action(
    make_life: MakeLife, make_sequence: MakeSequence, spawn: Spawn
) -> None:
    """While the Life actor is busy, actions with hooks and a license check still run."""
    life = make_life(Fate(license_keys=("k",)))
    calls: list[str] = []
    life.register_hook("audit", lambda action: calls.append(action.id))
    sequence = make_sequence(_plan(), life=life, sites=2)
    entered, release = threading.Event(), threading.Event()
    blocked = spawn("thread", life.cache_set, _BlockingKey(entered, release), "value")
    try:
        assert entered.wait(LIMIT)  # the Life actor is now stuck in cache_set
        actions = [sign(Action("Echo", n, hooks=("audit",)), "k") for n in range(50)]
        futures = [sequence.submit(action) for action in actions]
        assert [f.get(timeout=LIMIT) for f in futures] == list(range(50))
        assert sorted(calls) == sorted(a.id for a in actions)
    finally:
        release.set()
    blocked.get(timeout=LIMIT)


def test_a_call_while_its_supervisor_restarts_it_waits_for_that_actor() -> None:
    """A Sequence's own Life, asked while its actor restarts: no second, unsupervised actor."""
    from echo_actors.life import _LifeActor  # noqa: PLC0415 - counting the registry's actors

    before = set(pykka.ActorRegistry.get_by_class(_LifeActor))  # other tests' leftovers

    def alive() -> list[pykka.ActorRef[Any]]:
        return [r for r in pykka.ActorRegistry.get_by_class(_LifeActor)
                if r.is_alive() and r not in before]

    runtime = get_runtime("simulation")
    sequence = Sequence(_plan(), sites=1, runtime=runtime).start()
    try:
        life = sequence.life
        old = life.actor_ref
        old.stop()  # a permanent child: its supervisor starts a new one
        life.register_hook("audit", lambda action: None)
        assert life.hooks() == ["audit"]
        assert sequence.supervisor is not None
        (child,) = [c for c in sequence.supervisor.which_children() if c.name == "life"]
        assert life.actor_ref is child.ref and child.ref is not old
        assert alive() == [child.ref]
    finally:
        sequence.shutdown()
    assert not alive()
