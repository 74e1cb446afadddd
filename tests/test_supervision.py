# SPDX-License-Identifier: MIT
"""Supervision: strategies, restart types, intensity and escalation, backoff, trees."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import greenlet  # type: ignore[import-untyped]
import pykka
import pytest
from logs import capture_events

from echo_actors.runtime import Runtime, bind_actor, get_runtime
from echo_actors.supervision import (
    Backoff,
    ChildExitError,
    ChildInfo,
    ChildSpec,
    ExitInfo,
    Restart,
    RestartIntensityError,
    SupervisorHandle,
    SupervisorStartError,
    start_supervisor,
    supervisor_spec,
)

pytestmark = pytest.mark.timeout(20)

LIMIT = 5.0  # seconds any wait may take before it counts as a failure

Event = tuple[Any, ...]


def wait_until(runtime: Runtime, flag: Any, ready: Callable[[], bool], what: Any) -> None:
    """Wait (on the runtime's terms) until ``ready()``; ``flag`` is an Event set on each change."""
    deadline = runtime.monotonic() + LIMIT
    while True:
        flag.clear()
        if ready():
            return
        remaining = deadline - runtime.monotonic()
        assert remaining > 0, what
        flag.wait(remaining)


class Recorder:
    """What children and callbacks did, in order, with a way to wait for it.

    Waiting uses the runtime's own Event, so that on gevent (unpatched) and on
    the simulation runtime the actors run while the test waits.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.events: list[Event] = []
        self.runtime = runtime
        self._lock = threading.Lock()  # held for no wait: safe on any runtime
        self._changed = runtime.event()

    def add(self, *event: Any) -> None:
        with self._lock:
            self.events.append(event)
        self._changed.set()

    def wait(self, predicate: Callable[[Recorder], bool]) -> None:
        wait_until(self.runtime, self._changed, lambda: predicate(self), self.events)

    def of(self, kind: str, name: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e[0] == kind and (name is None or e[1] == name)]

    def count(self, kind: str, name: str) -> int:
        return len(self.of(kind, name))

    def names(self, kind: str) -> list[str]:
        return [e[1] for e in self.of(kind)]

    def ref(self, name: str) -> pykka.ActorRef[Any]:
        """The ref the latest on_start callback was given for ``name``."""
        ref: pykka.ActorRef[Any] = self.of("started", name)[-1][2]
        return ref

    def exits(self, name: str) -> list[ExitInfo]:
        return [e[2] for e in self.of("exit", name)]


class Worker(pykka.Actor):
    """A plain actor: records its start and stop, crashes or quits on request.

    ``fail_starts`` says, start by start, how ``on_start`` fails (consumed
    one per start; empty: it succeeds): ``"raise"`` or ``"exit"`` (SystemExit).
    ``fail_init`` makes ``__init__`` raise.
    """

    def __init__(
        self, name: str, rec: Recorder, fail_starts: list[str] | None = None,
        fail_init: bool = False,
    ) -> None:
        super().__init__()
        rec.add("init", name)
        if fail_init:
            raise RuntimeError(f"{name} failed to init")
        self.name = name
        self.rec = rec
        self.fail_starts = fail_starts

    def on_start(self) -> None:
        self.rec.add("on_start", self.name, type(self))
        how = self.fail_starts.pop(0) if self.fail_starts else ""
        if how == "raise":
            raise RuntimeError(f"{self.name} failed to start")
        if how == "exit":
            raise SystemExit(3)

    def on_stop(self) -> None:
        self.rec.add("stop", self.name)

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "exit":
            raise SystemExit(4)
        if message == "interrupt":
            raise greenlet.GreenletExit  # as a runtime kills a greenlet
        if message == "quit":
            self.stop()
        return message


def spec(name: str, rec: Recorder, restart: Restart = "permanent", **kwargs: Any) -> ChildSpec:
    """A Worker child whose callbacks record ("started", name, ref) and ("exit", name, info)."""
    return ChildSpec(
        name, Worker, (name, rec), kwargs, restart,
        on_start=lambda ref: rec.add("started", name, ref),
        on_exit=lambda info: rec.add("exit", name, info),
    )


def crash(rec: Recorder, name: str, times: int = 1) -> None:
    """Crash ``name`` and wait until it has been started once more (``times`` times)."""
    for _ in range(times):
        before = rec.count("started", name)
        rec.ref(name).tell("crash")
        rec.wait(lambda r, n=before: r.count("started", name) > n)


def by_name(infos: list[ChildInfo]) -> dict[str, ChildInfo]:
    return {info.name: info for info in infos}


def all_refs(infos: list[ChildInfo]) -> list[pykka.ActorRef[Any]]:
    refs: list[pykka.ActorRef[Any]] = []
    for info in infos:
        if info.ref is not None:
            refs.append(info.ref)
        refs.extend(all_refs(info.children or []))
    return refs


def _runtimes() -> list[str]:
    """Every runtime; no simulation in a monkey-patched run (its greenlets are not gevent's)."""
    monkey = sys.modules.get("gevent.monkey")
    patched = monkey is not None and monkey.is_module_patched("threading")
    return ["thread", "gevent"] if patched else ["thread", "gevent", "simulation"]


@pytest.fixture(params=_runtimes())
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """The runtime the supervisors run on (a fresh simulation per test)."""
    return get_runtime(request.param)


@pytest.fixture
def supervise(runtime: Runtime) -> Iterator[Callable[..., SupervisorHandle]]:
    """start_supervisor on the test's runtime; each one started is stopped, its tree dead."""
    handles: list[SupervisorHandle] = []
    before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}

    def start(specs: list[ChildSpec], **kwargs: Any) -> SupervisorHandle:
        kwargs.setdefault("runtime", runtime)
        handle = start_supervisor(specs, **kwargs)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
    leaked = [r for r in pykka.ActorRegistry.get_all() if r.actor_urn not in before]
    for ref in leaked:
        ref.stop()
    assert not leaked


class ManualScheduler:
    """A scheduler whose timers fire only when the test says so."""

    def __init__(self, runtime: Runtime) -> None:
        self.timers: list[ManualTimer] = []
        self.stopped = False
        self._runtime = runtime
        self._added = runtime.event()

    def call_later(self, delay: float, fn: Any, /, *args: Any) -> ManualTimer:
        timer = ManualTimer(delay, fn, args)
        self.timers.append(timer)
        self._added.set()
        return timer

    def pending(self) -> int:
        return sum(1 for t in self.timers if not t.cancelled and not t.fired)

    def stop(self) -> None:
        self.stopped = True

    def wait_for_timers(self, n: int) -> list[ManualTimer]:
        wait_until(self._runtime, self._added, lambda: len(self.timers) >= n, self.timers)
        return list(self.timers)


class ManualTimer:
    """One scheduled call; ``fire()`` runs it unless cancelled."""

    def __init__(self, delay: float, fn: Any, args: tuple[Any, ...]) -> None:
        self.delay, self.fn, self.args = delay, fn, args
        self.cancelled = self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.fired = True
        if not self.cancelled:
            self.fn(*self.args)


class ManualRuntime:
    """A runtime like ``base`` whose scheduler is a ManualScheduler."""

    def __init__(self, base: Runtime, scheduler: ManualScheduler) -> None:
        self._base = base
        self._scheduler = scheduler
        self.name = base.name
        self.actor_base = base.actor_base

    def scheduler(self) -> ManualScheduler:
        return self._scheduler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


# Strategies


def test_one_for_one_restarts_only_the_crashed_child(supervise: Any, runtime: Runtime) -> None:
    """one_for_one: only the crashed child gets a new instance."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec), spec("b", rec), spec("c", rec)])
    crash(rec, "b")
    children = by_name(sup.which_children())
    assert {n: c.restarts for n, c in children.items()} == {"a": 0, "b": 1, "c": 0}
    assert rec.count("started", "a") == rec.count("started", "c") == 1
    assert rec.names("stop") == []
    assert all(c.state == "running" for c in children.values())


def test_one_for_all_restarts_every_child(supervise: Any, runtime: Runtime) -> None:
    """one_for_all: the others are stopped in reverse order, then all restarted in order."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec), spec("b", rec), spec("c", rec)], strategy="one_for_all")
    mark = len(rec.events)
    crash(rec, "b")
    rec.wait(lambda r: r.count("started", "c") == 2)
    after = [(e[0], e[1]) for e in rec.events[mark:] if e[0] in {"stop", "started"}]
    assert after == [("stop", "c"), ("stop", "a"),
                     ("started", "a"), ("started", "b"), ("started", "c")]
    assert [c.restarts for c in sup.which_children()] == [1, 1, 1]


def test_rest_for_one_restarts_the_crashed_and_later_children(
    supervise: Any, runtime: Runtime
) -> None:
    """rest_for_one: the crashed child and those started after it; earlier ones keep running."""
    rec = Recorder(runtime)
    names = ["a", "b", "c", "d"]
    sup = supervise([spec(n, rec) for n in names], strategy="rest_for_one")
    first_a = rec.ref("a")
    mark = len(rec.events)
    crash(rec, "b")
    rec.wait(lambda r: r.count("started", "d") == 2)
    after = [(e[0], e[1]) for e in rec.events[mark:] if e[0] in {"stop", "started"}]
    assert after == [("stop", "d"), ("stop", "c"),
                     ("started", "b"), ("started", "c"), ("started", "d")]
    children = sup.which_children()
    assert [c.restarts for c in children] == [0, 1, 1, 1]
    assert children[0].ref is first_a and first_a.is_alive()


# Restart types


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "stop", True),
        ("transient", "crash", True),
        ("transient", "stop", False),
        ("temporary", "crash", False),
        ("temporary", "stop", False),
    ],
)
def test_restart_types(
    supervise: Any, runtime: Runtime, restart: Restart, how: str, restarted: bool
) -> None:
    """permanent: always restarted; transient: only after a crash; temporary: never, dropped."""
    rec = Recorder(runtime)
    sup = supervise([spec("w", rec, restart)])
    ref = rec.ref("w")
    if how == "crash":
        ref.tell("crash")
    else:
        ref.stop()  # from outside: a normal exit
    rec.wait(lambda r: len(r.exits("w")) == 1)
    (info,) = rec.exits("w")
    assert info.reason == ("crash" if how == "crash" else "normal")
    children = by_name(sup.which_children())  # answered once the exit is fully handled
    if restarted:
        rec.wait(lambda r: r.count("started", "w") == 2)
        assert children["w"].state == "running" and children["w"].restarts == 1
    elif restart == "temporary":
        assert "w" not in children
    else:
        assert children["w"].state == "stopped" and children["w"].ref is None
    assert rec.count("started", "w") == (2 if restarted else 1)


