# SPDX-License-Identifier: MIT
"""Supervision: Erlang/OTP-style supervisors that restart any pykka actor.

A :class:`Supervisor` starts its children from :class:`ChildSpec`\\ s and
restarts them when they exit, by a strategy (``one_for_one``,
``one_for_all``, ``rest_for_one``) and a restart type per child
(``permanent``, ``transient``, ``temporary``), within a restart intensity.
Exits are pushed, never polled: each child runs from a cached subclass of its
class whose loop tells the supervisor how it ended. Supervisors are actors
like any other, so they nest into trees; one that gives up is a crash of
that child in its parent (and calls its ``on_give_up``). Only the
:class:`Runtime` protocol is used.

Starting follows OTP: children start one after another, child N+1 only once
child N's ``__init__`` and ``on_start`` (and its spec's ``on_start``
callback) have returned. If one of them raises, the start fails with a
:class:`SupervisorStartError` naming the child (its ``__cause__`` is the
child's error): the children already started are stopped, in reverse order,
and the later ones never start. :func:`start_supervisor` raises it, a nested
supervisor's start failure fails its parent's start the same way. A child
that fails to start when it is *restarted* after a crash counts as one more
crash against the restart intensity instead. A child's ``on_start`` must not
wait for its own supervisor (which is busy starting it), as in OTP.

Exceptions that are not ``Exception`` subclasses: pykka stops *every* actor
of the process when a ``BaseException`` escapes a message handler. In a supervised
child, a ``SystemExit`` (or any other ``BaseException``) escaping
``on_start`` or a message handler becomes a :class:`ChildExitError` instead:
an error answered to the asker, or, for a told message, a crash of that
child alone, restarted like any other. Not failures: the runtimes' own
interrupts (a killed greenlet, ``gevent.Timeout``, the simulation kernel's
interrupt; see :func:`echo_actors.runtime.is_control_flow`), which end or
cut short a wait rather than fail: one that escapes a handler ends that
actor as killed (its supervisor sees an exit with that exception, and
restarts it by its restart type) without touching other actors; and
``KeyboardInterrupt``, the user's request to stop everything.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, cast, get_args

import msgspec
import pykka

from echo_actors._logging import get_logger
from echo_actors.runtime import (
    Runtime,
    Scheduler,
    TimerHandle,
    bind_actor,
    get_runtime,
    is_control_flow,
)

__all__ = [
    "Backoff",
    "ChildExitError",
    "ChildInfo",
    "ChildSpec",
    "ChildState",
    "ExitInfo",
    "ExitReason",
    "Restart",
    "RestartIntensityError",
    "Strategy",
    "Supervisor",
    "SupervisorHandle",
    "SupervisorStartError",
    "start_supervisor",
    "supervisor_spec",
    "tree",
]

_log = get_logger("echo_actors.supervision")

Restart = Literal["permanent", "transient", "temporary"]
"""permanent: always restarted; transient: only after a crash; temporary: never."""
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""Which children a restart takes: the one that exited, all, or it and those started after it."""
ExitReason = Literal["normal", "crash", "shutdown"]
"""normal: stopped (itself, or ``ref.stop()``); crash: failed; shutdown: by its supervisor."""
ChildState = Literal["running", "restarting", "stopped"]

_WATCH = "_supervision_watch"  # the keyword that carries a _Watch into a child


class RestartIntensityError(RuntimeError):
    """A supervisor saw more restarts than allowed in its window and gave up.

    Its ``__cause__`` is the error of the last exit (``None`` for a normal one).
    """


class SupervisorStartError(RuntimeError):
    """A supervisor could not start a child: ``__init__`` or an ``on_start`` raised.

    ``supervisor`` and ``child`` are their names; ``__cause__`` is the
    child's error (for a nested supervisor, its own SupervisorStartError, so
    the chain leads down to the child that failed).
    """

    def __init__(self, supervisor: str, child: str, error: BaseException) -> None:
        super().__init__(f"supervisor {supervisor!r}: child {child!r} failed to start: {error!r}")
        self.supervisor = supervisor
        self.child = child
        self.__cause__ = error


