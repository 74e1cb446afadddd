# SPDX-License-Identifier: MIT
"""Dispatcher: feeds Sites from the Production, tracks their depth, and steals for idle ones.

Each Site has a queue in two parts: what sits in its mailbox (sent, at most
``Fate.mailbox_window`` tickets) and a backlog the dispatcher holds back. A
keyed action goes to its key's Site; any other to the shallowest queue. A Site
with room and nothing of its own steals the newest unstarted tickets of the
queue with the most to steal (backlog first, then mailbox), trying the next
queue when one has none. An ``ordered`` key has one action in flight at a
time, never stolen: the next starts when the previous one ended for good.

That is the ``"steal"`` discipline (``Fate.discipline``). Under ``"fifo"``
the Sites share one backlog, a Site holds one ticket at a time and nothing
is stolen: whichever Site is free takes the oldest waiting ticket (the
Production's order, with tickets taken back or released by their key ahead
of it), as c servers serve one FIFO queue. A key then picks no Site;
ordered keys still run one at a time, in order.

The dispatcher alone owns the queues and the Sites' refs. Everything else
reaches it through its :class:`Desk`, a queue of events that outlives a
crashed dispatcher: its successor takes the desk over and reconciles.

Two of its decisions are delegated, when its last look found nothing queued for
any Site (at most ``_SCAN`` Sites, the in-memory production): a Site that ends a
batch takes the production's oldest ticket itself if it is unkeyed
(:meth:`Desk.pull`), or, finding nothing, leaves a grant for itself
(:meth:`Desk.idle`). Its Done carries either, left on the desk without a
wake-up, and the dispatcher tracks them as its own at its next look.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import pykka

from echo_actors._logging import get_logger
from echo_actors._messages import (
    Batch,
    Cancel,
    Done,
    Grant,
    Granted,
    HandBack,
    KeyFree,
    Requeue,
    SiteExited,
    SiteStarted,
    StatsRequest,
    Wake,
)
from echo_actors._settle import CANCELLED, Settler
from echo_actors._ticket import AWAITING, ENDED, QUEUED, RUNNING, SENT, Ticket, _claims
from echo_actors.production import Production

__all__ = ["Desk", "Dispatcher", "SiteStats"]

_GONE = (ENDED, AWAITING)
"""States of tickets a Site no longer holds: settled, or awaiting on the event loop."""

_log = get_logger("echo_actors.dispatcher")

_SCAN = 16
"""Up to this many Sites, a thief ranks every queue; beyond, a random sample of this many."""

_WAKE = Wake()

_LATER = 64
"""Events left on the desk without a wake-up (:meth:`Desk.later`) before one is sent anyway."""


class SiteStats(msgspec.Struct, frozen=True):
    """One Site's figures: queued now (mailbox + backlog), processed, failed, steals."""

    site: int
    depth: int
    in_mailbox: int
    backlog: int
    processed: int
    failed: int
    steals_in: int
    steals_out: int
    restarts: int
    alive: bool


class _Slot:
    """One Site's queue as the dispatcher sees it, and its figures."""

    __slots__ = (
        "alive", "backlog", "failed", "granted", "inflight", "processed", "ref", "restarts",
        "site", "steals_in", "steals_out", "urn",
    )  # fmt: skip

    def __init__(self, site: int) -> None:
        self.site = site
        self.ref: pykka.ActorRef[Any] | None = None
        self.urn: str | None = None
        self.alive = False
        self.inflight: deque[Ticket] = deque()  # sent to its mailbox, oldest first
        self.backlog: deque[Ticket] = deque()  # held back for it
        self.granted: Grant | None = None  # its grant on the desk, if it has one
        self.processed = self.failed = self.steals_in = self.steals_out = self.restarts = 0

    def __hash__(self) -> int:
        return self.site  # sets of slots iterate in Site order, the same every run

    def depth(self) -> int:
        return len(self.inflight) + len(self.backlog)

    def stealable(self) -> int:
        """Unstarted, unordered tickets queued here that wait (what a thief may take).

        A Site running nothing is about to start its first ticket: that one is
        not waiting, and taking it would only make the two Sites trade it.
        """
        backlog, inflight = self.backlog, self.inflight
        if not backlog and len(inflight) <= 1:
            return 0  # one ticket: it runs, or is about to
        n = sum(1 for t in backlog if not t.holds_key)
        sent = running = 0
        for ticket in inflight:
            state = ticket.state
            if state == SENT and not ticket.holds_key:
                sent += 1
            elif state == RUNNING:
                running = 1
        return n + max(0, sent - 1 + running)


