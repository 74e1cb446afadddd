# SPDX-License-Identifier: MIT
"""The execution pipeline: the steps every attempt of an action goes through on its Site.

A step is a plain callable ``step(action, site, call_next) -> result`` that does
its part and calls ``call_next(action)`` for the rest, in the manner of
Dramatiq's middleware and structlog's processors. Echo's order is kept:

    events -> license -> your steps -> hooks (all resolved first) -> timeout -> Site.receive

(the delay is served before, by a timer; the result, retry and ``next`` after,
by the one place that ends an attempt). Pass your own steps with
``Sequence(..., steps=[...])``: rate limits, metrics, tracing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from echo_actors._logging import get_logger
from echo_actors.action import Action
from echo_actors.errors import ActionTimeoutError, RoutingError
from echo_actors.license import verify

if TYPE_CHECKING:
    from echo_actors.site import Site

__all__ = ["Next", "Step", "compose", "events", "hooks", "license", "timeout"]

_log = get_logger("echo_actors.site")

Next = Callable[[Action], Any]
"""The rest of the pipeline: call it with the action to run it."""

Step = Callable[[Action, "Site", Next], Any]
"""One step: ``step(action, site, call_next)`` returns the result or raises."""


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
    """Before-hooks, the rest, after-hooks; every hook is found before anything runs."""
    if not (action.hooks or action.after):
        return call_next(action)
    registered = site.site_snapshot.hooks
    before = [_hook(registered, name) for name in action.hooks]
    after = [_hook(registered, name) for name in action.after]
    for hook in before:
        hook(action)
    result = call_next(action)
    for hook in after:
        hook(action, result)
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
    try:
        return site.site_context.runtime.call_with_timeout(limit, call_next, action)
    except TimeoutError as exc:
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