def test_self_stop_is_a_normal_exit(supervise: Any, runtime: Runtime) -> None:
    """A child that stops itself exits normally: a transient one stays stopped."""
    rec = Recorder(runtime)
    sup = supervise([spec("w", rec, "transient")])
    rec.ref("w").tell("quit")
    rec.wait(lambda r: len(r.exits("w")) == 1)
    assert rec.exits("w")[0].reason == "normal"
    assert sup.which_children()[0].state == "stopped"


# Intensity and escalation


def test_top_level_supervisor_gives_up_and_stops(supervise: Any, runtime: Runtime) -> None:
    """Past max_restarts in the window, a top supervisor stops its children and itself."""
    rec = Recorder(runtime)
    with capture_events() as logs:
        sup = supervise([spec("a", rec), spec("b", rec)], max_restarts=1, within=60.0,
                        on_give_up=lambda error: rec.add("gave_up", "root", error))
        crash(rec, "a")
        rec.ref("a").tell("crash")
        rec.wait(lambda r: bool(r.of("gave_up")))
        assert sup.ref.actor_stopped.wait(LIMIT)
    assert rec.names("stop") == ["b"]
    assert not rec.ref("a").is_alive() and not rec.ref("b").is_alive()
    assert not sup.is_alive()
    ((_, _, error),) = rec.of("gave_up")
    assert isinstance(error, RestartIntensityError) and "'a'" in str(error)
    assert isinstance(error.__cause__, RuntimeError) and str(error.__cause__) == "a crashed"
    assert rec.events.index(("stop", "b")) < rec.events.index(rec.of("gave_up")[0])
    gave_up = [e for e in logs if e["event"] == "supervisor_gave_up"]
    assert len(gave_up) == 1 and gave_up[0]["child"] == "a" and gave_up[0]["reason"] == "crash"
    assert not [e for e in logs if e["event"] == "supervisor_escalated"]