class Desk:
    """The dispatcher's state and its event queue, handed from a crashed one to the next.

    Any thread or actor may :meth:`post` an event; only the running dispatcher
    reads events and touches the rest. A wake-up message is sent only when the
    dispatcher may be asleep, so a burst of events costs one message.
    """

    settler: Settler
    """Where the tickets it cancels end (set by the Sequence, which makes both)."""

    def __init__(self, sites: int, production: Production, *, shared: bool = False) -> None:
        self.slots = [_Slot(i) for i in range(sites)]
        self.shared = shared
        if shared:  # the "fifo" discipline: one backlog for every Site
            backlog: deque[Ticket] = deque()
            for slot in self.slots:
                slot.backlog = backlog
        self.production = production
        self.events: deque[Any] = deque()
        self.ref: pykka.ActorRef[Any] | None = None
        self.signalled = False
        self.halted = False
        self.waiting_keys: dict[str, deque[Ticket]] = {}  # ordered keys: who waits for them
        self.busy_keys: set[str] = set()
        self.grants: deque[Grant] = deque()  # idle Sites a submitter may send to directly
        self.quiet = False  # at the dispatcher's last look: nothing queued for any Site
        self.pulls = False  # whether a Site that ends a batch may take its next ticket (pull)
        self.window = 1  # the most tickets a Site holds (its pull's limit): the dispatcher's

    def send_direct(self, ticket: Ticket) -> bool:
        """Send a new unkeyed ticket straight to an idle Site, if the dispatcher granted one.

        One hop instead of two when Sites idle. The ticket is recorded on the desk
        before it is sent (no wake-up: the Site's Done or exit brings one), so the
        dispatcher tracks it as if it had sent it itself. False: no Site is granted.
        """
        try:
            grant = self.grants.pop()
        except IndexError:
            return False
        message = Batch(grant.site, grant.urn, [ticket], direct=True)
        ticket.batch, ticket.state = message, SENT  # new: no one else can see it yet
        self.events.append(Granted(grant, ticket))
        try:
            grant.ref.tell(message)
        except pykka.ActorDeadError:
            self.wake()  # its exit may be handled already: let the dispatcher take it back
        return True

    def pull(self, site: int, urn: str) -> Batch | None:
        """The next tickets for Site ``site`` (incarnation ``urn``), taken from the
        production by that Site as its batch ends, in a Batch to itself; None: it waits
        for the dispatcher.

        What the dispatcher would send it then: its share of what waits (as many as
        the production holds per Site, at most ``window``), oldest first, as long as
        they are unkeyed, when its last look found nothing queued for any Site
        (``quiet``: no backlog, no ordered key waiting, no Site holding more than one
        ticket). The Site's Done carries them (``pulled``) and is left on the desk
        before they run, so the dispatcher tracks them as if it had sent them itself,
        and never finds that Site idle in between. A keyed ticket stays where it is:
        keys are the dispatcher's to route.
        """
        if not (self.pulls and self.quiet) or self.halted or self.settler.cancelling:
            return None
        production = self.production
        want = self.window
        if want > 1:  # (a window of 1, as a simulation's M/M/c has, needs no sums)
            want = max(1, min(want, -(-production.pending() // len(self.slots))))
        take = production.take_unkeyed
        tickets: list[Ticket] = []
        message = Batch(site, urn, tickets, direct=True)
        with _claims:  # (take_unkeyed never switches)
            while len(tickets) < want:
                ticket = take()
                if ticket is None:
                    break
                if ticket.state == QUEUED:  # else cancelled while it waited: dropped, as
                    ticket.batch, ticket.state = message, SENT  # the dispatcher drops it
                    tickets.append(ticket)
        return message if tickets else None

    def idle(self, site: int, urn: str, ref: pykka.ActorRef[Any]) -> Grant | None:
        """A Grant for Site ``site`` (incarnation ``urn``) whose :meth:`pull` found nothing,
        left on the desk by that Site for the next submitter; None: it reports its Done
        and the dispatcher decides.

        What the dispatcher would do on that Done: with nothing queued for any Site at
        its last look (``quiet``) and nothing waiting in the production, an idle Site
        gets a grant. The Site's Done carries it and is left without a wake-up; the
        dispatcher adopts it as its own at its next look (or finds it taken: the
        submitter's ``Granted`` follows).
        """
        if (not (self.pulls and self.quiet) or self.halted or self.settler.cancelling
                or self.production.pending()):
            return None
        if self.has_grant(site, urn):
            return None  # one grant per Site: it has one already
        grant = Grant(site, urn, ref)
        self.grants.append(grant)
        return grant

    def has_grant(self, site: int, urn: str) -> bool:
        """Whether Site ``site`` (incarnation ``urn``) has a grant on the desk."""
        # A copy (one C call): submitters pop grants from other threads meanwhile, and a
        # deque changed while a loop walks it raises. Few: quiet means at most _SCAN Sites.
        return any(held.site == site and held.urn == urn for held in list(self.grants))

    def withdraw(self, grant: Grant) -> None:
        """Take back a grant a Site left for itself (:meth:`idle`), if no submitter took
        it: that Site was sent work by another way, so it is not idle any more."""
        with contextlib.suppress(ValueError):  # taken: that submitter's Granted follows
            self.grants.remove(grant)  # (one C call, as _revoke's: equal fields, one Site)

    def cancel_all(self) -> None:
        """Stop feeding; cancel every ticket not started (queued here, sent, or waiting).

        Called by the dispatcher (HandBack), or by the Sequence once no dispatcher
        is left to own the desk (its supervisor gave up).
        """
        self.halted = True
        self.grants.clear()
        settle = self.settler.settle
        for slot in self.slots:
            for ticket in [*slot.backlog, *slot.inflight]:
                settle(ticket, CANCELLED)
            slot.backlog.clear()
        for waiting in self.waiting_keys.values():
            for ticket in waiting:
                settle(ticket, CANCELLED)
        self.waiting_keys.clear()
        self.settler.sweep()

    def post(self, event: Any) -> None:
        """Give the dispatcher an event (thread-safe; never lost to a dispatcher restart)."""
        self.events.append(event)
        self.wake()

    def note(self, event: Any) -> None:
        """:meth:`post`, without a wake-up while nothing waits for a Site anywhere: for
        bookkeeping that can wait for the dispatcher's next look (a directly sent
        ticket's Done), so that a lone action costs one message, not two. (A production
        the dispatcher emptied wakes it on the next put by itself.)"""
        self.events.append(event)
        if not self.quiet or self.production.pending():
            self.wake()

    def later(self, event: Any) -> None:
        """:meth:`post` without a wake-up: the Done of a Site that goes on with a ticket it
        pulled. The dispatcher reads it at its next look, which that Site's next Done
        without a pull, a put to the production it emptied, any other event or a full
        desk (``_LATER`` events) brings."""
        events = self.events
        events.append(event)
        if len(events) >= _LATER:
            self.wake()

    def wake(self) -> None:
        """Make sure the dispatcher looks at its desk and the production soon."""
        if not self.signalled:
            self.signalled = True
            ref = self.ref
            if ref is not None:
                try:  # noqa: SIM105 - suppress() costs an object on this per-action path
                    ref.tell(_WAKE)
                except pykka.ActorDeadError:  # its successor looks itself
                    pass


class Dispatcher(pykka.Actor):
    """Routes tickets from the Production to Sites; one per Sequence, state on its desk."""

    def __init__(
        self, desk: Desk, window: int, steal: bool, random: Any, *, fifo: bool = False
    ) -> None:
        super().__init__()
        if fifo and (window != 1 or steal or not desk.shared):
            raise ValueError("the fifo discipline takes a window of 1, no stealing and a "
                             "desk with one shared backlog")
        self._fifo = fifo
        self._desk = desk
        self._slots = desk.slots
        self._production = desk.production
        self._settler = desk.settler
        self._window = window
        self._steal = steal
        self._random = random
        self._idle: set[_Slot] = set()
        self._handlers: dict[type, Callable[[Any], None]] = {
            Done: self._done, SiteStarted: self._site_started, SiteExited: self._site_exited,
            Requeue: self._requeue, KeyFree: self._key_free, HandBack: self._hand_back,
            Granted: self._granted,
        }

    def on_start(self) -> None:
        desk = self._desk
        desk.ref = self.actor_ref
        # A predecessor may have crashed between sending a batch and recording it, or with
        # a wake-up pending: reconcile from the tickets' own states, then read the desk.
        for slot in self._slots:
            slot.inflight = deque(t for t in slot.inflight if t.state not in _GONE)
            if slot.alive and (slot.ref is None or not slot.ref.is_alive()):
                self._site_exited(SiteExited(slot.site, slot.urn, "crash"))
        self._idle = {s for s in self._slots if s.alive and not s.inflight}
        desk.signalled = False
        self._drain()
        for slot in self._slots:  # an event lost with the predecessor may have left one idle
            self._feed(slot, self._window)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wake):
            self._desk.signalled = False
            self._drain()
            return None
        if isinstance(message, StatsRequest):
            self._drain()
            return self._stats()
        if isinstance(message, Cancel):
            self._drain()
            return self._cancel(message.action_id)
        return super().on_receive(message)

    def _drain(self) -> None:
        events = self._desk.events
        handlers = self._handlers
        while events:
            # Taken before it is handled: an event that crashes the dispatcher is not
            # handed to its successor again (handlers keep tickets in the desk, not in locals).
            event = events.popleft()
            handlers[type(event)](event)
        self._pump()
        slots = self._slots
        quiet = len(slots) <= _SCAN and not self._desk.waiting_keys
        if quiet:  # a loop, not all() over a generator: this runs per action
            for slot in slots:
                if slot.backlog or len(slot.inflight) > 1:
                    quiet = False
                    break
        self._desk.quiet = quiet

    # Feeding

    def _pump(self) -> None:
        """Feed every Site an even share of what waits, then let idle Sites steal."""
        if self._desk.halted or not self._production.pending():
            return
        alive = [slot for slot in self._slots if slot.alive]
        window = self._window
        for slot in alive:
            if len(slot.inflight) < window:
                break
        else:  # no Site alive, or every window full: nothing to feed, no one idles to steal
            return
        alive.sort(key=_Slot.depth)
        share = self._share(len(alive))
        for slot in alive:
            if len(slot.inflight) < window:  # else _feed has no room to fill
                self._feed(slot, share, steal=False)
        if self._steal:
            for slot in alive:
                if not slot.inflight:
                    self._feed(slot, self._window)

    def _share(self, alive: int) -> int:
        pending = self._production.pending()
        return max(1, min(self._window, -(-pending // max(1, alive))))

    def _feed(self, slot: _Slot, limit: int, *, steal: bool = True) -> None:
        """Send ``slot`` up to ``limit`` tickets: its backlog, then new work, then stolen.

        Keyed tickets taken for other Sites join their backlogs and do not count
        against ``limit``, so unkeyed work never starves behind a busy key.
        """
        if self._desk.halted or not slot.alive:
            return
        free = min(limit, self._window - len(slot.inflight))
        if free <= 0:
            return
        batch: list[Ticket] = []
        kick: list[_Slot] = []
        taken: list[Ticket] = []
        i = 0
        try:
            backlog = slot.backlog
            while backlog and len(batch) < free:
                ticket = backlog.popleft()
                if ticket.state == QUEUED:
                    batch.append(ticket)
            while len(batch) < free:
                taken, i = self._production.take(free - len(batch)), 0
                if not taken:
                    break
                while i < len(taken):
                    ticket = taken[i]
                    i += 1
                    if ticket.action.key is None and ticket.state == QUEUED:
                        batch.append(ticket)  # _route's answer for unkeyed work, inline
                    elif self._route(ticket, slot, kick):
                        batch.append(ticket)
                taken = []
            if not batch and not slot.inflight and steal and self._steal:
                batch = self._steal_for(slot, free)
        except BaseException:
            slot.backlog.extendleft(reversed([*batch, *taken[i:]]))  # a failed handler loses none
            raise
        if batch:
            self._send(slot, batch)
        elif not slot.inflight:
            self._idle.add(slot)
            self._grant(slot)
        for target in kick:
            if not target.inflight:
                self._feed(target, self._window)

    def _slot_for(self, key: str) -> _Slot:
        # crc32, not hash(): the same Site for a key in every process (and run)
        slots = self._slots
        return slots[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(slots)]

    def _route(self, ticket: Ticket, slot: _Slot, kick: list[_Slot]) -> bool:
        """True if a new ticket belongs in ``slot``'s batch; else it was queued elsewhere.

        A keyed ticket for another Site joins that Site's backlog (``kick``: feed
        it if it idles); an ordered one waits while its key is busy.
        """
        if ticket.state != QUEUED:
            return False  # cancelled while it waited: nothing to run
        action = ticket.action
        key = action.key
        if key is None:
            return True
        if action.ordered and not ticket.holds_key:
            desk = self._desk
            if key in desk.busy_keys:
                desk.waiting_keys.setdefault(key, deque()).append(ticket)
                return False
            desk.busy_keys.add(key)
            ticket.holds_key = True
        if self._fifo:
            return True  # a key picks no Site: whichever is free takes it
        target = self._slot_for(key)
        if target is slot:
            return True
        target.backlog.append(ticket)
        if target.alive and not target.inflight and target not in kick:
            kick.append(target)
        return False

    def _steal_for(self, thief: _Slot, free: int) -> list[Ticket]:
        """Take unstarted tickets for ``thief`` from the queue with the most to steal."""
        slots = self._slots
        if len(slots) > _SCAN:
            slots = self._random.sample(slots, _SCAN)
        ranked: list[tuple[int, _Slot]] = []
        for slot in slots:  # a loop, not sorted() over a generator: most looks find nothing
            if slot is not thief:
                count = slot.stealable()
                if count > 0:
                    ranked.append((count, slot))
        if len(ranked) > 1:
            ranked.sort(key=lambda pair: -pair[0])  # stable: ties keep the Sites' order
        for count, victim in ranked:
            stolen = self._take_from(victim, min(free, max(1, count // 2)))
            if stolen:
                victim.steals_out += len(stolen)
                thief.steals_in += len(stolen)
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug("steal", thief=thief.site, victim=victim.site, count=len(stolen))
                return stolen
        return []

    @staticmethod
    def _take_from(victim: _Slot, want: int) -> list[Ticket]:
        """The newest unstarted, unordered tickets of ``victim``: backlog first, then mailbox."""
        stolen: list[Ticket] = []
        kept: list[Ticket] = []
        backlog = victim.backlog
        while backlog and len(stolen) < want:
            ticket = backlog.pop()
            if ticket.holds_key:
                kept.append(ticket)
            elif ticket.state == QUEUED:
                stolen.append(ticket)
        backlog.extend(reversed(kept))
        if len(stolen) < want:
            inflight = victim.inflight
            keep: list[Ticket] = []
            with _claims:
                while inflight and len(stolen) < want:
                    ticket = inflight.pop()
                    if ticket.state == SENT and not ticket.holds_key:
                        ticket.state, ticket.batch = QUEUED, None
                        stolen.append(ticket)
                    elif ticket.state not in _GONE:
                        keep.append(ticket)
            inflight.extend(reversed(keep))
        stolen.reverse()
        return stolen

    def _grant(self, slot: _Slot) -> None:
        """Let one submitter send this idle Site a ticket directly."""
        if slot.granted is None and slot.alive and slot.ref is not None and slot.urn is not None:
            desk = self._desk
            if desk.pulls and len(self._slots) <= _SCAN and desk.has_grant(slot.site, slot.urn):
                return  # it left one for itself (Desk.idle): adopted at its Done
            slot.granted = Grant(slot.site, slot.urn, slot.ref)
            desk.grants.append(slot.granted)

    def _adopt(self, slot: _Slot, grant: Grant) -> bool:
        """Make the grant a Site left for itself (:meth:`Desk.idle`) the slot's, if it is
        still on the desk; False if not (a submitter took it, or the Site withdrew it when
        sent work: busy either way). Dropped instead if the slot has a grant already or
        was sent work since (then it is not idle any more)."""
        grants = self._desk.grants
        for held in list(grants):  # a copy: see Desk.idle
            if held is grant:
                if slot.granted is None and not slot.inflight:
                    slot.granted = grant  # (taken meanwhile: its Granted clears it)
                else:
                    with contextlib.suppress(ValueError):
                        grants.remove(grant)
                return True
        return False

    def _revoke(self, slot: _Slot) -> None:
        grant, slot.granted = slot.granted, None
        if grant is not None:
            with contextlib.suppress(ValueError):  # a submitter took it: its Granted follows
                self._desk.grants.remove(grant)

    def _send(self, slot: _Slot, batch: list[Ticket]) -> None:
        self._idle.discard(slot)
        if slot.granted is not None:  # _revoke's own test, first: a call fewer per batch
            self._revoke(slot)
        assert slot.ref is not None and slot.urn is not None
        message = Batch(slot.site, slot.urn, batch)
        with _claims:
            for ticket in batch:
                if ticket.state == QUEUED:  # not cancelled meanwhile
                    ticket.batch = message
                    ticket.state = SENT
        slot.inflight.extend(batch)
        try:  # noqa: SIM105 - suppress() costs an object on this per-action path
            slot.ref.tell(message)
        except pykka.ActorDeadError:  # its exit is on its way to the desk: that takes these back
            pass

    # Events

    def _done(self, event: Done) -> None:
        slot = self._slots[event.site]
        inflight = slot.inflight
        while inflight and inflight[0].state in _GONE:
            inflight.popleft()
        slot.processed += event.ran - event.failed
        slot.failed += event.failed
        if event.pulled is not None:
            self._track(slot, event.pulled)  # busy with them, even if they ended already
            return
        if event.grant is not None and not self._adopt(slot, event.grant):
            return  # its grant was taken: busy with that ticket (its Granted follows)
        if self._desk.halted or not slot.alive:
            return
        self._feed(slot, self._window)
        if self._steal and self._idle and slot.stealable():
            for thief in list(itertools.islice(self._idle, 4)):
                self._feed(thief, self._window)

    def _site_started(self, event: SiteStarted) -> None:
        slot = self._slots[event.site]
        ref = event.ref
        if not ref.is_alive():
            return  # it died already; its exit follows on the desk
        slot.ref, slot.urn, slot.alive = ref, ref.actor_urn, True
        self._feed(slot, self._share(sum(s.alive for s in self._slots)))

    def _site_exited(self, event: SiteExited) -> None:
        slot = self._slots[event.site]
        if event.urn is not None and slot.urn is not None and event.urn != slot.urn:
            # An old incarnation: the new one runs on, and gets what the old one held.
            if self._take_back(slot, event.urn) and slot.alive and not slot.inflight:
                self._feed(slot, self._window)
            return
        if not slot.alive:
            return
        slot.alive = False
        self._idle.discard(slot)
        self._revoke(slot)
        slot.restarts += event.reason != "shutdown"
        back = self._take_back(slot, slot.urn)
        if event.reason == "crash":
            _log.warning("site_exited", site=event.site, reason=event.reason, requeued=back)
        if back and (self._steal or self._fifo):  # idle Sites need not wait for its restart
            for thief in list(itertools.islice(self._idle, 4)):
                self._feed(thief, self._window)

    def _take_back(self, slot: _Slot, urn: str | None) -> int:
        """Put the unstarted tickets sent to Site incarnation ``urn`` back in the backlog."""
        back: list[Ticket] = []
        keep: deque[Ticket] = deque()
        with _claims:
            for ticket in slot.inflight:
                batch = ticket.batch
                if ticket.state == SENT and batch is not None and batch.urn == urn:
                    ticket.state, ticket.batch = QUEUED, None
                    back.append(ticket)
                elif ticket.state not in _GONE:
                    keep.append(ticket)
        slot.inflight = keep
        slot.backlog.extendleft(reversed(back))
        return len(back)

    def _granted(self, event: Granted) -> None:
        ticket: Ticket = event.ticket
        slot = self._slots[event.grant.site]
        if slot.granted is event.grant:
            slot.granted = None
        self._track(slot, [ticket])

    def _track(self, slot: _Slot, tickets: list[Ticket]) -> None:
        """Tickets sent to ``slot``'s Site by someone else (a submitter under a grant, or
        the Site itself), in the order it runs them: it is busy until the Done that
        follows this. Those sent to a Site that is gone go back to its queue's front, in
        that order."""
        back: list[Ticket] = []
        for ticket in tickets:
            batch = ticket.batch
            if self._desk.halted:
                self._settler.settle(ticket, CANCELLED)
            elif batch is not None and (not slot.alive or batch.urn != slot.urn):
                if ticket.unsend(batch):  # sent to a Site that is gone: queue it again
                    back.append(ticket)
            else:
                if self._idle:  # (a test first: most often empty, and discard() hashes)
                    self._idle.discard(slot)
                if slot.granted is not None:  # given while this was on its way: not idle now
                    self._revoke(slot)
                if ticket.state not in _GONE:
                    slot.inflight.append(ticket)
                    if (self._steal and self._idle and len(slot.inflight) > 1
                            and slot.stealable()):
                        for thief in list(itertools.islice(self._idle, 4)):  # as in _done
                            self._feed(thief, self._window)
        if back:
            slot.backlog.extendleft(reversed(back))

    def _requeue(self, event: Requeue) -> None:
        ticket: Ticket = event.ticket
        if ticket.state != QUEUED:
            return
        if self._desk.halted:
            self._settler.settle(ticket, CANCELLED)
            return
        key = ticket.action.key
        assert key is not None
        slot = self._slot_for(key)
        slot.backlog.appendleft(ticket)  # it holds its key: it runs next
        if self._fifo:
            self._feed_idle()
        elif not slot.inflight:
            self._feed(slot, self._window)

    def _key_free(self, event: KeyFree) -> None:
        desk = self._desk
        waiting = desk.waiting_keys.get(event.key)
        while waiting:
            ticket = waiting.popleft()
            if ticket.state == QUEUED:
                ticket.holds_key = True
                slot = self._slot_for(event.key)
                slot.backlog.append(ticket)
                if self._fifo:
                    self._feed_idle()
                elif not slot.inflight:  # idle: its Done came before (an awaiting action)
                    self._feed(slot, self._window)
                return
        desk.waiting_keys.pop(event.key, None)
        desk.busy_keys.discard(event.key)

    def _feed_idle(self) -> None:
        """Under "fifo": let an idle Site take what the shared backlog holds."""
        for slot in sorted(self._idle, key=_Slot.__hash__):
            if not slot.backlog:
                return
            self._feed(slot, self._window)

    def _hand_back(self, _event: HandBack) -> None:
        self._desk.cancel_all()

    def _cancel(self, action_id: str) -> bool:
        desk = self._desk
        queues: list[Iterable[Ticket]] = [slot.backlog for slot in self._slots]
        queues += [slot.inflight for slot in self._slots]
        queues += desk.waiting_keys.values()
        queues.append(self._production.tickets())
        settle = self._settler.settle
        return any(
            settle(ticket, CANCELLED)
            for queue in queues for ticket in list(queue) if ticket.action.id == action_id
        )

    def _stats(self) -> list[SiteStats]:
        shared = self._fifo  # the one backlog is no Site's own
        return [
            SiteStats(
                site=slot.site, depth=len(slot.inflight) if shared else slot.depth(),
                in_mailbox=len(slot.inflight), backlog=0 if shared else len(slot.backlog),
                processed=slot.processed, failed=slot.failed,
                steals_in=slot.steals_in, steals_out=slot.steals_out,
                restarts=slot.restarts, alive=slot.alive,
            )
            for slot in self._slots
        ]
