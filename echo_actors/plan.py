# SPDX-License-Identifier: MIT
"""Signature and Plan: which actions exist and which function serves each.

A Plan is built once (Echo's Formality) and is read-only afterwards, so every
Site can share it without locks. Unlike Echo's ``Remove``, looking a function
up does not consume it: one function serves every action of its name.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from echo_actors.context import Context
from echo_actors.errors import ValidationError

__all__ = ["Plan", "RetryPolicy", "Signature"]

F = TypeVar("F", bound=Callable[..., Any])


class RetryPolicy(msgspec.Struct, frozen=True):
    """How often and how late a failed action is tried again.

    The n-th retry waits ``min(cap, base * 2**(n-1))`` seconds, spread by
    ``jitter`` (a fraction: 0.1 means up to ±10 %).
    """

    max_attempts: int = 3
    base: float = 0.05
    cap: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("base and cap must be >= 0 and jitter within [0, 1]")

    def backoff(self, attempt: int, random: float) -> float:
        """Seconds to wait after failed ``attempt`` (1-based); ``random`` in [0, 1)."""
        delay = min(self.cap, self.base * 2.0 ** (attempt - 1))
        return max(0.0, delay * (1.0 + self.jitter * (2.0 * random - 1.0)))


class Signature(msgspec.Struct, frozen=True):
    """The declared shape of one action kind.

    ``content_type`` is any type msgspec can convert to (a Struct,
    ``list[str]``, ``dict[str, int]``...); ``None`` accepts any content.
    ``timeout`` (seconds) bounds one execution; ``retry`` overrides the
    Sequence's retry policy for this kind.
    """

    name: str
    content_type: Any = None
    timeout: float | None = None
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Signature name must be a non-empty str, not {self.name!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")

    def convert(self, content: Any) -> Any:
        """``content`` converted to ``content_type``.

        Raises:
            ValidationError: naming the field that does not fit.
        """
        if self.content_type is None:
            return content
        try:
            return msgspec.convert(content, self.content_type)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"{self.name}: invalid content: {exc}") from None


class Plan:
    """The registry of signatures and the functions that serve them.

    Build with chained calls, then :meth:`build` freezes it::

        plan = Plan().with_signature(Signature("Read")).with_function("Read", read).build()

    A function is called as ``fn(content)``, with the content converted to the
    signature's ``content_type``. ``@plan.function("Read")`` registers one as
    a decorator. An ``async def`` function (found once, at :meth:`build`) is
    awaited on the Sequence's event loop instead of holding a Site while it
    waits (see the runtimes guide). A function with a parameter annotated
    :class:`~echo_actors.context.Context` (also found at :meth:`build`) is
    called as ``fn(content, that_parameter=context)``.
    """

    def __init__(self) -> None:
        self._signatures: dict[str, Signature] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._entries: Mapping[str, tuple[Signature, Callable[..., Any]]] | None = None
        self._async: frozenset[str] = frozenset()
        self.contextual: Mapping[str, str] = MappingProxyType({})
        """Action name -> the parameter its function takes a :class:`Context` in (filled
        by :meth:`build`; names whose function asks for none are absent)."""

    def _check_open(self) -> None:
        if self._entries is not None:
            raise RuntimeError("this Plan is built and read-only")

    def with_signature(self, signature: Signature) -> Plan:
        """Declare an action kind; declaring a name twice raises ValueError."""
        self._check_open()
        if not isinstance(signature, Signature):
            raise TypeError(f"expected a Signature, got {type(signature).__name__}")
        if signature.name in self._signatures:
            raise ValueError(f"signature {signature.name!r} is already declared")
        self._signatures[signature.name] = signature
        return self

    def with_function(self, name: str, function: Callable[..., Any]) -> Plan:
        """Serve actions called ``name`` with ``function``.

        Raises:
            KeyError: ``name`` has no signature (as in Echo).
            ValueError: ``name`` already has a function.
            TypeError: ``function`` is not callable.
        """
        self._check_open()
        if name not in self._signatures:
            raise KeyError(f"no signature declared for {name!r}: call with_signature first")
        if name in self._functions:
            raise ValueError(f"a function already serves {name!r}")
        if not callable(function):
            raise TypeError(f"function for {name!r} is not callable")
        self._functions[name] = function
        return self

    def function(self, name: str, signature: Signature | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`with_function` (declaring ``signature`` first if given)."""

        def register(fn: F) -> F:
            if signature is not None:
                self.with_signature(signature)
            self.with_function(name, fn)
            return fn

        return register

    def build(self) -> Plan:
        """Freeze the plan: no more signatures or functions; returns the plan.

        Raises:
            ValueError: a declared signature has no function, or a function asks
                for a :class:`Context` in a parameter that cannot take it by
                keyword after the content.
        """
        if self._entries is None:
            missing = sorted(set(self._signatures) - set(self._functions))
            if missing:
                raise ValueError(f"signatures without a function: {', '.join(missing)}")
            self._entries = MappingProxyType(
                {n: (s, self._functions[n]) for n, s in self._signatures.items()}
            )
            self._async = frozenset(
                n for n, fn in self._functions.items() if is_async_callable(fn)
            )
            asking = {n: context_parameter(n, fn) for n, fn in self._functions.items()}
            self.contextual = MappingProxyType({n: p for n, p in asking.items() if p})
        return self

    @property
    def built(self) -> bool:
        """Whether :meth:`build` was called."""
        return self._entries is not None

    @property
    def asynchronous(self) -> frozenset[str]:
        """The names served by ``async def`` functions (empty until :meth:`build`)."""
        return self._async

    def is_async(self, name: str) -> bool:
        """Whether ``name`` is served by an ``async def`` function (known at :meth:`build`)."""
        return name in self._async

    def names(self) -> list[str]:
        """The declared action names, sorted."""
        return sorted(self._signatures)

    @property
    def has_timeouts(self) -> bool:
        """Whether any signature sets a ``timeout``."""
        return any(s.timeout is not None for s in self._signatures.values())

    def signature(self, name: str) -> Signature | None:
        """The signature of ``name``, or None."""
        return self._signatures.get(name)

    def lookup(self, name: str) -> tuple[Signature, Callable[..., Any]] | None:
        """The signature and function serving ``name`` (not consumed), or None."""
        entries = self._entries
        if entries is None:
            raise RuntimeError("build() the Plan before using it")
        return entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._signatures

    def __repr__(self) -> str:
        state = "built" if self.built else "open"
        return f"<Plan {state}: {', '.join(self.names())}>"


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` function, a
    ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def context_parameter(name: str, fn: Callable[..., Any]) -> str | None:
    """The parameter of ``fn`` annotated with :class:`Context`, or None.

    Raises:
        ValueError: the parameter cannot be passed by keyword after the
            content (``fn(content, parameter=context)`` would not bind).
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature asks for nothing
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: read the annotations as written
        hints = {}
    found = None
    for parameter in signature.parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is Context or annotation in ("Context", "echo_actors.Context"):
            found = parameter.name
            break
    if found is None:
        return None
    try:
        signature.bind(None, **{found: None})
    except TypeError as exc:
        raise ValueError(
            f"the function for {name!r} asks for a Context in {found!r}, but it cannot be "
            f"called as fn(content, {found}=context): {exc}"
        ) from None
    return found
