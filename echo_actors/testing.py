# SPDX-License-Identifier: MIT
"""Testing helpers: run Plans deterministically, and hunt for broken promises by seed.

Two tools, both on the simulation runtime (virtual time, one greenlet at a
time, the same run for the same seed):

- :func:`run_plan` runs a list of actions through a Plan in a fresh
  Sequence and returns what each action came to (results, errors, dead
  letters): a deterministic, sleep-free way to test your own plans, as
  Dramatiq's stub broker and ``join()`` serve Dramatiq users.
- :func:`simulate` and :func:`check` are deterministic simulation testing
  in the manner of FoundationDB: for one seed they build a random workload
  (``submit``, ``submit_many``, ``Production.assign``, delays, transient,
  permanent and crashing failures, ordered keys, chains, several concurrent
  submitters, a shutdown with or without drain, possibly in the middle),
  run it through the public API on a Sequence whose runtime shuffles the
  order in which actors run and may inject crashes and delays
  (:class:`Scenario`), and check the invariants the README promises.
  :func:`check` raises an ``AssertionError`` that names the seed and the
  one line that replays it.
"""

from __future__ import annotations

import random
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec
import pykka

from echo_actors.action import Action
from echo_actors.dead_letter import DeadLetter
from echo_actors.errors import CancellationError, CrashError, EchoError, ValidationError
from echo_actors.fate import Fate
from echo_actors.life import Life
from echo_actors.plan import Plan, Signature
from echo_actors.production import Production
from echo_actors.runtime._simulation import Faults, InjectedCrash, SimulationRuntime
from echo_actors.sequence import Sequence, Stats
from echo_actors.site import Site

__all__ = [
    "Faults",
    "InjectedCrash",
    "PlanRun",
    "Report",
    "Scenario",
    "SimulationRuntime",
    "check",
    "check_seeds",
    "run_plan",
    "simulate",
]


# Running a Plan deterministically


@dataclass
class PlanRun:
    """What :func:`run_plan` saw: each action's result or error, by action id.

    ``results`` holds the values of the actions that completed, ``errors``
    the exceptions of those that did not (dead-lettered, or cancelled);
    ``dead_letters`` and ``stats`` are the Sequence's own; ``virtual_time``
    is how long the run took on the simulated clock.
    """

    results: dict[str, Any]
    errors: dict[str, BaseException]
    dead_letters: list[DeadLetter]
    stats: Stats
    virtual_time: float

    def result(self, action: Action) -> Any:
        """``action``'s result; raises its error if it did not complete."""
        if action.id in self.errors:
            raise self.errors[action.id]
        return self.results[action.id]


def run_plan(
    plan: Plan,
    actions: Iterable[Action],
    *,
    seed: int = 0,
    sites: int = 2,
    fate: Fate | None = None,
    life: Life | None = None,
    site: type[Site] = Site,
    shuffle: bool = False,
    faults: Faults | None = None,
) -> PlanRun:
    """Run ``actions`` through ``plan`` on a fresh simulated Sequence, until all have ended.

    Delays, retries and backoffs take virtual time only, so this returns as
    soon as the work is done, and the same arguments give the same outcome
    every time. ``fate`` defaults to ``Fate()`` (the environment is not
    read); ``shuffle`` and ``faults`` are those of :class:`SimulationRuntime`.
    Chained (``next``) actions run too; their results are not reported.
    """
    runtime = SimulationRuntime(seed, shuffle=shuffle, faults=faults)
    actions = list(actions)
    with Sequence(
        plan, life=life, site=site, sites=sites, fate=fate if fate is not None else Fate(),
        runtime=runtime,
    ) as sequence:
        futures = sequence.submit_many(actions)
        sequence.join()
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    for action, future in zip(actions, futures, strict=True):
        try:
            results[action.id] = future.get(timeout=0)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            errors[action.id] = exc
    return PlanRun(
        results, errors, sequence.dead_letters(), sequence.stats(), runtime.monotonic()
    )


# Deterministic simulation testing