def test_intensity_exceeded_escalates_to_the_parent(supervise: Any, runtime: Runtime) -> None:
    """A sub-supervisor that gives up stops its children and is a crash in its parent."""
    rec = Recorder(runtime)
    sub = supervisor_spec(
        "sub", [spec("x", rec), spec("y", rec)], max_restarts=1, within=60.0,
        on_start=lambda ref: rec.add("started", "sub", ref),
        on_exit=lambda info: rec.add("exit", "sub", info),
        on_give_up=lambda error: rec.add("gave_up", "sub", error),
    )
    with capture_events() as logs:
        root = supervise([spec("other", rec), sub], strategy="one_for_all", within=60.0)
        old_sub, old_y = rec.ref("sub"), rec.ref("y")
        crash(rec, "x")  # one restart: within the sub's intensity
        rec.ref("x").tell("crash")  # the second: the sub gives up
        rec.wait(lambda r: r.count("started", "y") == 2 and r.count("started", "other") == 2)
    (sub_exit,) = rec.exits("sub")
    assert sub_exit.reason == "crash"
    assert isinstance(sub_exit.error, RestartIntensityError)
    ((_, _, gave_up),) = rec.of("gave_up")
    assert gave_up is sub_exit.error  # the owner hears it before the parent does
    assert sub_exit.urn == old_sub.actor_urn and not old_sub.is_alive() and not old_y.is_alive()
    kinds = [(e[0], e[1]) for e in rec.events]
    assert kinds.index(("stop", "y")) < kinds.index(("exit", "sub"))  # children first
    assert [i.restarts for i in root.which_children()] == [1, 1]  # one_for_all in the root
    events = {e["event"]: e for e in logs}
    assert events["supervisor_gave_up"]["supervisor"] == "sub"
    assert events["supervisor_escalated"]["child"] == "x"
    assert events["supervisor_escalated"]["reason"] == "crash"
    tree = by_name(root.tree())
    assert tree["sub"].state == "running"
    assert [(c.name, c.restarts) for c in tree["sub"].children or []] == [("x", 0), ("y", 0)]