class ChildExitError(RuntimeError):
    """A ``BaseException`` such as ``SystemExit`` escaped a supervised child.

    It stands in for that exception (its ``__cause__``), so that it fails
    one message or crashes one child, where pykka would stop every actor.
    """


class Backoff(msgspec.Struct, frozen=True):
    """Delay before a restart: ``base * 2**(n-1)`` capped at ``cap``, n = restarts in the window."""

    base: float = 0.1
    cap: float = 5.0

    def delay(self, n: int) -> float:
        """The delay before the ``n``-th restart of the current intensity window."""
        return float(min(self.cap, self.base * 2 ** max(0, n - 1)))


class ExitInfo(msgspec.Struct, frozen=True):
    """How a child ended: ``error`` is the exception when ``reason`` is ``"crash"``."""

    name: str
    reason: ExitReason
    error: BaseException | None
    urn: str | None
    restarts: int


class ChildSpec(msgspec.Struct, frozen=True):
    """How to start (and restart) one child.

    ``actor_class`` derives from ``pykka.Actor`` (made concrete on the
    supervisor's runtime) or is already concrete. ``on_start(ref)`` runs in
    the supervisor after each (re)start, so the owner learns the new ref;
    ``on_exit(info)`` runs when the child exits, before any restart, so the
    owner can put back the work it held. ``counted(info)`` says whether a
    restart after that exit counts against the restart intensity (default:
    every one does); an owner that already bounds a cause (an action that
    crashes its worker is retried a few times, then dead-lettered) leaves it out.
    """

    name: str
    actor_class: type[Any]  # a pykka.Actor subclass, abstract (plain Actor) or concrete
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    restart: Restart = "permanent"
    on_start: Callable[[pykka.ActorRef[Any]], None] | None = None
    on_exit: Callable[[ExitInfo], None] | None = None
    counted: Callable[[ExitInfo], bool] | None = None


class ChildInfo(msgspec.Struct, frozen=True):
    """One child as its supervisor sees it; ``children`` is filled by :func:`tree`."""

    name: str
    state: ChildState
    restart: Restart
    restarts: int
    urn: str | None
    ref: pykka.ActorRef[Any] | None
    supervisor: bool
    children: list[ChildInfo] | None = None


class _Exited(msgspec.Struct, frozen=True):
    name: str
    urn: str
    reason: ExitReason
    error: BaseException | None


class _RestartDue(msgspec.Struct, frozen=True):
    token: int


class _Call(msgspec.Struct, frozen=True):
    method: Callable[..., Any]  # a Supervisor method, run in the supervisor with ``args``
    args: tuple[Any, ...] = ()


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):  # gone, and so is its interest
        ref.tell(message)


class _Watch:
    """What a child is started with: whom to tell its exit, and where to say it started."""

    __slots__ = ("name", "started", "supervisor")

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, name: str, started: pykka.Future[Any],
    ) -> None:
        self.supervisor = supervisor  # told _Exited; None for a top-level supervisor
        self.name = name
        self.started: pykka.Future[Any] | None = started  # set once: None or the start error


def _as_failure(exc: BaseException) -> BaseException | None:
    """``exc`` as a failure of one child, or None for what must pass unchanged."""
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, KeyboardInterrupt) or is_control_flow(exc):
        return None
    error = ChildExitError(f"{exc!r} escaped the actor")
    error.__cause__ = exc
    return error