@dataclass(frozen=True)
class Scenario:
    """What :func:`simulate` throws at a Sequence; the defaults are fault-free.

    ``actions`` base actions (chains add more) from ``submitters``
    concurrent greenlets to ``sites`` Sites; ``shuffle`` draws the order in
    which ready actors run from the seed. The fault knobs are probabilities
    per message (crashes before or after handling it, by actor kind; with
    several kinds on, the highest rate applies to each) or per delivery
    (``delays``), at most ``max_faults`` crashes per run. The
    workload knobs switch kinds of work on and off: ``crashing_actions``
    (functions that raise ``CrashError``), ``ordered`` keys, ``chains``,
    ``assign`` through the Production, ``stop_early`` (a shutdown while work
    is still arriving). ``discipline`` is the Fate's queue discipline.
    """

    actions: int = 200
    submitters: int = 3
    sites: int = 3
    shuffle: bool = True
    site_crashes: float = 0.0
    dispatcher_crashes: float = 0.0
    life_crashes: float = 0.0
    delays: float = 0.0
    max_faults: int = 6
    crashing_actions: bool = True
    ordered: bool = True
    chains: bool = True
    assign: bool = True
    stop_early: bool = True
    discipline: str = "steal"

    def faults(self, seed: int) -> Faults | None:
        """The :class:`Faults` these settings ask for (None when they ask for none)."""
        kinds = {
            "Site": self.site_crashes, "Dispatcher": self.dispatcher_crashes,
            "_LifeActor": self.life_crashes,
        }
        rates = {name: p for name, p in kinds.items() if p > 0}
        if not rates and not self.delays:
            return None
        names = frozenset(rates)
        match = Faults.kinds(*names) if names else Faults.kinds("Site", "Dispatcher")
        # One rate per run keeps the draw simple: the highest asked for, on the matched kinds.
        p = max(rates.values(), default=0.0)
        return Faults(
            seed, crash_before=p / 2, crash_after=p / 2, delay=self.delays, max_delay=0.5,
            match=match, asks=Faults.kinds("_LifeActor"), max_crashes=self.max_faults,
        )


_MAX_ATTEMPTS = 3
_HORIZON = 3600.0  # virtual seconds: a drain longer than this is a hang


