# SPDX-License-Identifier: MIT
"""Life: the shared registry actor (hooks, Fate, a cache, named productions).

Other actors ask it by message. So that it never becomes a bottleneck, Sites
do not ask it per action: Life pushes an immutable snapshot of its hooks and
Fate to its subscribers whenever one of them changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec
import pykka

from echo_actors._messages import LifeChanged
from echo_actors.fate import Fate
from echo_actors.production import Production
from echo_actors.runtime import Runtime, bind_actor, get_runtime
from echo_actors.supervision import ChildSpec, ExitInfo

__all__ = ["Life", "LifeSnapshot"]

F = TypeVar("F", bound=Callable[..., Any])

_RESTART_WAIT = 10.0
"""Seconds a call waits for the supervisor to restart Life's actor before it starts one."""
_MISSING: Any = object()


class LifeSnapshot(msgspec.Struct, frozen=True):
    """What a Site needs from Life on every action: hooks by name and the Fate."""

    version: int
    hooks: Mapping[str, Callable[..., Any]]
    fate: Fate


class _LifeState:
    """What Life knows; kept by the handle so that a restarted actor carries on with it."""

    def __init__(self, fate: Fate) -> None:
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.cache: dict[Any, Any] = {}
        self.productions: dict[str, Production] = {}
        self.subscribers: list[pykka.ActorRef[Any]] = []
        self.snapshot = LifeSnapshot(0, MappingProxyType({}), fate)


class _LifeActor(pykka.Actor):
    """The registry itself; reached through pykka proxies from the Life handle.

    Only this actor touches the state, one message at a time.
    """

    use_daemon_thread = True  # holds no work: a forgotten Life must not keep a process alive

    def __init__(self, state: _LifeState) -> None:
        super().__init__()
        self._state = state
        self._hooks = state.hooks
        self._cache = state.cache
        self._productions = state.productions
        self._subscribers = state.subscribers

    @property
    def _snapshot(self) -> LifeSnapshot:
        return self._state.snapshot

    def _publish(self, fate: Fate | None = None) -> None:
        self._state.snapshot = LifeSnapshot(
            self._snapshot.version + 1,
            MappingProxyType(dict(self._hooks)),
            fate or self._snapshot.fate,
        )
        message = LifeChanged(self._snapshot)
        self._prune()
        for ref in list(self._subscribers):
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                self._subscribers.remove(ref)

    def _prune(self) -> None:
        # A subscriber that crashed never unsubscribed: forget every dead one, so
        # that a Site restarted again and again does not grow the list.
        self._subscribers[:] = [ref for ref in self._subscribers if ref.is_alive()]

    def register_hook(self, name: str, hook: Callable[..., Any]) -> None:
        self._hooks[name] = hook
        self._publish()

    def remove_hook(self, name: str) -> None:
        if self._hooks.pop(name, None) is not None:
            self._publish()

    def set_fate(self, fate: Fate) -> None:
        self._publish(fate)

    def snapshot(self) -> LifeSnapshot:
        return self._snapshot

    def subscribe(self, ref: pykka.ActorRef[Any]) -> LifeSnapshot:
        self._prune()
        if ref not in self._subscribers:
            self._subscribers.append(ref)
        return self._snapshot

    def subscribers(self) -> list[pykka.ActorRef[Any]]:
        return list(self._subscribers)

    def unsubscribe(self, ref: pykka.ActorRef[Any]) -> None:
        if ref in self._subscribers:
            self._subscribers.remove(ref)

    def cache_get(self, key: Any, default: Any) -> Any:
        return self._cache.get(key, default)

    def cache_set(self, key: Any, value: Any) -> None:
        self._cache[key] = value

    def cache_delete(self, key: Any) -> bool:
        return self._cache.pop(key, _MISSING) is not _MISSING

    def add_production(self, name: str, production: Production) -> None:
        if self._productions.get(name, production) is not production:
            raise ValueError(f"a production named {name!r} exists already")
        self._productions[name] = production

    def production(self, name: str) -> Production:
        return self._productions.setdefault(name, Production(name))

    def productions(self) -> list[str]:
        return sorted(self._productions)