# Backoff


def test_backoff_waits_for_the_scheduler(supervise: Any, runtime: Runtime) -> None:
    """With backoff, a restart happens only when its timer fires; delays grow and are capped."""
    rec = Recorder(runtime)
    manual = ManualScheduler(runtime)
    sup = supervise([spec("a", rec)], max_restarts=5, within=60.0,
                    backoff=Backoff(base=0.5, cap=1.0), runtime=ManualRuntime(runtime, manual))
    for n in (1, 2, 3):
        rec.ref("a").tell("crash")
        timer = manual.wait_for_timers(n)[-1]
        rec.wait(lambda r, n=n: len(r.exits("a")) == n)
        (child,) = sup.which_children()
        assert child.state == "restarting" and child.ref is None
        assert rec.count("started", "a") == n  # not restarted yet
        timer.fire()
        rec.wait(lambda r, n=n: r.count("started", "a") == n + 1)
    assert [t.delay for t in manual.timers] == [0.5, 1.0, 1.0]
    assert sup.which_children()[0].restarts == 3


def test_stopping_cancels_a_pending_restart(supervise: Any, runtime: Runtime) -> None:
    """A supervisor stopped while a restart waits cancels it and stops its scheduler."""
    rec = Recorder(runtime)
    manual = ManualScheduler(runtime)
    sup = supervise([spec("a", rec)], backoff=Backoff(base=1.0),
                    runtime=ManualRuntime(runtime, manual))
    rec.ref("a").tell("crash")
    (timer,) = manual.wait_for_timers(1)
    assert sup.stop()
    assert timer.cancelled and manual.stopped
    timer.fire()  # too late: nothing happens
    assert rec.count("started", "a") == 1


def test_backoff_on_the_runtime_scheduler(supervise: Any, runtime: Runtime) -> None:
    """With the runtime's own scheduler, a backed-off child is restarted."""
    rec = Recorder(runtime)
    supervise([spec("a", rec)], backoff=Backoff(base=0.01, cap=0.05))
    crash(rec, "a", times=2)
    assert rec.count("started", "a") == 3


# Trees


def test_nested_tree_shuts_down_cleanly(supervise: Any, runtime: Runtime) -> None:
    """Stopping the root stops every actor of the tree, depth first, in reverse order."""
    rec = Recorder(runtime)
    inner = supervisor_spec("sub2", [spec("c", rec), spec("d", rec)], strategy="one_for_all")
    middle = supervisor_spec("sub1", [spec("b", rec), inner], strategy="rest_for_one")
    root = supervise([spec("a", rec), middle, spec("e", rec)])
    tree = root.tree()
    refs = [*all_refs(tree), root.ref]
    assert len(refs) == 8 and all(ref.is_alive() for ref in refs)
    assert root.stop()
    assert not [ref for ref in refs if ref.is_alive()]
    assert rec.names("stop") == ["e", "d", "c", "b", "a"]
    assert {info.reason for n in "abcde" for info in rec.exits(n)} == {"shutdown"}
    assert all(rec.count("started", n) == 1 for n in "abcde")  # no restarts on shutdown


