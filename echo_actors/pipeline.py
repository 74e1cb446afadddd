# SPDX-License-Identifier: MIT
"""The execution pipeline: the steps every attempt of an action goes through on its Site.

A step is a plain callable ``step(action, site, call_next) -> result`` that does
its part and calls ``call_next(action)`` for the rest, in the manner of
Dramatiq's middleware and structlog's processors. Echo's order is kept:

    events -> license -> your steps -> hooks (all resolved first) -> timeout -> Site.receive

(the delay is served before, by a timer; the result, retry and ``next`` after,
by the one place that ends an attempt). Pass your own steps with
``Sequence(..., steps=[...])``: rate limits, metrics, tracing.

An action served by an ``async def`` function does not hold its Site while it
awaits: from ``hooks`` inwards the pipeline becomes one coroutine, awaited on
the Sequence's event loop thread (with hooks, all of them run there too, then
``timeout``, ``Site.receive`` and the function, in that order; without, the
function's coroutine is made on the Site), and the steps before ``hooks`` see
``call_next`` return a :class:`Pending` at once. ``async`` hooks around a plain function are
awaited on that loop while the Site waits.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from echo_actors._logging import get_logger
from echo_actors.action import Action
from echo_actors.errors import ActionTimeoutError, RoutingError
from echo_actors.license import verify

if TYPE_CHECKING:
    from echo_actors.site import Site

__all__ = ["Next", "Pending", "Step", "compose", "events", "hooks", "license", "timeout"]

_log = get_logger("echo_actors.site")

Next = Callable[[Action], Any]
"""The rest of the pipeline: call it with the action to run it."""

Step = Callable[[Action, "Site", Next], Any]
"""One step: ``step(action, site, call_next)`` returns the result or raises."""


class Pending:
    """What ``call_next`` returns for an action served by an ``async def`` function.

    ``coroutine`` is the rest of the pipeline; the Site hands it to the
    Sequence's event loop, and the attempt ends when it does. A step that
    wants to act at that end wraps it in a coroutine of its own.
    """

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine

    def __repr__(self) -> str:
        return f"<Pending {self.coroutine!r}>"


def events(action: Action, site: Site, call_next: Next) -> Any:
    """Log ``action_started`` / ``action_completed`` / ``action_failed`` (debug)."""
    if not _log.isEnabledFor(logging.DEBUG):
        return call_next(action)
    fields = {"action_id": action.id, "action_name": action.name, "site": site.site_index,
              "attempt": action.attempt}
    _log.debug("action_started", **fields)
    try:
        result = call_next(action)
    except BaseException as exc:
        _log.debug("action_failed", error=f"{type(exc).__name__}: {exc}", **fields)
        raise
    if isinstance(result, Pending):
        result.coroutine = _logged(result.coroutine, fields)
        return result
    _log.debug("action_completed", **fields)
    return result


async def _logged(coroutine: Coroutine[Any, Any, Any], fields: dict[str, Any]) -> Any:
    try:
        result = await coroutine
    except BaseException as exc:
        _log.debug("action_failed", error=f"{type(exc).__name__}: {exc}", **fields)
        raise
    _log.debug("action_completed", **fields)
    return result


def license(action: Action, site: Site, call_next: Next) -> Any:
    """With license keys in the Fate, refuse an action whose license does not verify.

    The check is the one at the door, for the action's admission: valid when
    it was admitted, and its nonces claimed for that admission, so a retry,
    a crash requeue or a requeued dead letter passes again and a replay does not.
    """
    keys = site.site_snapshot.fate.license_keys
    ticket = site.site_ticket
    context = site.site_context
    if keys and not (ticket.receipt is not None and context.settler.production.verifies_licenses):
        admission, admitted_at = context.admission(ticket)
        verify(action, keys, nonces=context.nonces, admission=admission,
               now=admitted_at)
    return call_next(action)


def hooks(action: Action, site: Site, call_next: Next) -> Any:
    """Before-hooks, the rest, after-hooks; every hook is found before anything runs.

    For an ``async def`` function all of it is a coroutine: a :class:`Pending`.
    A hook may be ``async def`` too: it is awaited (on the Sequence's loop).
    """
    asynchronous = site.site_context.plan.is_async(action.name)
    if not (action.hooks or action.after):
        if asynchronous:  # no hooks: the function's coroutine itself, made here
            result = call_next(action)
            return Pending(result) if inspect.iscoroutine(result) else result
        return call_next(action)
    registered = site.site_snapshot.hooks
    before = [_hook(registered, name) for name in action.hooks]
    after = [_hook(registered, name) for name in action.after]
    if asynchronous:
        return Pending(_awaited(action, before, after, call_next))
    for hook in before:
        _waited(hook(action), site)
    result = call_next(action)
    for hook in after:
        _waited(hook(action, result), site)
    return result


def _waited(value: Any, site: Site) -> None:
    if inspect.isawaitable(value):  # an async hook: run it on the loop, the Site waits
        site.site_context.runner.call(value)


async def _awaited(
    action: Action, before: Iterable[Callable[..., Any]], after: Iterable[Callable[..., Any]],
    call_next: Next,
) -> Any:
    for hook in before:
        value = hook(action)
        if inspect.isawaitable(value):
            await value
    result = call_next(action)
    if inspect.isawaitable(result):
        result = await result
    for hook in after:
        value = hook(action, result)
        if inspect.isawaitable(value):
            await value
    return result


def _hook(registered: Any, name: str) -> Callable[..., Any]:
    hook = registered.get(name)
    if hook is None:
        raise RoutingError(f"no hook named {name!r} is registered in Life")
    return hook  # type: ignore[no-any-return]


def timeout(action: Action, site: Site, call_next: Next) -> Any:
    """Hold the rest to the signature's ``timeout`` (interrupted where the runtime can)."""
    signature = site.site_context.plan.signature(action.name)
    limit = None if signature is None else signature.timeout
    if limit is None:
        return call_next(action)
    if site.site_context.plan.is_async(action.name):  # the loop cancels the coroutine
        return _limited(call_next(action), limit, action)
    try:
        return site.site_context.runtime.call_with_timeout(limit, call_next, action)
    except TimeoutError as exc:
        raise ActionTimeoutError(f"{action.name} ran past its timeout of {limit} s") from exc


async def _limited(awaitable: Any, limit: float, action: Action) -> Any:
    """Await ``awaitable``, cancelled (it sees ``CancelledError``) after ``limit`` seconds."""
    if not inspect.isawaitable(awaitable):  # a receive of yours answered at once
        return awaitable
    try:
        async with asyncio.timeout(limit) as scope:
            return await awaitable
    except TimeoutError as exc:
        if not scope.expired():
            raise  # its own TimeoutError
        raise ActionTimeoutError(f"{action.name} ran past its timeout of {limit} s") from exc


def compose(steps: Iterable[Step], site: Site, inner: Next) -> Next:
    """One callable that runs ``steps`` in order around ``inner``."""
    call = inner
    for step in reversed(list(steps)):
        call = _link(step, site, call)
    return call


def _link(step: Step, site: Site, call_next: Next) -> Next:
    def run(action: Action) -> Any:
        return step(action, site, call_next)

    return run