@dataclass
class Report:
    """One seed's run: the invariants that failed (none, ideally) and what was seen.

    ``trace`` lists ``(virtual time, event, action, detail)`` in the order
    things happened: two runs of one seed give the same trace.
    """

    seed: int
    scenario: Scenario
    violations: list[str] = field(default_factory=list)
    trace: list[tuple[float, str, str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    injected: list[tuple[float, str, str, str]] = field(default_factory=list)
    restarts: int = 0
    virtual_time: float = 0.0
    drain: bool = True
    stopped_at: float | None = None

    @property
    def ok(self) -> bool:
        """Whether every invariant held."""
        return not self.violations

    def replay(self) -> str:
        """The shell command that replays this run."""
        changed = ", ".join(
            f"{f.name}={getattr(self.scenario, f.name)!r}" for f in fields(Scenario)
            if getattr(self.scenario, f.name) != f.default
        )
        return (
            "python -c 'from echo_actors.testing import Scenario, check; "
            f"check({self.seed}, Scenario({changed}))'"
        )

    def summary(self) -> str:
        """One paragraph: the seed, the replay command and the violations."""
        head = (
            f"seed {self.seed}: {len(self.violations)} invariant(s) broken "
            f"(drain={self.drain}, stopped_at={self.stopped_at}, restarts={self.restarts}, "
            f"faults={len(self.injected)})\n  replay: {self.replay()}"
        )
        shown = [f"  - {v}" for v in self.violations[:12]]
        if len(self.violations) > len(shown):
            shown.append(f"  - ... and {len(self.violations) - len(shown)} more")
        return "\n".join([head, *shown])


class _Content(msgspec.Struct):
    id: str
    n: int


@dataclass
class _Item:
    """One action the harness means to send, and what it should come to."""

    hid: str
    action: Action
    expect: str  # "completed" or "dead": what happens when it is neither cancelled nor lost
    runs: int  # the function runs it takes to get there (attempts that reach the function)
    via: str = "submit"  # submit, submit_many or assign
    chained: bool = False
    key: str | None = None


class _World:
    """The run's shared record: what each function did, and a trace."""

    def __init__(self, runtime: SimulationRuntime) -> None:
        self.runtime = runtime
        self.runs: defaultdict[str, list[str]] = defaultdict(list)
        self.trace: list[tuple[float, str, str, str]] = []
        self.done_order: defaultdict[str, list[str]] = defaultdict(list)
        self.keys: dict[str, str] = {}

    def note(self, event: str, hid: str, detail: str = "") -> None:
        self.trace.append((self.runtime.monotonic(), event, hid, detail))

    def work(self, content: dict[str, Any]) -> Any:
        hid = content["id"]
        runs = self.runs[hid]
        n = len(runs)
        crash, fail = content.get("crash", 0), content.get("fail", 0)
        outcome = (
            "crash" if n < crash else "fail" if n < crash + fail
            else "fatal" if content.get("fatal") else "ok"
        )
        runs.append(outcome)
        self.note("run", hid, outcome)
        pause = content.get("sleep", 0.0)
        if pause:
            self.runtime.sleep(pause)
        if outcome == "crash":
            raise CrashError(f"{hid} crashes its Site (run {n + 1})")
        if outcome == "fail":
            raise RuntimeError(f"{hid} fails for now (run {n + 1})")
        if outcome == "fatal":
            raise ValidationError(f"{hid} can never succeed")
        self._ok(hid)
        return {"id": hid}

    def follow(self, content: dict[str, Any]) -> Any:
        hid = f"{content['id']}>"
        self.runs[hid].append("ok")
        self.note("run", hid, "ok")
        self._ok(hid)
        return {"id": hid}

    def typed(self, content: _Content) -> Any:
        self.runs[content.id].append("ok")
        self.note("run", content.id, "ok")
        self._ok(content.id)
        return {"id": content.id}

    def _ok(self, hid: str) -> None:
        key = self.keys.get(hid)
        if key is not None:
            self.done_order[key].append(hid)


def _plan(world: _World) -> Plan:
    return (
        Plan()
        .with_signature(Signature("work"))
        .with_function("work", world.work)
        .with_signature(Signature("follow"))
        .with_function("follow", world.follow)
        .with_signature(Signature("typed", content_type=_Content))
        .with_function("typed", world.typed)
        .build()
    )


def _workload(seed: int, scenario: Scenario) -> tuple[list[_Item], list[list[list[_Item]]], float]:
    """The items, each submitter's groups of them (one call each), and the mean gap."""
    rng = random.Random(f"workload:{seed}")
    items: list[_Item] = []
    keys = [f"key{k}" for k in range(rng.randint(1, 4))] if scenario.ordered else []
    for i in range(scenario.actions):
        hid = f"a{i}"
        roll = rng.random()
        content: dict[str, Any] = {"id": hid}
        expect, runs, name = "completed", 1, "work"
        if roll < 0.08:
            fail = rng.randint(1, _MAX_ATTEMPTS)
            content["fail"] = fail
            expect, runs = ("completed", fail + 1) if fail < _MAX_ATTEMPTS else ("dead", fail)
        elif roll < 0.11 and scenario.crashing_actions:
            crash = rng.choice([1, 1, 2, _MAX_ATTEMPTS])
            content["crash"] = crash
            expect, runs = ("completed", crash + 1) if crash < _MAX_ATTEMPTS else ("dead", crash)
        elif roll < 0.13:
            content["fatal"] = True
            expect = "dead"
        elif roll < 0.15:
            name, expect, runs = "no-such-action", "dead", 0
        elif roll < 0.17:
            name, expect, runs = "typed", "dead", 0
            content["n"] = "not a number"
        elif roll < 0.20:
            name, content["n"] = "typed", i
        if name == "work" and rng.random() < 0.2:
            content["sleep"] = round(rng.uniform(0.001, 0.3), 4)
        key: str | None = None
        ordered = False
        options: dict[str, Any] = {}
        if keys and name == "work" and rng.random() < 0.25:
            key, ordered = rng.choice(keys), rng.random() < 0.8
        elif rng.random() < 0.1:
            options["delay"] = round(rng.uniform(0.01, 1.0), 4)
        chained = scenario.chains and name == "work" and expect == "completed" and (
            rng.random() < 0.08
        )
        if chained:
            options["next"] = Action("follow")
        action = Action(name, content, key=key, ordered=ordered, **options)
        items.append(_Item(hid, action, expect, runs, chained=chained,
                           key=key if ordered else None))
    # Deal the items out: one key's ordered items to one submitter, in order.
    count = max(1, scenario.submitters)
    owner = {key: rng.randrange(count) for key in keys}
    queues: list[list[_Item]] = [[] for _ in range(count)]
    for item in items:
        queues[owner[item.key] if item.key is not None else rng.randrange(count)].append(item)
    plans: list[list[list[_Item]]] = []
    for queue in queues:
        groups: list[list[_Item]] = []
        i = 0
        while i < len(queue):
            roll = rng.random()
            if roll < 0.15 and scenario.assign:
                queue[i].via = "assign"
                groups.append([queue[i]])
                i += 1
            elif roll < 0.45:
                size = rng.randint(2, 6)
                group = queue[i:i + size]
                for item in group:
                    item.via = "submit_many"
                groups.append(group)
                i += size
            else:
                groups.append([queue[i]])
                i += 1
        plans.append(groups)
    return items, plans, rng.choice([0.0, 0.005, 0.02])


def simulate(seed: int, scenario: Scenario | None = None, *, schedule: int | None = None) -> Report:
    """Run one seed's workload and check the invariants; the report lists what broke.

    ``schedule`` seeds the runtime (interleaving, retry jitter, faults)
    apart from the workload: the same workload under another interleaving.
    Never raises for a broken invariant (see :func:`check`).
    """
    scenario = scenario if scenario is not None else Scenario()
    run_seed = seed if schedule is None else schedule
    faults = scenario.faults(run_seed)
    runtime = SimulationRuntime(run_seed, shuffle=scenario.shuffle, faults=faults)
    world = _World(runtime)
    report = Report(seed, scenario, trace=world.trace)
    items, plans, gap = _workload(seed, scenario)
    for item in items:
        if item.key is not None:
            world.keys[item.hid] = item.key
    rng = random.Random(f"driver:{seed}")
    window = rng.choice([1, 2, 4, 32])
    fate = Fate(runtime="simulation", sites=scenario.sites, max_attempts=_MAX_ATTEMPTS,
                mailbox_window=window, discipline=scenario.discipline)
    production = Production()
    sequence = Sequence(_plan(world), production, sites=scenario.sites, fate=fate,
                        runtime=runtime)
    futures: dict[str, Any] = {}
    accepted: set[str] = set()
    stopping = [False]
    report.drain = rng.random() < 0.5
    span = sum(len(groups) for groups in plans) * gap / max(1, len(plans))
    report.stopped_at = round(rng.uniform(0.0, span + 0.5), 4) if scenario.stop_early and (
        rng.random() < 0.6
    ) else None

    def submitter(groups: list[list[_Item]], pause: random.Random, done: Any) -> None:
        try:
            for group in groups:
                if gap:
                    runtime.sleep(pause.expovariate(1.0 / gap))
                if stopping[0] and group[0].via == "assign":
                    # What is assigned once a shutdown began stays in the Production for
                    # its next consumer: not an ending this run could check.
                    continue
                got: list[Any]
                try:
                    if group[0].via == "assign":
                        production.assign(group[0].action)
                        got = [None]
                    elif group[0].via == "submit_many":
                        got = sequence.submit_many([item.action for item in group])
                    else:
                        got = [sequence.submit(group[0].action)]
                except Exception as exc:  # noqa: BLE001 - a refusal is an outcome to check
                    for item in group:
                        world.note("rejected", item.hid, type(exc).__name__)
                    if not stopping[0]:
                        report.violations.append(
                            f"{group[0].via} of {[i.hid for i in group]} raised {exc!r} "
                            "while the Sequence was running"
                        )
                    continue
                for item, future in zip(group, got, strict=True):
                    accepted.add(item.hid)
                    futures[item.hid] = future
                    world.note("accepted", item.hid, item.via)
        finally:
            done.set()

    handed_back: list[Action] = []
    dones = []
    try:
        # Some work waits in the production before the Sequence starts.
        early = [groups.pop(0) for groups in plans if groups and groups[0][0].via == "assign"]
        for group in early:
            production.assign(group[0].action)
            accepted.add(group[0].hid)
            futures[group[0].hid] = None
            world.note("accepted", group[0].hid, "assign")
        sequence.start()
        for index, groups in enumerate(plans):
            done = runtime.event()
            dones.append(done)
            runtime.spawn(submitter, groups, random.Random(f"gaps:{seed}:{index}"), done)
        if report.stopped_at is not None:
            runtime.sleep(report.stopped_at)
        else:
            for done in dones:
                done.wait(_HORIZON)
        try:
            if sequence.supervisor is not None:
                report.restarts = sum(c.restarts for c in sequence.supervisor.which_children())
        except pykka.ActorDeadError:
            report.violations.append("the Sequence's supervisor died (gave up?)")
        stopping[0] = True
        world.note("shutdown", "-", f"drain={report.drain}")
        handed_back = sequence.shutdown(drain=report.drain, timeout=_HORIZON)
        for done in dones:
            if not done.wait(_HORIZON):
                report.violations.append("a submitter never finished")
    except Exception as exc:  # noqa: BLE001 - the harness reports, it does not crash
        report.violations.append(
            f"the run raised {exc!r}: {''.join(traceback.format_exception(exc)[-3:]).strip()}"
        )
    report.virtual_time = runtime.monotonic()
    if faults is not None:
        report.injected = list(faults.injected)
    _check(report, world, sequence, runtime, items, futures, accepted, handed_back)
    return report


def _outcome(future: Any) -> tuple[str, Any]:
    """('value', v), ('error', exc) or ('pending', None), without waiting."""
    try:
        return "value", future.get(timeout=0)
    except pykka.Timeout:
        return "pending", None
    except Exception as exc:  # noqa: BLE001 - the outcome being classified
        return "error", exc


def _hid(action: Action) -> str:
    content = action.content
    hid = content.get("id", "?") if isinstance(content, dict) else "?"
    return f"{hid}>" if action.name == "follow" else str(hid)


def _check(
    report: Report, world: _World, sequence: Sequence, runtime: SimulationRuntime,
    items: list[_Item], futures: dict[str, Any], accepted: set[str], handed_back: list[Action],
) -> None:
    bad = report.violations.append
    letters = Counter(_hid(letter.action) for letter in sequence.dead_letters())
    back = Counter(_hid(action) for action in handed_back)
    ended: dict[str, str] = {}
    expected: list[tuple[_Item, str]] = [(item, item.hid) for item in items]
    expected += [
        (_Item(f"{item.hid}>", Action("follow"), "completed", 1), f"{item.hid}>")
        for item in items if item.chained
    ]
    for item, hid in expected:
        runs = world.runs.get(hid, [])
        oks = runs.count("ok")
        parent = hid[:-1] if hid.endswith(">") else None
        is_accepted = ended.get(parent) == "completed" if parent is not None else hid in accepted
        if not is_accepted:
            if runs or letters[hid] or back[hid]:
                bad(f"{hid} was never accepted, yet ran {runs} / dead-lettered / handed back")
            continue
        future = futures.get(hid)
        state, value = _outcome(future) if future is not None else ("none", None)
        endings = []
        if letters[hid]:
            endings.append("dead")
        if back[hid]:
            endings.append("cancelled")
        if oks and not endings:
            endings.append("completed")
        if letters[hid] > 1 or back[hid] > 1 or len(endings) > 1:
            bad(f"{hid} ended more than once: dead letters {letters[hid]}, handed back "
                f"{back[hid]}, runs {runs}")
        if not endings:
            if state == "value":
                bad(f"{hid}: its future has {value!r} but its function never returned")
            else:
                bad(f"{hid} never ended (future {state}, runs {runs})")
            continue
        ending = endings[0]
        ended[hid] = ending
        report.counts[ending] += 1
        if future is not None:
            if ending == "completed" and (state != "value" or value != {"id": hid}):
                bad(f"{hid} completed but its future is {state} {value!r}")
            if ending == "dead" and not (state == "error" and isinstance(value, EchoError)
                                         and not isinstance(value, CancellationError)):
                bad(f"{hid} was dead-lettered but its future is {state} {value!r}")
            if ending == "cancelled" and not (
                state == "error" and isinstance(value, CancellationError)
            ):
                bad(f"{hid} was handed back but its future is {state} {value!r}")
        if oks > 1 or (oks and runs[-1] != "ok"):
            bad(f"{hid} ran again after it completed: runs {runs}")
        if ending == "cancelled":
            if len(runs) > max(item.runs - 1, 0):
                bad(f"{hid} was cancelled after {len(runs)} run(s): {runs}")
        elif ending != item.expect:
            bad(f"{hid} should have {item.expect}, but {ending} (runs {runs})")
        elif len(runs) != item.runs:
            bad(f"{hid} ran {len(runs)} time(s) for {item.runs} attempt(s): {runs}")
    # Ordered keys: what completed did so in submission order.
    for key in sorted({item.key for item in items if item.key is not None}):
        order = [item.hid for item in items if item.key == key and ended.get(item.hid)
                 == "completed"]
        done = [hid for hid in world.done_order[key] if ended.get(hid) == "completed"]
        if done != order:
            bad(f"ordered key {key} completed as {done}, submitted as {order}")
    # The Sequence's books agree with what was seen.
    try:
        stats = sequence.stats()
    except Exception as exc:  # noqa: BLE001 - reported like any other broken promise
        bad(f"stats() raised {exc!r}")
        return
    report.counts["accepted"] = sum(1 for _, hid in expected if hid in accepted or (
        hid.endswith(">") and ended.get(hid[:-1]) == "completed"))
    mine = {
        "accepted": report.counts["accepted"], "completed": report.counts["completed"],
        "dead_lettered": report.counts["dead"], "cancelled": report.counts["cancelled"],
    }
    theirs = {name: getattr(stats, name) for name in mine}
    if mine != theirs:
        bad(f"stats {theirs} disagree with what was seen {mine}")
    if stats.accepted != stats.completed + stats.dead_lettered + stats.cancelled:
        bad(f"stats do not add up: {stats.accepted} accepted, {stats.completed} completed, "
            f"{stats.dead_lettered} dead, {stats.cancelled} cancelled")
    if len(handed_back) != stats.cancelled:
        bad(f"shutdown handed back {len(handed_back)} actions, {stats.cancelled} cancelled")
    alive = [ref for ref in pykka.ActorRegistry.get_all()
             if issubclass(ref.actor_class, runtime.actor_base)]
    if alive:
        names = sorted(ref.actor_class.__name__ for ref in alive)
        bad(f"{len(alive)} actor(s) alive after shutdown: {names}")
        for ref in alive:  # stopped now, so that they do not outlive their run
            try:
                ref.stop(timeout=_HORIZON)
            except pykka.Timeout:
                bad(f"{ref.actor_class.__name__} does not stop")


def check(
    seed: int, scenario: Scenario | None = None, *, schedule: int | None = None
) -> Report:
    """:func:`simulate` one seed; raise ``AssertionError`` (seed, replay line) if it broke.

    Returns the report when every invariant held.
    """
    report = simulate(seed, scenario, schedule=schedule)
    if report.violations:
        raise AssertionError(report.summary())
    return report


def check_seeds(seeds: SequenceOf[int], scenario: Scenario | None = None) -> list[Report]:
    """:func:`simulate` several seeds; raise one ``AssertionError`` naming every failing seed."""
    reports = [simulate(seed, scenario) for seed in seeds]
    failed = [report for report in reports if report.violations]
    if failed:
        raise AssertionError(
            f"{len(failed)} of {len(reports)} seeds broke invariants: "
            f"{[report.seed for report in failed]}; the first ones:\n"
            + "\n".join(report.summary() for report in failed[:5])
        )
    return reports