def test_crash_inside_a_tree_stays_local(supervise: Any, runtime: Runtime) -> None:
    """A crash deep in a tree is handled by the nearest supervisor only."""
    rec = Recorder(runtime)
    inner = supervisor_spec("sub", [spec("c", rec), spec("d", rec)], strategy="one_for_all")
    root = supervise([spec("a", rec), inner])
    crash(rec, "d")
    rec.wait(lambda r: r.count("started", "c") == 2)
    tree = by_name(root.tree())
    assert tree["a"].restarts == 0 and tree["sub"].restarts == 0
    assert [(c.name, c.restarts) for c in tree["sub"].children or []] == [("c", 1), ("d", 1)]


# Introspection and operations


def test_introspection_shows_states_and_counts(supervise: Any, runtime: Runtime) -> None:
    """tree() reports each child's state (running, restarting, stopped), restarts and ref."""
    rec = Recorder(runtime)
    manual = ManualScheduler(runtime)
    sub = supervisor_spec("sub", [spec("x", rec)])
    sup = supervise([spec("a", rec), spec("t", rec, "transient"), sub],
                    backoff=Backoff(base=1.0), runtime=ManualRuntime(runtime, manual))
    rec.ref("a").tell("crash")
    manual.wait_for_timers(1)
    sup.terminate_child("t")
    tree = by_name(sup.tree())
    assert tree["a"].state == "restarting" and tree["a"].ref is None
    assert tree["t"].state == "stopped" and tree["t"].urn is None
    assert tree["sub"].state == "running" and tree["sub"].supervisor
    assert tree["sub"].ref is not None and tree["sub"].urn == tree["sub"].ref.actor_urn
    (x,) = tree["sub"].children or []
    assert (x.name, x.state, x.restarts, x.ref) == ("x", "running", 0, rec.ref("x"))
    manual.timers[0].fire()
    rec.wait(lambda r: r.count("started", "a") == 2)
    child = by_name(sup.which_children())["a"]
    assert (child.state, child.restarts, child.ref) == ("running", 1, rec.ref("a"))


def test_start_terminate_restart_delete_child(supervise: Any, runtime: Runtime) -> None:
    """The operations: start_child, terminate_child, restart_child, delete_child."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec)])
    ref = sup.start_child(spec("b", rec))
    assert ref is rec.ref("b") and [c.name for c in sup.which_children()] == ["a", "b"]
    with pytest.raises(ValueError, match="already exists"):
        sup.start_child(spec("b", rec))
    sup.terminate_child("b")
    assert not ref.is_alive() and rec.exits("b")[0].reason == "shutdown"
    assert by_name(sup.which_children())["b"].state == "stopped"  # not restarted
    new = sup.restart_child("b")
    assert new is rec.ref("b") and new.is_alive() and new is not ref
    assert by_name(sup.which_children())["b"].restarts == 1
    with pytest.raises(ValueError, match="terminate it first"):
        sup.delete_child("b")
    sup.terminate_child("b")
    sup.delete_child("b")
    assert [c.name for c in sup.which_children()] == ["a"]
    with pytest.raises(KeyError):
        sup.terminate_child("b")


# Callbacks and start failures


def test_callbacks_get_the_exit_then_the_new_ref(supervise: Any, runtime: Runtime) -> None:
    """on_exit gets the crash (error, old urn) before on_start gets the new ref."""
    rec = Recorder(runtime)
    with capture_events() as logs:
        sup = supervise([spec("a", rec)])
        old = rec.ref("a")
        crash(rec, "a")
    kinds = [e[0] for e in rec.events if e[0] in {"started", "exit"}]
    assert kinds == ["started", "exit", "started"]
    (info,) = rec.exits("a")
    assert (info.name, info.reason, info.urn, info.restarts) == ("a", "crash", old.actor_urn, 0)
    assert isinstance(info.error, RuntimeError) and str(info.error) == "a crashed"
    new = rec.ref("a")
    assert new is not old and new is sup.which_children()[0].ref and new.is_alive()
    crashed = [e for e in logs if e["event"] == "child_crashed"]
    restarted = [e for e in logs if e["event"] == "child_restarted"]
    assert crashed[0]["child"] == "a" and "a crashed" in crashed[0]["reason"]
    assert restarted[0]["child"] == "a" and restarted[0]["restarts"] == 1
    assert restarted[0]["reason"] == "crash" and restarted[0]["exited"] == "a"


def test_failing_restart_is_a_crash(supervise: Any, runtime: Runtime) -> None:
    """A child whose on_start raises when it is restarted has crashed again: restarted anew."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec, fail_starts=["", "raise"])])
    crash(rec, "a")  # the first restart fails, the second one succeeds
    first, second = rec.exits("a")
    assert (first.reason, str(first.error)) == ("crash", "a crashed")
    assert (second.reason, str(second.error)) == ("crash", "a failed to start")
    assert rec.count("on_start", "a") == 3 and rec.count("started", "a") == 2
    assert sup.which_children()[0].restarts == 1