class _Watched(pykka.Actor):
    """Mixin for children: says when ``on_start`` returned, and how the actor loop ended.

    It sits first in the child's MRO, so its ``on_start`` wraps the child's
    own. It overrides three private pykka methods, for want of public hooks:
    ``_actor_loop``, the only place that sees every ending (``on_failure``
    is not called for a failed ``on_start`` or ``on_stop``, ``on_stop`` not
    for a crash, neither for a killed greenlet); ``_handle_failure``, the one
    place every crash passes with its exception; and ``_handle_receive``, to
    keep a ``BaseException`` from stopping every actor (see the module
    docstring). pykka is pinned to its major version, and the supervision
    tests run on every runtime.
    """

    _supervision_watch: _Watch | None = None
    _supervision_error: BaseException | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._supervision_watch = kwargs.pop(_WATCH, None)
        super().__init__(*args, **kwargs)

    def _supervision_started(self, error: BaseException | None) -> None:
        watch = self._supervision_watch
        started = watch.started if watch is not None else None
        if started is not None and watch is not None:
            watch.started = None
            started.set(error)

    def on_start(self) -> None:
        try:
            super().on_start()
        except BaseException as exc:
            error = _as_failure(exc)
            # Gone from the registry before the supervisor hears of it, as when it stops.
            pykka.ActorRegistry.unregister(self.actor_ref)
            self._supervision_started(error or ChildExitError(f"{exc!r} ended on_start"))
            if error is None or error is exc:
                raise
            raise error from exc
        self._supervision_started(None)

    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        except Exception:
            raise
        except BaseException as exc:
            error = _as_failure(exc)
            if error is not None:
                raise error from exc
            if isinstance(exc, KeyboardInterrupt):
                raise  # the user's: pykka stops every actor
            # A runtime's interrupt the runtime's actor did not turn into an
            # ending itself (a greenlet killed in a patched "thread"): this
            # actor ends, as killed; the asker hears it is dead, no one else.
            self._supervision_error = self._supervision_error or exc
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise pykka.ActorDeadError(f"{self} was interrupted: {exc!r}") from exc

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._supervision_error is None:
            self._supervision_error = exception_value or RuntimeError("unknown failure")
        super()._handle_failure(exception_type, exception_value, traceback)

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        except BaseException as exc:  # e.g. a killed greenlet: still an exit to report
            self._supervision_error = self._supervision_error or exc
            raise
        finally:
            self._supervision_ended()

    def on_killed_before_start(self, exc: BaseException) -> None:
        # gevent: the loop never ran, so _actor_loop's ending above never will.
        error = ChildExitError(f"killed before it started: {exc!r}")
        error.__cause__ = exc
        self._supervision_error = self._supervision_error or error
        self._supervision_ended()

    def _supervision_ended(self) -> None:
        """Say the start failed (if it had not returned yet) and tell the supervisor the exit."""
        watch, error = self._supervision_watch, self._supervision_error
        if watch is not None:
            self._supervision_started(error or ChildExitError("exited before it started"))
            self._supervision_watch = None  # an ending is told once
            if watch.supervisor is not None:
                reason: ExitReason = "normal" if error is None else "crash"
                _tell(watch.supervisor, _Exited(watch.name, self.actor_urn, reason, error))


_WATCHED = "_supervision_watched"  # a concrete class's own cached watched subclass
_watched_lock = threading.Lock()


def _watched(concrete: type[pykka.Actor]) -> type[pykka.Actor]:
    if issubclass(concrete, _Watched):
        return concrete
    # Cached on the class itself (a cycle the gc collects with it), not in a
    # global cache that would keep a simulation runtime's classes alive.
    with _watched_lock:
        watched: type[pykka.Actor] | None = concrete.__dict__.get(_WATCHED)
        if watched is None:
            namespace = {"__module__": concrete.__module__, "__qualname__": concrete.__qualname__}
            watched = type(concrete.__name__, (_Watched, concrete), namespace)
            setattr(concrete, _WATCHED, watched)
        return watched


def _child_class(actor_class: type[pykka.Actor], runtime: Runtime) -> type[pykka.Actor]:
    concrete = bind_actor(actor_class, runtime) if inspect.isabstract(actor_class) else actor_class
    return _watched(concrete)


class _Child:
    __slots__ = ("cause", "ref", "restarts", "spec", "state", "token", "urn")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.ref: pykka.ActorRef[Any] | None = None
        self.urn: str | None = None  # the running instance's; its exit notice must match
        self.state: ChildState = "stopped"
        self.restarts = 0
        self.token = 0  # the pending delayed restart this child waits for
        self.cause: tuple[str, ExitReason] | None = None  # the exit that makes it restart


