# SPDX-License-Identifier: MIT
"""Runtimes: what actors, futures, events and timers run on.

A runtime is picked by name (``"thread"``, the default, ``"gevent"`` or
``"simulation"``, deterministic on a virtual clock) and
hides everything that differs between them. Code outside this package only
talks to a :class:`Runtime`, so it never knows which one it runs on.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Any, Protocol, cast

import pykka

from echo_actors.runtime._action_future import ActionFuture
from echo_actors.runtime._thread import MainExitHandle, ThreadRuntime, on_main_exit

__all__ = [
    "RUNTIMES",
    "ActionFuture",
    "Event",
    "MainExitHandle",
    "Runtime",
    "Scheduler",
    "TimerHandle",
    "bind_actor",
    "get_runtime",
    "is_control_flow",
    "on_main_exit",
]

class Event(Protocol):
    """A one-shot flag that can be waited on (``threading.Event`` shape)."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class TimerHandle(Protocol):
    """What :meth:`Scheduler.call_later` returns: a timer that can be cancelled."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Runs callbacks after a delay, without holding any actor while it waits.

    Callbacks run on the scheduler's own thread or greenlet: they must be short
    (typically: put something in a queue and wake an actor).
    """

    def call_later(self, delay: float, fn: Any, /, *args: Any) -> TimerHandle: ...
    def pending(self) -> int: ...
    def stop(self) -> None: ...


class Runtime(Protocol):
    """The hooks a runtime provides; one instance may serve many Sequences."""

    name: str
    actor_base: type[pykka.Actor]

    def future(self) -> ActionFuture[Any]: ...
    def event(self) -> Event: ...
    def scheduler(self) -> Scheduler: ...
    def sleep(self, seconds: float) -> None: ...
    def monotonic(self) -> float: ...
    def spawn(self, fn: Any, /, *args: Any) -> Any: ...
    def call_with_timeout(self, seconds: float | None, fn: Any, /, *args: Any) -> Any: ...
    def threadsafe(self) -> Any:
        """A function ``call(fn, *args)`` that any OS thread (an event loop's) may use to run
        ``fn(*args)`` in this runtime, soon; the simulation runtime refuses."""
        ...
    def random(self, name: str = "") -> random.Random:
        """A generator for ``name``'s random choices (seeded on the simulation runtime)."""
        ...


_BOUND = "_echo_actors_bound"  # a base's own cache of the classes bound to it
_bind_lock = threading.Lock()


def _bind(actor_class: type, base: type[pykka.Actor]) -> type[pykka.Actor]:
    if issubclass(actor_class, base):
        return actor_class
    # The cache lives on ``base`` itself, not in a global one: a simulation
    # runtime makes a base class per instance, and a global cache would keep
    # every such runtime (and its kernel) alive for ever. Base, cache and bound
    # classes form a cycle that goes with the runtime.
    with _bind_lock:
        cache: dict[type, type[pykka.Actor]] | None = base.__dict__.get(_BOUND)
        if cache is None:
            cache = {}
            setattr(base, _BOUND, cache)
        bound = cache.get(actor_class)
        if bound is None:
            namespace = {"__module__": actor_class.__module__}
            bound = cache[actor_class] = type(actor_class.__name__, (actor_class, base), namespace)
        return bound


def bind_actor(actor_class: type[Any], runtime: Runtime) -> type[pykka.Actor]:
    """Return ``actor_class`` made concrete on ``runtime`` (a cached mixin class).

    Library actors (and users' Site subclasses) derive from ``pykka.Actor``
    only, an abstract class; the runtime supplies the inbox, future and loop.
    """
    return _bind(cast(type, actor_class), runtime.actor_base)


def is_control_flow(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the runtimes' own interrupts rather than a failure.

    A killed greenlet (``GreenletExit``), a ``gevent.Timeout`` and the
    simulation kernel's interrupt are how a runtime ends or cuts short a
    wait: code that sees one lets it through instead of counting a failure.
    Modules that were never imported cannot have raised anything.
    """
    for module, name in _CONTROL_FLOW:
        loaded = sys.modules.get(module)
        kind = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(kind, type) and isinstance(exc, kind):
            return True
    return False


_CONTROL_FLOW = (
    ("greenlet", "GreenletExit"),
    ("gevent", "Timeout"),
    ("echo_actors.runtime._simulation", "_Interrupt"),
)

RUNTIMES = ("thread", "gevent", "simulation")
"""The runtimes a Sequence can be given by name."""


def get_runtime(name: str | Runtime = "thread", *, seed: int | None = None) -> Runtime:
    """Return the runtime called ``name`` (a Runtime instance is returned as is).

    ``seed`` seeds the runtime's ``random(name)`` streams (``Fate.seed``); the
    simulation runtime's default is 0. An instance keeps the seed it was made with.

    Raises:
        ValueError: for an unknown name.
        ImportError: for ``"gevent"`` when gevent is not installed
            (``pip install 'echo_actors[gevent]'``), for ``"simulation"``
            when greenlet is not (gevent brings it).
    """
    if not isinstance(name, str):
        return name
    if name == "thread":
        return ThreadRuntime(seed)
    if name == "gevent":
        try:
            from echo_actors.runtime._gevent import GeventRuntime  # noqa: PLC0415 - optional
        except ImportError as exc:
            _missing("gevent", "gevent", exc)
            raise
        return GeventRuntime(seed)
    if name == "simulation":
        try:
            from echo_actors.runtime._simulation import SimulationRuntime  # noqa: PLC0415
        except ImportError as exc:
            _missing("simulation", "greenlet", exc)
            raise
        return SimulationRuntime(0 if seed is None else seed)
    raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}")


def _missing(runtime: str, package: str, exc: ImportError) -> None:
    """Raise a clear error if ``exc`` says that the runtime's own package is not installed
    (anything else broken returns, and the caller re-raises it as it came)."""
    if exc.name in (package, "greenlet", "gevent"):
        raise ImportError(f"the {runtime} runtime needs the {package} package: "
                          f"pip install 'echo_actors[{runtime}]'", name=exc.name) from exc


def __getattr__(name: str) -> Any:
    """``SimulationRuntime``, imported on first use (it needs greenlet)."""
    if name == "SimulationRuntime":
        try:
            from echo_actors.runtime._simulation import SimulationRuntime  # noqa: PLC0415
        except ImportError as exc:
            _missing("simulation", "greenlet", exc)
            raise
        return SimulationRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