def test_failing_restart_counts_against_the_intensity(supervise: Any, runtime: Runtime) -> None:
    """Restarts that fail to start count as crashes: enough of them make the supervisor give up."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec, fail_starts=["", "raise", "raise"])], max_restarts=1,
                    within=60.0, on_give_up=lambda error: rec.add("gave_up", "root", error))
    rec.ref("a").tell("crash")
    rec.wait(lambda r: bool(r.of("gave_up")))
    ((_, _, error),) = rec.of("gave_up")
    assert isinstance(error, RestartIntensityError)
    assert str(error.__cause__) == "a failed to start"
    assert rec.count("on_start", "a") == 2  # the start, one failed restart, then it gave up
    assert sup.ref.actor_stopped.wait(LIMIT) and not sup.is_alive()


def test_failing_on_start_callback_on_restart_is_a_crash(supervise: Any, runtime: Runtime) -> None:
    """A ChildSpec on_start callback that raises on a restart counts as the child's crash."""
    rec = Recorder(runtime)
    calls: list[pykka.ActorRef[Any]] = []

    def on_start(ref: pykka.ActorRef[Any]) -> None:
        calls.append(ref)
        if len(calls) == 2:
            raise LookupError("owner refused")
        rec.add("started", "a", ref)

    child = ChildSpec("a", Worker, ("a", rec), on_start=on_start,
                      on_exit=lambda info: rec.add("exit", "a", info))
    sup = supervise([child])
    rec.ref("a").tell("crash")
    rec.wait(lambda r: r.count("started", "a") == 2)
    _crashed, refused = rec.exits("a")
    assert refused.reason == "crash" and isinstance(refused.error, LookupError)
    assert not calls[1].is_alive() and calls[2].is_alive()
    assert sup.which_children()[0].restarts == 1


# OTP start semantics


def test_children_start_one_after_another(supervise: Any, runtime: Runtime) -> None:
    """Child N+1 is created only once child N's __init__, on_start and spec callback returned."""
    rec = Recorder(runtime)
    names = ["a", "b", "c"]
    sup = supervise([spec(n, rec) for n in names])
    steps = [(e[0], e[1]) for e in rec.events if e[0] in {"init", "on_start", "started"}]
    assert steps == [(kind, n) for n in names for kind in ("init", "on_start", "started")]
    assert [c.state for c in sup.which_children()] == ["running"] * 3