class Life:
    """A handle on the registry actor; cheap to pass around, safe from any thread.

    ``Life(fate)`` starts its actor on first use (on the runtime of the first
    Sequence that uses it, or threads). Its state lives in the handle: an
    actor that died is restarted with it, by the owning Sequence's supervisor
    or on the next call. Hooks are Echo's Span: a before-hook is called as
    ``hook(action)``, an after-hook as ``hook(action, result)``; an exception
    from either stops the action.
    """

    def __init__(self, fate: Fate | None = None, *, runtime: str | Runtime | None = None) -> None:
        self._state = _LifeState(fate if fate is not None else Fate())
        self._runtime: Runtime | None = None if runtime is None else get_runtime(runtime)
        self._ref: pykka.ActorRef[Any] | None = None
        self._proxy: pykka.ActorProxy[Any] | None = None
        self._lock = threading.Lock()
        self._restarted: Any = None  # set by each start under a supervisor (its runtime's event)

    def _actor(self) -> pykka.ActorRef[Any]:
        ref = self._ref
        if ref is None or not ref.is_alive():
            if self._restarted is not None:  # its supervisor restarts it: wait for that one
                ref = self._wait_for_restart()
                if ref is not None:
                    return ref
            with self._lock:
                ref = self._ref
                if ref is None or not ref.is_alive():
                    runtime = self._runtime or get_runtime(self._state.snapshot.fate.runtime)
                    self._runtime = runtime
                    ref = self._ref = bind_actor(_LifeActor, runtime).start(self._state)
        return ref

    def _wait_for_restart(self) -> pykka.ActorRef[Any] | None:
        """The supervised actor once its supervisor started it again; None if it stopped
        supervising it (then the caller starts one of its own, as for a Life of its own)."""
        restarted = self._restarted
        while restarted is not None and restarted is self._restarted:
            restarted.clear()
            ref = self._ref
            if ref is not None and ref.is_alive():
                return ref
            if not restarted.wait(_RESTART_WAIT):
                return None
        return None

    def child_spec(self, name: str = "life") -> ChildSpec:
        """A supervisor child that runs this Life's actor (restarted with its state).

        While that supervisor restarts it, calls on this handle wait for the new
        actor rather than start one of their own beside it.
        """
        restarted = (self._runtime or get_runtime("thread")).event()

        def adopt(ref: pykka.ActorRef[Any]) -> None:
            self._ref, self._restarted = ref, restarted
            restarted.set()

        def exited(info: ExitInfo) -> None:
            if info.reason == "shutdown" and self._restarted is restarted:
                self._restarted = None  # stopped on purpose: no restart is coming
                restarted.set()

        return ChildSpec(name, _LifeActor, (self._state,), on_start=adopt, on_exit=exited)

    @property
    def started(self) -> bool:
        """Whether the registry actor is running."""
        return self._ref is not None and self._ref.is_alive()

    def _ask(self, op: str, *args: Any) -> Any:
        try:
            return self._ask_once(op, *args)
        except pykka.ActorDeadError:
            if self._restarted is None:
                raise
            # It stopped before it took the message (a restart): ask its successor.
            return self._ask_once(op, *args)

    def _ask_once(self, op: str, *args: Any) -> Any:
        ref = self._actor()
        if self._proxy is None or self._proxy.actor_ref is not ref:
            self._proxy = ref.proxy()
        return getattr(self._proxy, op)(*args).get()

    def attach(self, runtime: Runtime) -> None:
        """Use ``runtime`` for the actor if it has not started yet (Sequences call this)."""
        if self._ref is None:
            self._runtime = runtime

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]:
        """The registry actor's ref (started if need be)."""
        return self._actor()

    # Hooks (Echo's Span)

    def register_hook(self, name: str, hook: Callable[..., Any]) -> None:
        """Register (or replace) the hook called ``name``; running Sites see it at once."""
        if not isinstance(name, str) or not name:
            raise TypeError("a hook name must be a non-empty str")
        if not callable(hook):
            raise TypeError(f"hook {name!r} is not callable")
        self._ask("register_hook", name, hook)

    def hook(self, name: str) -> Callable[[F], F]:
        """Decorator form of :meth:`register_hook`."""

        def register(fn: F) -> F:
            self.register_hook(name, fn)
            return fn

        return register

    def remove_hook(self, name: str) -> None:
        """Forget the hook called ``name`` (no error if there is none)."""
        self._ask("remove_hook", name)

    def hooks(self) -> list[str]:
        """The registered hook names, sorted."""
        return sorted(self.snapshot().hooks)

    # Fate

    @property
    def fate(self) -> Fate:
        """The current configuration (from :attr:`published`; no round trip)."""
        return self._state.snapshot.fate

    @property
    def published(self) -> LifeSnapshot:
        """The last snapshot Life published: hooks and Fate, immutable, read without a message.

        Only Life's actor replaces it, whole, so a reader always sees one
        consistent version; Sites read it at every action.
        """
        return self._state.snapshot

    def set_fate(self, fate: Fate) -> None:
        """Replace the configuration; running Sites see it from their next action."""
        if not isinstance(fate, Fate):
            raise TypeError(f"expected a Fate, got {type(fate).__name__}")
        self._ask("set_fate", fate)

    def snapshot(self) -> LifeSnapshot:
        """The current hooks and Fate, as an immutable value."""
        snapshot: LifeSnapshot = self._ask("snapshot")
        return snapshot

    def subscribe(self, ref: pykka.ActorRef[Any]) -> LifeSnapshot:
        """Have ``ref`` told ``LifeChanged`` on every change; returns the current snapshot.

        Subscribing twice is subscribing once. Subscribers that died without
        unsubscribing are dropped here and at every change.
        """
        snapshot: LifeSnapshot = self._ask("subscribe", ref)
        return snapshot

    def subscribers(self) -> list[pykka.ActorRef[Any]]:
        """The refs told of changes, as held now (dead ones go at the next subscribe or change)."""
        refs: list[pykka.ActorRef[Any]] = self._ask("subscribers")
        return refs

    def unsubscribe(self, ref: pykka.ActorRef[Any]) -> None:
        """Stop telling ``ref`` about changes (call it from ``on_stop`` and ``on_failure``)."""
        if self._ref is not None and self._ref.is_alive():
            self._ask("unsubscribe", ref)

    # Cache

    def cache_get(self, key: Any, default: Any = None) -> Any:
        """The cached value for ``key``, or ``default``."""
        return self._ask("cache_get", key, default)

    def cache_set(self, key: Any, value: Any) -> None:
        """Cache ``value`` under ``key``."""
        self._ask("cache_set", key, value)

    def cache_delete(self, key: Any) -> bool:
        """Forget ``key``; True if it was there."""
        deleted: bool = self._ask("cache_delete", key)
        return deleted

    # Named productions (Echo's Karma)

    def production(self, name: str) -> Production:
        """The production called ``name``, created in memory if it does not exist."""
        production: Production = self._ask("production", name)
        return production

    def add_production(self, name: str, production: Production) -> None:
        """Register ``production`` under ``name`` (e.g. a durable one)."""
        if not isinstance(production, Production):
            raise TypeError(f"expected a Production, got {type(production).__name__}")
        self._ask("add_production", name, production)

    def productions(self) -> list[str]:
        """The names of the registered productions."""
        names: list[str] = self._ask("productions")
        return names

    def stop(self) -> None:
        """Stop the registry actor (a later call starts a fresh one)."""
        restarted, self._restarted = self._restarted, None
        if restarted is not None:
            restarted.set()
        ref, self._ref = self._ref, None
        if ref is not None and ref.is_alive():
            ref.stop()

    def __repr__(self) -> str:
        state = "running" if self._ref is not None and self._ref.is_alive() else "idle"
        return f"<Life {state}>"