class Supervisor(pykka.Actor):
    """Starts ``specs`` in order, restarts them by ``strategy``, stops them in reverse.

    Its ``on_start`` starts the children one by one and raises
    :class:`SupervisorStartError` if one cannot start (see the module
    docstring). More than ``max_restarts`` restarts within ``within`` seconds
    make it stop its children and itself, after calling ``on_give_up`` with a
    :class:`RestartIntensityError`; as the child of another supervisor, it
    then exits as a crash with that error, escalating. With ``backoff``,
    restarts wait on the runtime's scheduler. Start it with
    :func:`start_supervisor` (which binds it to ``runtime``), or nest it with
    :func:`supervisor_spec`. Each child gets ``shutdown_timeout`` seconds to
    stop; pykka cannot kill, so one that overruns is logged and left behind.
    """

    # Set by _Watched, which every supervisor is started under (see _child_class).
    _supervision_watch: _Watch | None = None
    _supervision_error: BaseException | None = None

    def __init__(
        self,
        specs: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: Backoff | None = None,
        runtime: str | Runtime | None = None,
        name: str = "supervisor",
        shutdown_timeout: float = 5.0,
        on_give_up: Callable[[RestartIntensityError], None] | None = None,
    ) -> None:
        super().__init__()
        if strategy not in get_args(Strategy):
            raise ValueError(f"unknown strategy {strategy!r}")
        if max_restarts < 0 or within <= 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")
        self.name = name
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.backoff = backoff
        self.runtime = get_runtime(runtime if runtime is not None else "thread")
        self.shutdown_timeout = shutdown_timeout
        self.on_give_up = on_give_up
        self._children: list[_Child] = []
        for spec in specs:
            self._add(spec)
        self._recent: collections.deque[float] = collections.deque()
        self._scheduler: Scheduler | None = None
        self._timers: dict[int, TimerHandle] = {}
        self._tokens = itertools.count(1)

    # Lifecycle hooks (in the supervisor's own thread or greenlet)

    def on_start(self) -> None:
        for child in list(self._children):
            error = self._start(child)
            if error is not None:
                _log.error("child_start_failed", supervisor=self.name, child=child.spec.name,
                           error=repr(error))
                self._shutdown()  # those already started, in reverse order
                raise SupervisorStartError(self.name, child.spec.name, error)

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *_exc_info: Any) -> None:
        self._shutdown()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Exited):
            child = self._find(message.name)
            if child is not None and child.urn == message.urn:
                self._exited(child, message.reason, message.error)
        elif isinstance(message, _RestartDue):
            self._timers.pop(message.token, None)
            for child in list(self._children):
                if child.state == "restarting" and child.token == message.token:
                    self._launch(child)
        elif isinstance(message, _Call):
            return message.method(self, *message.args)
        else:
            return super().on_receive(message)
        return None

    # Operations (call through SupervisorHandle, or ask a _Call)

    def which_children(self) -> list[ChildInfo]:
        """Each child in start order: state, restart count, ref."""
        return [
            ChildInfo(
                c.spec.name, c.state, c.spec.restart, c.restarts, c.urn, c.ref,
                _is_supervisor(c.spec.actor_class),
            )
            for c in self._children
        ]

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Add ``spec`` and start it; a failed start raises SupervisorStartError, adds nothing."""
        child = self._add(spec)
        error = self._start(child)
        if error is not None:
            self._children.remove(child)
            raise SupervisorStartError(self.name, spec.name, error)
        return self._ref(child)

    def terminate_child(self, name: str) -> None:
        """Stop child ``name`` (not restarted); a temporary child is also deleted."""
        child = self._get(name)
        self._terminate(child)
        if child.spec.restart == "temporary":
            self._children.remove(child)

    def restart_child(self, name: str) -> pykka.ActorRef[Any]:
        """Stop child ``name`` if running and start it again (not counted in the intensity)."""
        child = self._get(name)
        self._terminate(child)
        error = self._start(child)
        if error is not None:
            raise SupervisorStartError(self.name, name, error)
        child.restarts += 1
        _log.info("child_restarted", supervisor=self.name, child=name, reason="manual",
                  exited=None, restarts=child.restarts)
        return self._ref(child)

    def delete_child(self, name: str) -> None:
        """Forget stopped child ``name``, so its name can be used again."""
        child = self._get(name)
        if child.state != "stopped":
            raise ValueError(f"child {name!r} is {child.state}; terminate it first")
        self._children.remove(child)

    # Internals

    def _add(self, spec: ChildSpec) -> _Child:
        if not (isinstance(spec.actor_class, type) and issubclass(spec.actor_class, pykka.Actor)):
            raise TypeError(f"{spec.name}: actor_class must be a pykka.Actor subclass")
        if self._find(spec.name) is not None:
            raise ValueError(f"a child named {spec.name!r} already exists")
        child = _Child(spec)
        self._children.append(child)
        return child

    def _find(self, name: str) -> _Child | None:
        return next((c for c in self._children if c.spec.name == name), None)

    def _get(self, name: str) -> _Child:
        child = self._find(name)
        if child is None:
            raise KeyError(f"no child named {name!r}")
        return child

    @staticmethod
    def _ref(child: _Child) -> pykka.ActorRef[Any]:
        assert child.ref is not None
        return child.ref

    def _start(self, child: _Child) -> BaseException | None:
        """Start ``child`` and wait for its ``on_start``; returns the error instead of raising.

        A child that failed to start is stopped (and its exit notice ignored).
        """
        spec = child.spec
        kwargs = dict(spec.kwargs)
        if _is_supervisor(spec.actor_class):
            kwargs.setdefault("runtime", self.runtime)
            kwargs.setdefault("name", spec.name)
        started = self.runtime.future()
        kwargs[_WATCH] = _Watch(self.actor_ref, spec.name, started)
        try:
            ref = _child_class(spec.actor_class, self.runtime).start(*spec.args, **kwargs)
        except BaseException as exc:
            error = _as_failure(exc)
            if error is None:
                raise
            return error
        # Set by the child once its on_start returned or raised (a nested
        # supervisor's, once its whole tree started): OTP's ordered start.
        error = cast("BaseException | None", started.get())
        if error is not None:
            return error
        child.ref, child.urn, child.state = ref, ref.actor_urn, "running"
        if spec.on_start is not None:
            try:
                spec.on_start(ref)
            except Exception as exc:  # noqa: BLE001 - counts as the child's crash
                child.urn = None
                self._halt(ref)
                child.ref, child.state = None, "stopped"
                return exc
        return None

    def _launch(self, child: _Child) -> None:
        """Start or restart ``child``; a failure comes back as its crash, through the mailbox."""
        cause, child.cause = child.cause, None
        error = self._start(child)
        if error is not None:
            child.urn, child.state = f"failed:{next(self._tokens)}", "restarting"
            self.actor_ref.tell(_Exited(child.spec.name, child.urn, "crash", error))
        elif cause is not None:
            child.restarts += 1
            _log.info("child_restarted", supervisor=self.name, child=child.spec.name,
                      reason=cause[1], exited=cause[0], restarts=child.restarts)

    def _halt(self, ref: pykka.ActorRef[Any]) -> None:
        try:
            ref.stop(block=True, timeout=self.shutdown_timeout)
        except pykka.Timeout:
            _log.warning("child_stop_timeout", supervisor=self.name, urn=ref.actor_urn)

    def _terminate(self, child: _Child) -> None:
        """Stop ``child`` on purpose: its exit notice is ignored, its on_exit says shutdown."""
        child.token, child.cause = 0, None  # a pending delayed restart no longer applies
        ref, urn = child.ref, child.urn
        child.ref, child.urn, child.state = None, None, "stopped"
        if ref is not None:
            self._halt(ref)
            self._notify(child, ExitInfo(child.spec.name, "shutdown", None, urn, child.restarts))

    def _notify(self, child: _Child, info: ExitInfo) -> None:
        if child.spec.on_exit is not None:
            try:
                child.spec.on_exit(info)
            except Exception:  # noqa: BLE001 - the owner's bug must not take the tree down
                _log.exception("on_exit_failed", supervisor=self.name, child=info.name)

    def _exited(self, child: _Child, reason: ExitReason, error: BaseException | None) -> None:
        name, spec = child.spec.name, child.spec
        info = ExitInfo(name, reason, error, child.urn, child.restarts)
        child.ref, child.urn, child.state = None, None, "stopped"
        if reason == "crash":
            _log.warning("child_crashed", supervisor=self.name, child=name, reason=repr(error))
        else:
            _log.info("child_exited", supervisor=self.name, child=name, reason=reason)
        self._notify(child, info)
        if spec.restart == "temporary" or (spec.restart == "transient" and reason != "crash"):
            if spec.restart == "temporary":
                self._children.remove(child)
            return
        if spec.counted is None or spec.counted(info):
            now = self.runtime.monotonic()
            self._recent.append(now)
            while now - self._recent[0] > self.within:
                self._recent.popleft()
            if len(self._recent) > self.max_restarts:
                self._give_up(name, reason, error)
                return
        index = self._children.index(child)
        if self.strategy == "one_for_one":
            group = [child]
        else:
            start = 0 if self.strategy == "one_for_all" else index
            group = [c for i, c in enumerate(self._children)
                     if i >= start and (c is child or c.state != "stopped")]
        for sibling in reversed(group):
            if sibling is not child:
                self._terminate(sibling)
                if sibling.spec.restart == "temporary":
                    self._children.remove(sibling)
        group = [c for c in group if c in self._children]
        for c in group:
            c.state, c.cause = "restarting", (name, reason)
        if self.backoff is None:
            for c in group:
                self._launch(c)
            return
        token = next(self._tokens)
        for c in group:
            c.token = token
        if self._scheduler is None:
            self._scheduler = self.runtime.scheduler()
        delay = self.backoff.delay(len(self._recent))
        self._timers[token] = self._scheduler.call_later(
            delay, _tell, self.actor_ref, _RestartDue(token)
        )
        _log.debug("child_restart_scheduled", supervisor=self.name, child=name, delay=delay)

    def _give_up(self, name: str, reason: ExitReason, error: BaseException | None) -> None:
        _log.error("supervisor_gave_up", supervisor=self.name, child=name, reason=reason,
                   error=repr(error), max_restarts=self.max_restarts, within=self.within)
        self._shutdown()
        exc = RestartIntensityError(
            f"supervisor {self.name!r}: more than {self.max_restarts} restarts in "
            f"{self.within} s (last: {name!r}, {reason})"
        )
        exc.__cause__ = error
        if self.on_give_up is not None:
            try:
                self.on_give_up(exc)
            except Exception:  # noqa: BLE001 - the owner's bug must not keep the tree up
                _log.exception("on_give_up_failed", supervisor=self.name)
        watch = self._supervision_watch
        if watch is not None and watch.supervisor is not None:
            _log.error("supervisor_escalated", supervisor=self.name, child=name, reason=reason,
                       error=repr(error))
            self._supervision_error = exc
        self._stop()  # now: what is queued behind must not start anything again

    def _shutdown(self) -> None:
        for child in reversed(self._children):
            self._terminate(child)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None


def _is_supervisor(actor_class: type[pykka.Actor]) -> bool:
    return issubclass(actor_class, Supervisor)


class SupervisorHandle:
    """What :func:`start_supervisor` returns: the ref, and the operations as blocking calls."""

    def __init__(self, ref: pykka.ActorRef[Supervisor], timeout: float = 10.0) -> None:
        self.ref = ref
        self.timeout = timeout

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        return self.ref.ask(_Call(method, args), timeout=self.timeout)

    def which_children(self) -> list[ChildInfo]:
        """The supervisor's children, in start order."""
        result: list[ChildInfo] = self._call(Supervisor.which_children)
        return result

    def tree(self) -> list[ChildInfo]:
        """The children, with each sub-supervisor's own children filled in."""
        return tree(self.ref, self.timeout)

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Add and start a child; raises what its start raised."""
        ref: pykka.ActorRef[Any] = self._call(Supervisor.start_child, spec)
        return ref

    def terminate_child(self, name: str) -> None:
        """Stop a child for good (until :meth:`restart_child`)."""
        self._call(Supervisor.terminate_child, name)

    def restart_child(self, name: str) -> pykka.ActorRef[Any]:
        """Restart a child (stopping it first if it runs); returns its new ref."""
        ref: pykka.ActorRef[Any] = self._call(Supervisor.restart_child, name)
        return ref

    def delete_child(self, name: str) -> None:
        """Forget a stopped child."""
        self._call(Supervisor.delete_child, name)

    def is_alive(self) -> bool:
        """Whether the supervisor still runs (it stops itself when it gives up)."""
        return self.ref.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the children, in reverse start order, then the supervisor; False if already dead."""
        return self.ref.stop(block=True, timeout=timeout if timeout is not None else self.timeout)


