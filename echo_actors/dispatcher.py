# SPDX-License-Identifier: MIT
"""Dispatcher: feeds Sites from the Production, tracks their depth, and steals for idle ones.

Each Site has a queue in two parts: what sits in its mailbox (sent, at most
``Fate.mailbox_window`` tickets) and a backlog the dispatcher holds back. A
keyed action goes to its key's Site; any other to the shallowest queue. When
a Site has room and nothing of its own, the dispatcher steals the newest
unstarted tickets of the deepest queue (backlog first, then mailbox) and
sends them to it. Actions marked ``ordered`` are never stolen.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import pykka
import structlog

from echo_actors._core import Slot
from echo_actors._messages import Batch, Done, HandBack, SiteExited, SiteStarted, StatsRequest, Wake
from echo_actors._ticket import Ticket

if TYPE_CHECKING:
    from echo_actors._core import Core

__all__ = ["Dispatcher", "SiteStats"]

_log = structlog.get_logger("echo_actors.dispatcher")

_SCAN = 16
"""Up to this many Sites, a thief looks at every queue; beyond, at a random sample of this many."""


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


class Dispatcher(pykka.Actor):
    """Routes tickets from the Production to Sites; one per Sequence.

    Its queues live in the Sequence's core, so a restarted dispatcher carries
    on where the crashed one stopped.
    """

    def __init__(self, core: Core) -> None:
        super().__init__()
        self._core = core
        self._production = core.production
        self._slots = core.slots
        self._window = core.fate.mailbox_window
        self._steal = core.fate.steal
        self._halted = core.cancelling
        self._idle: set[Slot] = set()
        self._random = core.runtime.random("dispatcher")
        self._alive = sum(slot.alive for slot in self._slots)

    def on_start(self) -> None:
        # From now on Sites and the production tell this dispatcher; what they told a
        # crashed predecessor is recovered from the state itself.
        self._core.dispatcher = self.actor_ref
        for slot in self._slots:
            slot.inflight = deque(t for t in slot.inflight if not t.done)
            ref = slot.ref
            if slot.alive and (ref is None or not ref.is_alive()):
                self._site_exited(SiteExited(slot.index, crashed=True))
        self._pump()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Done):
            self._done(message)
        elif isinstance(message, Wake):
            self._pump()
        elif isinstance(message, SiteStarted):
            slot = self._slots[message.site]
            if message.ref.is_alive() and not self._halted:
                if not slot.alive:
                    self._alive += 1
                slot.ref, slot.alive = message.ref, True
                self._feed(slot, self._share())
                if not slot.inflight:
                    self._idle.add(slot)
        elif isinstance(message, SiteExited):
            self._site_exited(message)
        elif isinstance(message, StatsRequest):
            return self._stats()
        elif isinstance(message, HandBack):
            return self._hand_back()
        else:
            return super().on_receive(message)
        return None

    def _done(self, message: Done) -> None:
        slot = self._slots[message.site]
        inflight = slot.inflight
        while inflight and inflight[0].done:
            inflight.popleft()
        slot.processed += message.count - message.failed
        slot.failed += message.failed
        if self._halted or not slot.alive:
            return
        self._feed(slot, self._window)
        if not slot.inflight:
            self._idle.add(slot)
        elif self._idle and self._steal and slot.depth() > 1:
            for thief in list(self._idle)[:4]:  # a few thieves: each takes half a queue
                self._feed(thief, self._window)

    def _pump(self) -> None:
        """Feed every Site: an even share of what waits, so that none hoards it."""
        if self._halted:
            return
        alive = [slot for slot in self._slots if slot.alive]
        if not alive:
            return
        alive.sort(key=Slot.depth)
        share = self._share()
        for slot in alive:
            self._feed(slot, share, steal=False)
        idle = [slot for slot in alive if not slot.inflight]
        self._idle.update(idle)
        if idle and self._steal and max(slot.depth() for slot in alive) > 1:
            for slot in idle:  # routing may have queued keyed work behind busy Sites
                self._feed(slot, self._window)

    def _share(self) -> int:
        """How much one Site may take of what waits: an even share, within its window."""
        pending = self._production.pending()
        return max(1, min(self._window, -(-pending // max(1, self._alive))))

    def _feed(self, slot: Slot, limit: int, *, steal: bool = True) -> None:
        """Send ``slot`` up to ``limit`` tickets: its backlog, then new work, then stolen."""
        free = min(limit, self._window - len(slot.inflight))
        if free <= 0:
            return
        batch: list[Ticket] = []
        backlog = slot.backlog
        while backlog and len(batch) < free:
            batch.append(backlog.popleft())
        kick: list[Slot] = []
        if len(batch) < free:
            slots = self._slots
            for ticket in self._production.take(free - len(batch)):
                key = ticket.action.key
                if key is None:
                    batch.append(ticket)
                    continue
                # crc32, not hash(): the same Site for a key in every process (and run)
                target = slots[zlib.crc32(key.encode()) % len(slots)]
                if target is slot:
                    batch.append(ticket)
                else:  # another Site's key: queue it there, and feed that Site if it idles
                    target.backlog.append(ticket)
                    if target.alive and not target.inflight:
                        kick.append(target)
        if not batch and not slot.inflight and steal and self._steal:
            batch = self._steal_for(slot, free)
        if batch:
            self._send(slot, batch)
        for target in kick:
            if not target.inflight:
                self._feed(target, self._window)

    def _victim(self) -> Slot:
        """The deepest queue: of all Sites when they are few, else of a random sample."""
        slots = self._slots
        if len(slots) > _SCAN:
            slots = self._random.sample(slots, _SCAN)
        return max(slots, key=Slot.depth)

    def _steal_for(self, thief: Slot, free: int) -> list[Ticket]:
        victim = self._victim()
        if victim is thief or victim.depth() < 2:
            return []
        want = min(free, max(1, victim.depth() // 2))
        stolen: list[Ticket] = []
        backlog = victim.backlog
        while backlog and len(stolen) < want and not backlog[-1].action.ordered:
            stolen.append(backlog.pop())
        if len(stolen) < want and victim.alive:
            inflight = victim.inflight
            with victim.lock:
                while inflight and len(stolen) < want:
                    ticket = inflight[-1]
                    if ticket.started or ticket.action.ordered:
                        break
                    inflight.pop()
                    ticket.owner = None
                    stolen.append(ticket)
        if stolen:
            stolen.reverse()
            victim.steals_out += len(stolen)
            thief.steals_in += len(stolen)
            _log.debug(
                "steal", thief=thief.index, victim=victim.index,
                count=len(stolen),
            )
        return stolen

    def _send(self, slot: Slot, batch: list[Ticket]) -> None:
        self._idle.discard(slot)
        message = Batch(slot.index, batch)
        for ticket in batch:
            ticket.owner = message
        slot.inflight.extend(batch)
        assert slot.ref is not None
        # A dead Site's SiteExited is on its way: _site_exited takes these back.
        with contextlib.suppress(pykka.ActorDeadError):
            slot.ref.tell(message)

    def _site_exited(self, message: SiteExited) -> None:
        slot = self._slots[message.site]
        if not slot.alive:
            return
        slot.alive = False
        self._alive -= 1
        self._idle.discard(slot)
        slot.restarts += 1
        back: list[Ticket] = []
        with slot.lock:
            for ticket in slot.inflight:
                owner = ticket.owner
                if owner is not None and owner.site == message.site and not ticket.done:
                    ticket.owner = None
                    back.append(ticket)
            slot.inflight.clear()
        held = [ticket for ticket in back if ticket.started]
        _log.warning(
            "site_exited", site=message.site, crashed=message.crashed,
            requeued=len(back), held=[t.action.id for t in held],
        )
        for ticket in held:
            self._core.crashed(ticket, message.site)
        slot.backlog.extendleft(reversed([t for t in back if not t.started]))

    def _stats(self) -> list[SiteStats]:
        return [
            SiteStats(
                site=i, depth=slot.depth(), in_mailbox=len(slot.inflight),
                backlog=len(slot.backlog), processed=slot.processed, failed=slot.failed,
                steals_in=slot.steals_in, steals_out=slot.steals_out,
                restarts=slot.restarts, alive=slot.alive,
            )
            for i, slot in enumerate(self._slots)
        ]

    def _hand_back(self) -> list[Ticket]:
        self._halted = True
        out: list[Ticket] = []
        for slot in self._slots:
            out.extend(slot.backlog)
            slot.backlog.clear()
        out.extend(self._production.hand_back())
        return out