@pytest.mark.parametrize("how", ["init", "on_start", "exit", "callback"])
def test_a_child_that_cannot_start_fails_the_start(
    supervise: Any, runtime: Runtime, how: str
) -> None:
    """The start raises with the child's error; earlier children are stopped, later never start."""
    rec = Recorder(runtime)
    kwargs: dict[str, Any] = {"fail_init": True} if how == "init" else {}
    if how in {"on_start", "exit"}:
        kwargs["fail_starts"] = ["raise" if how == "on_start" else "exit"]
    failing = spec("b", rec, **kwargs)
    if how == "callback":

        def refuse(ref: pykka.ActorRef[Any]) -> None:
            raise LookupError("owner refused")

        failing = ChildSpec("b", Worker, ("b", rec), on_start=refuse)
    gave_up: list[BaseException] = []
    with pytest.raises(SupervisorStartError) as raised:
        supervise([spec("a0", rec), spec("a1", rec), failing, spec("c", rec)],
                  on_give_up=gave_up.append)
    error = raised.value
    assert (error.supervisor, error.child) == ("supervisor", "b")
    cause = error.__cause__
    if how == "exit":
        assert isinstance(cause, ChildExitError) and isinstance(cause.__cause__, SystemExit)
    elif how == "callback":
        assert isinstance(cause, LookupError)
    else:
        assert isinstance(cause, RuntimeError)
        assert str(cause) == ("b failed to init" if how == "init" else "b failed to start")
    assert rec.names("stop") == (["b", "a1", "a0"] if how == "callback" else ["a1", "a0"])
    assert [info.reason for n in ("a0", "a1") for info in rec.exits(n)] == ["shutdown"] * 2
    assert not rec.of("init", "c") and not gave_up
    assert all(not ref.is_alive() for _, _, ref in rec.of("started"))


def test_a_nested_start_failure_fails_the_parent(supervise: Any, runtime: Runtime) -> None:
    """A sub-supervisor whose child cannot start fails its parent's start, naming the path."""
    rec = Recorder(runtime)
    sub = supervisor_spec("sub", [spec("x", rec), spec("y", rec, fail_starts=["raise"])])
    with pytest.raises(SupervisorStartError) as raised:
        supervise([spec("a", rec), sub, spec("c", rec)], name="root")
    outer = raised.value
    assert (outer.supervisor, outer.child) == ("root", "sub")
    inner = outer.__cause__
    assert isinstance(inner, SupervisorStartError) and (inner.supervisor, inner.child) == (
        "sub", "y")
    assert str(inner.__cause__) == "y failed to start"
    assert rec.names("stop") == ["x", "a"]
    assert not rec.of("init", "c")


def test_start_child_that_cannot_start_raises(supervise: Any, runtime: Runtime) -> None:
    """start_child raises SupervisorStartError and adds nothing; the others run on."""
    rec = Recorder(runtime)
    sup = supervise([spec("a", rec)])
    with pytest.raises(SupervisorStartError) as raised:
        sup.start_child(spec("b", rec, fail_init=True))
    assert raised.value.child == "b" and str(raised.value.__cause__) == "b failed to init"
    assert [c.name for c in sup.which_children()] == ["a"] and rec.ref("a").is_alive()


# What is not an Exception


class Bystander(pykka.Actor):
    """An actor that has nothing to do with the others: it answers."""

    def on_receive(self, message: Any) -> Any:
        return message


def test_system_exit_in_a_child_crashes_only_that_child(
    supervise: Any, runtime: Runtime
) -> None:
    """SystemExit escaping a child's handler is that child's crash; other actors run on."""
    rec = Recorder(runtime)
    bystander = bind_actor(Bystander, runtime).start()
    try:
        other = supervise([spec("other", rec)])
        supervise([spec("a", rec)])
        old = rec.ref("a")
        with pytest.raises(ChildExitError) as asked:
            old.ask("exit", timeout=LIMIT)  # asked: the asker gets it, the child runs on
        assert isinstance(asked.value.__cause__, SystemExit) and old.is_alive()
        old.tell("exit")  # told: a crash of that child, which is restarted
        rec.wait(lambda r: r.count("started", "a") == 2)
        (info,) = rec.exits("a")
        assert info.reason == "crash" and isinstance(info.error, ChildExitError)
        assert isinstance(info.error.__cause__, SystemExit)
        assert bystander.ask("still here", timeout=LIMIT) == "still here"
        assert rec.ref("other").ask("ping", timeout=LIMIT) == "ping" and other.is_alive()
        assert rec.ref("a").ask("ping", timeout=LIMIT) == "ping"
    finally:
        bystander.stop()


def test_a_runtime_interrupt_in_a_child_ends_only_that_child(
    supervise: Any, runtime: Runtime
) -> None:
    """GreenletExit escaping a child's handler ends that child (restarted), no other actor."""
    rec = Recorder(runtime)
    bystander = bind_actor(Bystander, runtime).start()
    try:
        supervise([spec("a", rec)])
        rec.ref("a").tell("interrupt")
        rec.wait(lambda r: r.count("started", "a") == 2)
        (info,) = rec.exits("a")
        assert info.reason == "crash"
        error = info.error
        assert isinstance(error, greenlet.GreenletExit) or (
            isinstance(error, pykka.ActorDeadError)
            and isinstance(error.__cause__, greenlet.GreenletExit)
        ), repr(error)
        assert bystander.ask("still here", timeout=LIMIT) == "still here"
        assert rec.ref("a").ask("ping", timeout=LIMIT) == "ping"
    finally:
        bystander.stop()