def tree(ref: pykka.ActorRef[Any], timeout: float = 10.0) -> list[ChildInfo]:
    """``ref``'s children, with sub-supervisors' children filled in (asked from the caller)."""
    try:
        infos: list[ChildInfo] = ref.ask(
            _Call(Supervisor.which_children), block=True, timeout=timeout
        )
    except pykka.ActorDeadError:
        return []
    return [
        msgspec.structs.replace(info, children=tree(info.ref, timeout))
        if info.supervisor and info.ref is not None else info
        for info in infos
    ]


def start_supervisor(
    specs: Iterable[ChildSpec],
    strategy: Strategy = "one_for_one",
    *,
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
    runtime: str | Runtime | None = None,
    name: str = "supervisor",
    shutdown_timeout: float = 5.0,
    on_give_up: Callable[[RestartIntensityError], None] | None = None,
) -> SupervisorHandle:
    """Start a top-level supervisor on ``runtime`` (default ``"thread"``), its children started.

    Returns once every child has started, in order. ``on_give_up(error)`` is
    called (in the supervisor, after its children were stopped) if it ever
    exceeds its restart intensity and stops.

    Raises:
        SupervisorStartError: a child could not start (the children already
            started are stopped again, the supervisor too).
        ValueError: for a bad ``strategy``, ``max_restarts`` or ``within``.
    """
    rt = get_runtime(runtime if runtime is not None else "thread")
    started = rt.future()
    ref = _child_class(cast("type[pykka.Actor]", Supervisor), rt).start(
        list(specs), strategy=strategy, max_restarts=max_restarts, within=within,
        backoff=backoff, runtime=rt, name=name, shutdown_timeout=shutdown_timeout,
        on_give_up=on_give_up, **{_WATCH: _Watch(None, name, started)},
    )
    error: BaseException | None = started.get()
    if error is not None:
        raise error
    return SupervisorHandle(cast("pykka.ActorRef[Supervisor]", ref))


def supervisor_spec(
    name: str,
    specs: Iterable[ChildSpec],
    *,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
    restart: Restart = "permanent",
    on_start: Callable[[pykka.ActorRef[Any]], None] | None = None,
    on_exit: Callable[[ExitInfo], None] | None = None,
    on_give_up: Callable[[RestartIntensityError], None] | None = None,
) -> ChildSpec:
    """A ChildSpec for a nested Supervisor (it runs on its parent's runtime).

    Its start fails (failing its parent's) if one of its children cannot
    start; ``on_give_up`` is called as for :func:`start_supervisor`, before
    the give-up escalates to the parent as a crash.
    """
    kwargs = {"strategy": strategy, "max_restarts": max_restarts, "within": within,
              "backoff": backoff, "name": name, "on_give_up": on_give_up}
    actor_class = cast("type[pykka.Actor]", Supervisor)
    return ChildSpec(name, actor_class, (list(specs),), kwargs, restart, on_start, on_exit)
