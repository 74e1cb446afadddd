# SPDX-License-Identifier: MIT
"""Site: an actor with its own mailbox that receives actions and executes them."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from echo_actors._messages import Batch, Done, LifeChanged
from echo_actors.action import Action
from echo_actors.errors import ActionTimeoutError, CrashError, RoutingError
from echo_actors.license import verify

if TYPE_CHECKING:
    from echo_actors._core import Core
    from echo_actors._ticket import Ticket
    from echo_actors.life import Life, LifeSnapshot

__all__ = ["Site"]

_log = structlog.get_logger("echo_actors.site")


class Site(pykka.Actor):
    """Runs the actions the dispatcher sends it, one at a time, in order.

    Subclass it and override :meth:`receive` (Echo's ``Site::Receive``) to
    change how an action is received; call ``super().receive(action, life)``
    for the default behaviour. Whatever ``receive`` raises is the action's
    failure (retried if worth it), except :class:`CrashError`: raising it
    says the Site itself is broken, so it crashes, its supervisor restarts
    it, and the action goes back to the queue with the attempt counted.
    The Site's own attributes start with ``site_`` so they do not collide
    with yours.
    """

    site_snapshot: LifeSnapshot
    """Life's hooks and Fate as last pushed to this Site."""

    def __init__(self, site_index: int, site_core: Core) -> None:
        super().__init__()
        self.site_index = site_index
        self.site_core = site_core
        self.site_lock: threading.Lock = site_core.slots[site_index].lock

    def on_start(self) -> None:
        self.site_snapshot = self.site_core.life.subscribe(self.actor_ref)

    def on_stop(self) -> None:
        self.site_core.life.unsubscribe(self.actor_ref)

    def receive(self, action: Action, life: Life) -> Any:
        """Execute ``action`` by the plan and return its result.

        Before-hooks, the plan's function (content converted to the
        signature's type, within its timeout), then after-hooks.

        Raises:
            RoutingError: no function, or no hook, of that name.
            ValidationError: the content does not fit the signature.
            ActionTimeoutError: the function ran past the signature's timeout.
            Exception: whatever a hook or the function raised.
        """
        core = self.site_core
        entry = core.plan.lookup(action.name)
        if entry is None:
            raise RoutingError(f"no function serves actions named {action.name!r}")
        signature, function = entry
        content = signature.convert(action.content)
        hooks = self.site_snapshot.hooks
        for name in action.hooks:
            self._hook(hooks, name)(action)
        if signature.timeout is None:
            result = function(content)
        else:
            try:
                result = core.runtime.call_with_timeout(signature.timeout, function, content)
            except TimeoutError as exc:
                raise ActionTimeoutError(
                    f"{action.name} ran past its timeout of {signature.timeout} s"
                ) from exc
        for name in action.after:
            self._hook(hooks, name)(action, result)
        return result

    @staticmethod
    def _hook(hooks: Any, name: str) -> Any:
        hook = hooks.get(name)
        if hook is None:
            raise RoutingError(f"no hook named {name!r} is registered in Life")
        return hook

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Batch):
            self._run(message)
        elif isinstance(message, LifeChanged):
            self.site_snapshot = message.snapshot
        else:
            return super().on_receive(message)
        return None

    def _run(self, batch: Batch) -> None:
        core = self.site_core
        index = self.site_index
        lock = self.site_lock
        life = core.life
        ledger = core.ledger
        keys = self.site_snapshot.fate.license_keys
        events = self.site_snapshot.fate.action_events
        started_at = time.perf_counter()
        ran = completed = failed = dead = 0
        cancelled: list[Ticket] = []
        finished: list[Ticket] | None = [] if core.production.acknowledges else None
        for ticket in batch.tickets:
            with lock:
                if ticket.owner is not batch:
                    continue  # stolen by an idle Site
                ticket.started = True
            ran += 1
            if core.cancelling:
                ticket.done = True
                cancelled.append(ticket)
                continue
            action = ticket.action
            if events:
                _log.debug("action_started", action_id=action.id, name=action.name,
                           site=index, attempt=action.attempt)
            try:
                if keys:
                    verify(action, keys)
                result = self.receive(action, life)
            except CrashError:
                ledger.end(completed=completed, dead=dead)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is the action's
                ticket.done = True
                failed += 1
                dead += core.fail(ticket, exc, index)
                continue
            ticket.done = True
            completed += 1
            if finished is not None:
                finished.append(ticket)
            if ticket.future is not None:
                ticket.future.set(result)
            if events:
                _log.debug("action_completed", action_id=action.id, name=action.name,
                           site=index, attempt=action.attempt)
            if action.next is not None:
                core.chain(action, result)
        if finished:
            core.production.ack(finished)
        if cancelled:
            core.hand_back(cancelled)
        # The dispatcher hears first, so that whoever join()s sees settled figures.
        core.tell_dispatcher(Done(index, ran, failed, time.perf_counter() - started_at))
        ledger.end(completed=completed, dead=dead)
