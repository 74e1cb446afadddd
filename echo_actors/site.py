# SPDX-License-Identifier: MIT
"""Site: an actor with its own mailbox that receives actions and executes them."""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import TYPE_CHECKING, Any

import pykka

from echo_actors import pipeline
from echo_actors._async import AsyncRunner
from echo_actors._messages import Batch, Done, Grant
from echo_actors._settle import CANCELLED, COMPLETED, CRASHED, FAILED, Tally
from echo_actors._ticket import AWAITING, _claims
from echo_actors.action import Action
from echo_actors.context import Context
from echo_actors.errors import CrashError, RoutingError
from echo_actors.nonces import MemoryNonceStore

if TYPE_CHECKING:
    from echo_actors._settle import Settler
    from echo_actors._ticket import Ticket
    from echo_actors.dispatcher import Desk
    from echo_actors.life import Life, LifeSnapshot
    from echo_actors.plan import Plan
    from echo_actors.runtime import Runtime

__all__ = ["Site", "SiteContext"]


class SiteContext:
    """What a Sequence gives its Sites: the plan, Life, runtime, pipeline steps, where
    attempts end (the settler), where Sites report (the dispatcher's desk), and the
    event loop that awaits ``async def`` functions (the runner, started on first use)."""

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
        self.runner = AsyncRunner(runtime, settler)
        self.nonces = MemoryNonceStore()
        self.streams: dict[str, random.Random] = {}  # Context.random's generators, by name
        self._admissions = itertools.count(1)
        self._token = os.urandom(6).hex()

    def admit(self, ticket: Ticket, admission: str | None = None) -> None:
        """Record ``ticket``'s admission: now, and a new id unless it is ``admission`` again."""
        if admission is None:
            admission = f"{self._token}-{next(self._admissions)}"
        ticket.admission = (admission, time.time())

    def admission(self, ticket: Ticket) -> tuple[str, float]:
        """``ticket``'s admission (id, time), given now if it came in without one."""
        if ticket.admission is None:
            self.admit(ticket)
        assert ticket.admission is not None
        return ticket.admission


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
    """Life's hooks and Fate as last published, read before every action."""

    site_ticket: Ticket
    """The ticket of the attempt this Site runs now (for pipeline steps)."""

    def __init__(self, site_index: int, site_context: SiteContext) -> None:
        super().__init__()
        self.site_index = site_index
        self.site_context = site_context
        self._site_call: pipeline.Next = self._site_receive
        self._site_plain: pipeline.Next = self._site_receive
        self._site_bare = False
        self._site_life = site_context.life
        self._site_grant: Grant | None = None  # the grant it left for itself (Desk.idle)

    def on_start(self) -> None:
        self._site_build()

    def _site_build(self) -> None:
        """Compose the pipeline for Life's current snapshot, leaving out steps with nothing
        to do under it (no license keys, no events, no signature with a timeout)."""
        context = self.site_context
        self.site_snapshot = snapshot = context.life.published
        fate = snapshot.fate
        steps: list[pipeline.Step] = [pipeline.events] if fate.action_events else []
        if fate.license_keys:
            steps.append(pipeline.license)
        steps += context.steps
        tail = [pipeline.timeout] if context.plan.has_timeouts else []
        self._site_call = pipeline.compose([*steps, pipeline.hooks, *tail], self,
                                           self._site_receive)
        # An action that names no hook, of a plan without async functions, skips that step.
        self._site_plain = self._site_call if context.plan.asynchronous else (
            pipeline.compose([*steps, *tail], self, self._site_receive))
        self._site_bare = self._site_plain == self._site_receive  # nothing wraps receive
        self._site_life = context.life

    def _site_receive(self, action: Action) -> Any:
        return self.receive(action, self.site_context.life)

    def receive(self, action: Action, life: Life) -> Any:
        """Execute ``action`` by the plan and return its result.

        Looks the function up and converts the content to the signature's
        type (and gives a :class:`Context` to a function that asks for one);
        license, hooks and timeout are steps of the pipeline around it.

        Raises:
            RoutingError: no function of that name.
            ValidationError: the content does not fit the signature.
            Exception: whatever the function raised.
        """
        plan = self.site_context.plan
        entry = plan.lookup(action.name)
        if entry is None:
            raise RoutingError(f"no function serves actions named {action.name!r}")
        signature, function = entry
        content = action.content
        if signature.content_type is not None:
            content = signature.convert(content)
        if plan.contextual:
            parameter = plan.contextual.get(action.name)
            if parameter is not None:
                context = self.site_context
                asked = Context(action, context.runtime, life, context.streams, self.site_index)
                return function(content, **{parameter: asked})
        return function(content)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Batch):
            self._site_run(message)
        else:
            return super().on_receive(message)
        return None

    def _site_run(self, batch: Batch) -> None:
        """Run ``batch``, then each ticket the Site takes itself from the production
        while the dispatcher has nothing else queued (see :meth:`Desk.pull`): a busy
        Site's next action costs no message and no dispatcher turn. Each batch ends
        with its Done (counts and acknowledgements flushed first), whatever happened."""
        context = self.site_context
        settler = context.settler
        life = context.life._state  # the slot Life publishes its snapshots in
        clock = context.runtime.monotonic
        desk = context.desk
        pulls = desk.pulls
        inbox = self.actor_inbox
        if self._site_grant is not None:  # sent work: the grant it left is not for now
            desk.withdraw(self._site_grant)
            self._site_grant = None
        pulled: Batch | None = batch
        while pulled is not None:
            batch, pulled = pulled, None
            grant: Grant | None = None
            tally = Tally()
            ran = 0
            try:
                for ticket in batch.tickets:
                    if life.snapshot is not self.site_snapshot:
                        self._site_build()  # Life published a change: from this action on
                    if settler.cancelling:
                        if ticket.unsend(batch):  # still ours to start: cancel it instead
                            settler.settle(ticket, CANCELLED, tally=tally)
                        continue
                    if not ticket.claim(batch):
                        continue  # stolen by an idle Site, or cancelled
                    ticket.started = clock()
                    ran += 1
                    self._site_attempt(ticket, settler, tally)
                if pulls and inbox.empty():  # what was sent here meanwhile comes first
                    pulled = desk.pull(self.site_index, self.actor_urn)
                    if pulled is None:
                        grant = self._site_grant = desk.idle(
                            self.site_index, self.actor_urn, self.actor_ref)
            finally:
                try:
                    settler.flush(tally)
                finally:
                    done = Done(self.site_index, ran, tally.failed,
                                None if pulled is None else pulled.tickets, grant)
                    if pulled is not None or grant is not None:
                        desk.later(done)  # busy on, or idle under its own grant: no wake-up
                    elif batch.direct:
                        desk.note(done)
                    else:
                        desk.post(done)

    def _site_attempt(self, ticket: Ticket, settler: Settler, tally: Tally) -> None:
        outcome, value = CRASHED, None
        self.site_ticket = ticket
        handed_over = False
        action = ticket.action
        try:
            if action.hooks or action.after:
                value = self._site_call(action)
            elif self._site_bare:
                value = self.receive(action, self._site_life)
            else:
                value = self._site_plain(action)
            if type(value) is pipeline.Pending:  # an async def function: the loop awaits
                with _claims:
                    ticket.state = AWAITING  # before the loop may settle it
                self.site_context.runner.hand_over(ticket, value.coroutine,
                                                   self.site_snapshot.fate, self.site_index)
                handed_over = True  # from now on the runner alone settles it
                return
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
            if not handed_over:
                settler.settle(ticket, outcome, value, fate=self.site_snapshot.fate,
                               tally=tally, site=self.site_index)
