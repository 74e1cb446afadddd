# SPDX-License-Identifier: MIT
"""Site: an actor with its own mailbox that receives actions and executes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pykka

from echo_actors import pipeline
from echo_actors._messages import Batch, Done, LifeChanged
from echo_actors._settle import CANCELLED, COMPLETED, CRASHED, FAILED, Tally
from echo_actors.action import Action
from echo_actors.errors import CrashError, RoutingError

if TYPE_CHECKING:
    from echo_actors._settle import Settler
    from echo_actors._ticket import Ticket
    from echo_actors.dispatcher import Desk
    from echo_actors.life import Life, LifeSnapshot
    from echo_actors.plan import Plan
    from echo_actors.runtime import Runtime

__all__ = ["Site", "SiteContext"]


class SiteContext:
    """What a Sequence gives its Sites: the plan, Life, runtime, pipeline steps, and where
    attempts end (the settler) and Sites report (the dispatcher's desk)."""

    def __init__(
        self, plan: Plan, life: Life, runtime: Runtime, settler: Settler, desk: Desk,
        steps: tuple[pipeline.Step, ...] = (),
    ) -> None:
        self.plan = plan
        self.life = life
        self.runtime = runtime
        self.settler = settler
        self.desk = desk
        self.steps = steps


def crashed_running_an_action(error: BaseException | None) -> bool:
    """Whether a Site's exit ``error`` is a :class:`CrashError` raised while running an action.

    Such a crash is counted against that action's attempts (it is requeued,
    then dead-lettered), not against the supervisor's restart intensity,
    which guards against Sites that cannot run at all.
    """
    while error is not None:
        if getattr(error, "echo_attempt", None) is not None:
            return True
        error = error.__cause__
    return False


class Site(pykka.Actor):
    """Runs the actions the dispatcher sends it, one at a time, in order.

    Subclass it and override :meth:`receive` (Echo's ``Site::Receive``) to
    change how an action is received; call ``super().receive(action, life)``
    for the default behaviour. Whatever ``receive`` raises is the action's
    failure (retried if worth it), ``SystemExit`` included, except
    :class:`CrashError`: raising it says the Site itself is broken, so it
    crashes, its supervisor restarts it, and the action goes back to the
    queue with the attempt counted. The Site's own attributes start with
    ``site_`` so they do not collide with yours.
    """

    site_snapshot: LifeSnapshot
    """Life's hooks and Fate as last pushed to this Site."""

    def __init__(self, site_index: int, site_context: SiteContext) -> None:
        super().__init__()
        self.site_index = site_index
        self.site_context = site_context
        self._site_call: pipeline.Next = self._site_receive

    def on_start(self) -> None:
        self.site_snapshot = self.site_context.life.subscribe(self.actor_ref)
        self._site_build()

    def on_stop(self) -> None:
        self.site_context.life.unsubscribe(self.actor_ref)

    def on_failure(self, *_exc_info: Any) -> None:
        self.site_context.life.unsubscribe(self.actor_ref)

    def _site_build(self) -> None:
        events = self.site_snapshot.fate.action_events
        steps: list[pipeline.Step] = [pipeline.events] if events else []
        steps += [pipeline.license, *self.site_context.steps, pipeline.hooks, pipeline.timeout]
        self._site_call = pipeline.compose(steps, self, self._site_receive)

    def _site_receive(self, action: Action) -> Any:
        return self.receive(action, self.site_context.life)

    def receive(self, action: Action, life: Life) -> Any:
        """Execute ``action`` by the plan and return its result.

        Looks the function up and converts the content to the signature's
        type; license, hooks and timeout are steps of the pipeline around it.

        Raises:
            RoutingError: no function of that name.
            ValidationError: the content does not fit the signature.
            Exception: whatever the function raised.
        """
        entry = self.site_context.plan.lookup(action.name)
        if entry is None:
            raise RoutingError(f"no function serves actions named {action.name!r}")
        signature, function = entry
        return function(signature.convert(action.content))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Batch):
            self._site_run(message)
        elif isinstance(message, LifeChanged):
            self.site_snapshot = message.snapshot
            self._site_build()
        else:
            return super().on_receive(message)
        return None

    def _site_run(self, batch: Batch) -> None:
        settler = self.site_context.settler
        tally = Tally()
        ran = 0
        try:
            for ticket in batch.tickets:
                if settler.cancelling:
                    settler.settle(ticket, CANCELLED, tally=tally)
                    continue
                if not ticket.claim(batch):
                    continue  # stolen by an idle Site, or cancelled
                ran += 1
                self._site_attempt(ticket, settler, tally)
        finally:
            try:
                settler.flush(tally)
            finally:
                self.site_context.desk.post(Done(self.site_index, ran, tally.failed))

    def _site_attempt(self, ticket: Ticket, settler: Settler, tally: Tally) -> None:
        outcome, value = CRASHED, None
        try:
            value = self._site_call(ticket.action)
            outcome = COMPLETED
        except (Exception, SystemExit) as exc:  # every failure is the action's
            if isinstance(exc, CrashError):
                exc.echo_attempt = ticket.action.id  # type: ignore[attr-defined]
                value = exc
                raise
            outcome, value = FAILED, exc
        except BaseException as exc:  # the runtime's own control flow: the Site goes down
            value = exc
            raise
        finally:
            settler.settle(ticket, outcome, value, fate=self.site_snapshot.fate, tally=tally,
                           site=self.site_index)