def test_killed_greenlet_is_an_exit_not_a_process_wide_stop() -> None:
    """gevent: a child whose greenlet is killed exits and is restarted; no one else stops."""
    import gevent  # noqa: PLC0415 - this test is about gevent only

    runtime = get_runtime("gevent")
    rec = Recorder(runtime)
    bystander = bind_actor(Bystander, runtime).start()
    sup = start_supervisor([spec("a", rec)], runtime=runtime)
    try:
        old = rec.ref("a")
        actor = old._actor_weakref()
        assert actor is not None
        actor.actor_greenlet.kill(timeout=LIMIT)
        rec.wait(lambda r: r.count("started", "a") == 2)
        (info,) = rec.exits("a")
        assert info.reason == "crash" and isinstance(info.error, gevent.GreenletExit)
        assert bystander.ask("still here", timeout=LIMIT) == "still here"
        assert rec.ref("a").ask("ping", timeout=LIMIT) == "ping"
    finally:
        sup.stop()
        bystander.stop()


class KilledBeforeItRan(Worker):
    """A child whose greenlet is killed before its loop ever ran (gevent)."""

    def _start_actor_loop(self) -> None:
        super()._start_actor_loop()  # type: ignore[misc]
        self.actor_greenlet.kill(block=False)  # type: ignore[attr-defined]


def test_a_greenlet_killed_before_it_ran_fails_the_start() -> None:
    """gevent: a child killed before its first run fails the start instead of hanging it."""
    import gevent  # noqa: PLC0415 - this test is about gevent only

    runtime = get_runtime("gevent")
    rec = Recorder(runtime)
    killed = type("KilledBeforeItRan", (KilledBeforeItRan, runtime.actor_base), {})
    with pytest.raises(SupervisorStartError) as raised:
        start_supervisor([spec("a", rec), ChildSpec("b", killed, ("b", rec))], runtime=runtime)
    assert raised.value.child == "b"
    cause = raised.value.__cause__
    assert isinstance(cause, ChildExitError) and isinstance(cause.__cause__, gevent.GreenletExit)
    assert not rec.of("on_start", "b") and rec.names("stop") == ["a"]


def test_plain_and_concrete_classes_share_a_cached_mixin(supervise: Any, runtime: Runtime) -> None:
    """Plain pykka.Actor and concrete classes both work; each class gets one cached mixin."""
    rec = Recorder(runtime)
    concrete = type("ConcreteWorker", (Worker, runtime.actor_base), {})
    supervise([spec("a", rec), ChildSpec("b", concrete, ("b", rec))])
    supervise([spec("c", rec)])
    classes = {e[1]: e[2] for e in rec.of("on_start")}
    assert classes["a"] is classes["c"]
    assert issubclass(classes["a"], Worker) and issubclass(classes["a"], runtime.actor_base)
    assert issubclass(classes["b"], concrete)


# Leaks


def _run_and_drop(seed: int) -> list[weakref.ref[Any]]:
    """Run a supervised actor on a fresh SimulationRuntime, stop it; weak refs to what it made."""
    runtime = get_runtime("simulation")
    rec = Recorder(runtime)
    sup = start_supervisor([spec("a", rec)], runtime=runtime, name=f"run-{seed}")
    # A restart, without a crash: pytest keeps logged tracebacks, hence their frames.
    rec.ref("a").tell("quit")
    rec.wait(lambda r: r.count("started", "a") == 2)
    assert rec.ref("a").ask("ping", timeout=LIMIT) == "ping"
    assert sup.stop()
    made = [runtime, runtime.kernel, runtime.actor_base]  # type: ignore[attr-defined]
    return [weakref.ref(thing) for thing in made]


def test_simulation_runtimes_are_collected() -> None:
    """30 simulation runtimes that ran a supervised actor are all garbage once dropped."""
    refs = [ref for seed in range(30) for ref in _run_and_drop(seed)]
    gc.collect()
    alive = [ref() for ref in refs if ref() is not None]
    assert not alive, gc.get_referrers(alive[0])
