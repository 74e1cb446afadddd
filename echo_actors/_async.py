# SPDX-License-Identifier: MIT
"""AsyncRunner: the event loop a Sequence owns for ``async def`` functions and hooks.

One loop thread per Sequence, started by the first coroutine. A Site that
runs an action served by an ``async def`` function does not wait for it: it
hands the coroutine over (the ticket goes AWAITING) and takes its next
action, so a few Sites keep thousands of coroutines in flight on one loop.
An action nothing needs a Site for (unkeyed, undelayed, no hooks, steps,
license or events, the plain ``Site``) skips the Site: ``submit`` hands its
unstarted ticket straight here (:meth:`AsyncRunner.submit`), and the loop
calls the function. From then on the runner alone ends that attempt:
whatever the coroutine does (returns, raises, is cut short by its timeout,
or the loop stops under it), a ``finally`` settles it; the endings of one
turn of the loop are settled together, in one call through the runtime's
:meth:`~echo_actors.runtime.Runtime.threadsafe` caller.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import contextvars
import inspect
import queue
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any, cast

from echo_actors._logging import get_logger
from echo_actors._settle import ABANDONED, CANCELLED, COMPLETED, CRASHED, FAILED, Tally
from echo_actors._ticket import AWAITING
from echo_actors.errors import RoutingError
from echo_actors.pipeline import _limited
from echo_actors.runtime._awaitable import wakeups_held

if TYPE_CHECKING:
    from echo_actors._settle import Settler
    from echo_actors._ticket import Ticket
    from echo_actors.fate import Fate
    from echo_actors.runtime import Runtime

__all__ = ["AsyncRunner"]

_log = get_logger("echo_actors.sequence")

_WIND_DOWN = 1.0
"""Seconds the stopping loop gives the coroutines it cancelled to run their ``finally``."""

_Item = tuple["Ticket", "Coroutine[Any, Any, Any] | None", "Fate | None", int]
"""A hand-over: the ticket, its coroutine (None: not started, the loop calls the function),
the Fate it runs under, the Site that handed it over (-1: none)."""

_Ending = tuple["Ticket", str, Any, "Fate | None", int]


def _native() -> tuple[Callable[..., Any], Callable[[], Any], Callable[[], Any]]:
    """``start_new_thread``, ``allocate_lock`` and a new event loop, of real OS threads.

    Under ``gevent.monkey.patch_all()`` a ``threading.Thread`` is a greenlet of
    the hub's thread, and asyncio keeps one running loop per OS thread: the
    Sequence's loop would collide with the program's own. So it gets a real
    thread, real locks and the selector gevent replaced (whose waits need a hub).
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        selector = monkey.get_original("selectors", "DefaultSelector")
        return (monkey.get_original("_thread", "start_new_thread"),
                monkey.get_original("_thread", "allocate_lock"),
                lambda: asyncio.SelectorEventLoop(selector()))
    return _thread.start_new_thread, _thread.allocate_lock, asyncio.new_event_loop


class AsyncRunner:
    """Runs the coroutines of a Sequence's actions on its own event loop thread.

    :meth:`hand_over` (from a Site) schedules a coroutine whose end settles
    its ticket; :meth:`submit` (from a submitter) does the same for unstarted
    tickets, the loop making their coroutines; :meth:`call` (from a Site)
    runs an awaitable, an ``async`` hook, and waits for it the runtime's
    way; :meth:`stop` (at shutdown) hands back what still awaits and ends
    the thread. Hand-overs queue in a deque that the loop drains, woken once
    per burst rather than once each; endings are settled once per burst too.
    """

    def __init__(self, runtime: Runtime, settler: Settler) -> None:
        self._runtime = runtime
        self._settler = settler
        self._start_thread, allocate_lock, self._new_loop = _native()
        self._lock = allocate_lock()  # guards the fields below up to _tasks
        self._ended = allocate_lock()  # held while the loop thread runs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._call: Callable[..., None] | None = None
        self._scheduled = False
        self._stopped = False
        self._inbox: deque[_Item] = deque()
        self._fresh: deque[tuple[list[Ticket], Fate]] = deque()  # submit()'s, a batch each
        self._tasks: dict[asyncio.Future[Any], Ticket] = {}  # the loop thread's alone
        self._done = self._task_done  # one bound method for every task, not one each
        self._context = contextvars.Context()  # idem, the context _done runs in
        self._held: deque[_Item] = deque()  # idem: waiting for Fate.max_async_in_flight
        self._endings: list[_Ending] = []  # idem: settled together by _flush
        self._others: set[asyncio.Task[None]] = set()  # hooks and the wind-down: theirs too
        self._calls: set[Any] = set()  # futures of call(): failed if the loop ends first

    @property
    def started(self) -> bool:
        """Whether the loop thread was started."""
        return self._loop is not None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the Sequence's event loop has stopped (shutting down)")
            loop = self._loop
            if loop is not None:
                return loop
            self._call = self._runtime.threadsafe()  # here: in the runtime's own thread
            loop = cast(asyncio.AbstractEventLoop, self._new_loop())
            self._ended.acquire()
            try:
                self._start_thread(self._main, (loop,))
            except BaseException:
                self._ended.release()
                loop.close()
                raise
            self._loop = loop
        return loop

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            asyncio.set_event_loop(loop)
            while True:
                try:
                    loop.run_forever()
                except (SystemExit, KeyboardInterrupt):
                    # A coroutine raised it (signals reach the main thread only): asyncio's
                    # task stored it, then let it escape the loop. Its done-callback still
                    # settles its ticket (as any failure), so the loop goes on for the others.
                    continue
                break
        finally:
            with self._lock:
                self._stopped = True  # ended by stop(), or (never) by an escaped error
            self._flush()  # ended before the loop stopped: their own outcome
            self._abandon_inbox()  # not a task yet: a stop's wind-down took them all, else now
            for ticket in list(self._tasks.values()):  # idem
                self._settle(ticket, ABANDONED, None, None, -1)
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            call = self._call
            for future in list(self._calls):  # scheduled too late to run: fail, never hang
                if call is not None:
                    call(_fail, future, RuntimeError("the Sequence's event loop stopped"))
            self._ended.release()

    # From a Site

    def hand_over(
        self, ticket: Ticket, coroutine: Coroutine[Any, Any, Any], fate: Fate | None, site: int,
    ) -> None:
        """Await ``coroutine`` on the loop and settle ``ticket`` with its end.

        Raises:
            RuntimeError: the loop has stopped (``coroutine`` is closed; the
                caller still owns the ticket and settles it).
        """
        try:
            loop = self._start()
            with self._lock:
                if self._stopped:
                    raise RuntimeError("the Sequence's event loop has stopped (shutting down)")
                self._inbox.append((ticket, coroutine, fate, site))
                if self._scheduled:
                    return
                self._scheduled = True
        except BaseException:
            coroutine.close()
            raise
        with contextlib.suppress(RuntimeError):  # closed: its last drain took the item
            loop.call_soon_threadsafe(self._drain)

    def submit(self, tickets: list[Ticket], fate: Fate) -> None:
        """Run the functions of these unstarted (QUEUED) tickets on the loop, no Site between.

        Each is settled when its coroutine ends, as after :meth:`hand_over`;
        one still in the inbox when a cancelling shutdown begins is cancelled
        there (it never started). One wake-up for all of them.

        Raises:
            RuntimeError: the loop has stopped (the caller still owns the
                tickets, untouched, and settles them).
        """
        loop = self._start()
        with self._lock:
            if self._stopped:
                raise RuntimeError("the Sequence's event loop has stopped (shutting down)")
            self._fresh.append((tickets, fate))  # one item for the batch, not one per ticket
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # closed: its last drain took the items
            loop.call_soon_threadsafe(self._drain)

    def call(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` on the loop and return its value, waiting the runtime's way.

        For an ``async`` hook around a plain function: the Site waits for it
        (a gevent Site yields to its hub meanwhile).
        """
        loop = self._start()
        future = self._runtime.future()
        call = self._call
        assert call is not None
        calls = self._calls

        async def run() -> None:
            try:
                value = await awaitable
            except BaseException as exc:  # noqa: BLE001 - the Site re-raises it
                call(_fail, future, exc)
            else:
                call(_resolve, future, value)
            finally:
                calls.discard(future)

        with self._lock:
            if self._stopped:
                raise RuntimeError("the Sequence's event loop has stopped (shutting down)")
            calls.add(future)
        try:
            loop.call_soon_threadsafe(self._spawn, run())
        except RuntimeError:
            calls.discard(future)
            raise
        return future.get()

    def cancel(self, action_id: str) -> bool:
        """Cancel the unstarted ticket of ``action_id`` waiting here (submitted without a
        Site, or waiting for a place under ``Fate.max_async_in_flight``); True if found.

        Asks the loop, and waits for its answer the runtime's way.

        Raises:
            pykka.Timeout: the loop did not answer within 10 s (a coroutine blocks it).
        """
        with self._lock:
            loop = None if self._stopped else self._loop
        if loop is None:
            return False
        answer = self._runtime.future()
        call = self._call
        assert call is not None

        def look() -> None:
            found = False
            try:
                self._drain()  # what was handed over before: started now, or held
                held = self._held
                for item in held:
                    if item[1] is None and item[0].action.id == action_id:
                        held.remove(item)
                        self._ending(item[0], CANCELLED, None, item[2], item[3])
                        found = True
                        break
            finally:
                call(_resolve, answer, found)

        try:
            loop.call_soon_threadsafe(look)
        except RuntimeError:  # closed meanwhile
            return False
        return bool(answer.get(timeout=10))

    # On the loop thread

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        inbox, held = self._inbox, self._held
        while inbox:
            item = inbox.popleft()
            if held or self._full(item):
                held.append(item)  # in turn, once a coroutine ends: the loop never waits
            else:
                self._begin(item)
        fresh = self._fresh
        while fresh:
            tickets, fate = fresh.popleft()
            if held or fate.max_async_in_flight > 0:  # one at a time, as the cap allows
                for ticket in tickets:
                    item = (ticket, None, fate, -1)
                    if held or self._full(item):
                        held.append(item)
                    else:
                        self._start_all([ticket], fate)
            else:
                self._start_all(tickets, fate)

    def _full(self, item: _Item) -> bool:
        """Whether ``item`` must wait: its Fate caps the coroutines in flight, all taken."""
        fate = item[2]
        limit = 0 if fate is None else fate.max_async_in_flight
        return 0 < limit <= len(self._tasks)

    def _begin(self, item: _Item) -> None:
        ticket, coroutine, fate, site = item
        if coroutine is None:  # submitted here unstarted, held for a place under the cap
            self._start_all([ticket], fate)
            return
        # The task and one shared done-callback, not a wrapping coroutine: one object
        # fewer per action in flight. _done settles the ticket from the task's outcome.
        ticket.fate, ticket.site = fate, site
        task = asyncio.ensure_future(coroutine)
        self._tasks[task] = ticket
        task.add_done_callback(self._done, context=self._context)

    def _start_all(self, tickets: list[Ticket], fate: Fate | None) -> None:
        """Call the functions of unstarted tickets and make their coroutines tasks (what
        Site.receive and the timeout step do, for tickets without a Site), in one loop."""
        site = -1  # no Site runs them
        if self._settler.cancelling:
            for ticket in tickets:
                self._ending(ticket, CANCELLED, None, fate, site)
            return
        monotonic, lookup = self._runtime.monotonic, self._settler.plan.lookup
        loop = asyncio.get_running_loop()
        new_task = asyncio.Task  # what create_task makes (this loop has no task factory)
        tasks, done, context = self._tasks, self._done, self._context
        name, entry = None, None  # the last name's: a batch is mostly of one name
        for ticket in tickets:
            # No lock: nobody else holds a ticket of the inbox. Started now: a
            # cancellation lets it run, and the runner alone settles it.
            ticket.state, ticket.started = AWAITING, monotonic()
            try:
                action = ticket.action
                if action.name != name:
                    name, entry = action.name, lookup(action.name)
                if entry is None:
                    raise RoutingError(f"no function serves actions named {action.name!r}")
                signature, function = entry
                content = action.content
                if signature.content_type is not None:
                    content = signature.convert(content)
                awaitable = function(content)
                if signature.timeout is not None:
                    awaitable = _limited(awaitable, signature.timeout, action)
                if type(awaitable) is CoroutineType:
                    task = new_task(awaitable, loop=loop)  # ensure_future, without its calls
                elif inspect.isawaitable(awaitable):
                    task = asyncio.ensure_future(awaitable)
                else:
                    self._ending(ticket, COMPLETED, awaitable, fate, site)
                    continue
            except BaseException as exc:  # noqa: BLE001 - the action's, as in _done
                self._ending(ticket, _failure(exc), exc, fate, site)
                continue
            ticket.fate, ticket.site = fate, site
            tasks[task] = ticket
            task.add_done_callback(done, context=context)

    def _release(self) -> None:
        """A coroutine ended: start those that waited for its place, in their order."""
        held = self._held
        while held and not self._full(held[0]):
            self._begin(held.popleft())

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        """A task of :meth:`_begin` ended: settle its ticket with its outcome (at the end
        of this turn), start what waited for its place."""
        ticket = self._tasks.pop(task, None)
        if ticket is None:
            return
        fate, site = ticket.fate, ticket.site
        try:
            value = task.result()
            outcome = COMPLETED
        except BaseException as exc:  # noqa: BLE001 - every failure is the action's
            outcome, value = _failure(exc), exc
        endings = self._endings  # self._ending(...), inline: once per action
        endings.append((ticket, outcome, value, fate, site))
        if len(endings) == 1:
            task.get_loop().call_soon(self._flush)
        if self._held and not self._stopped:
            self._release()

    def _ending(self, ticket: Ticket, outcome: str, value: Any, fate: Fate | None,
                site: int) -> None:
        """Settle at the end of this turn of the loop, with the other endings of the turn."""
        endings = self._endings
        endings.append((ticket, outcome, value, fate, site))
        if len(endings) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        endings, self._endings = self._endings, []
        if endings:
            call = self._call
            assert call is not None
            call(self._settle_all, endings)

    def _settle_all(self, endings: list[_Ending]) -> None:
        settle, tally = self._settler.settle, Tally()
        with wakeups_held():  # the loops awaiting these results: woken once, not each
            try:
                for ticket, outcome, value, fate, site in endings:
                    try:
                        settle(ticket, outcome, value, fate, tally, site)  # positional: faster
                    except Exception:  # noqa: BLE001 - the production's; the others still end
                        _log.exception("settle_failed", action_id=ticket.action.id,
                                       action_name=ticket.action.name, outcome=outcome)
            finally:
                self._settler.flush(tally)

    def _settle(self, ticket: Ticket, outcome: str, value: Any, fate: Fate | None,
                site: int) -> None:
        call = self._call
        assert call is not None
        call(self._settle_all, [(ticket, outcome, value, fate, site)])

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._others.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._others.discard)

    def _abandon_inbox(self) -> None:
        for inbox in (self._held, self._inbox):
            while inbox:
                ticket, coroutine, fate, site = inbox.popleft()
                if coroutine is not None:
                    coroutine.close()
                self._settle(ticket, ABANDONED, None, fate, site)
        fresh = self._fresh
        while fresh:
            tickets, fate = fresh.popleft()
            for ticket in tickets:
                self._settle(ticket, ABANDONED, None, fate, -1)

    def _abandon(self) -> list[asyncio.Future[Any]]:
        """Hand back every attempt still awaiting (settled ABANDONED), cancel their tasks."""
        self._flush()  # those that ended first keep their outcome
        self._abandon_inbox()
        tasks: list[asyncio.Future[Any]] = list(self._tasks)
        for ticket in list(self._tasks.values()):
            self._settle(ticket, ABANDONED, None, None, -1)
        tasks += [task for task in self._others if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        return tasks

    async def _wind_down(self) -> None:
        tasks = self._abandon()
        if tasks:
            await asyncio.wait(tasks, timeout=_WIND_DOWN)
        asyncio.get_running_loop().stop()

    # At shutdown

    def stop(self) -> None:
        """Hand back what still awaits (its future raises CancellationError), end the loop.

        A coroutine cut short here was started: handed back, it may run
        again if resubmitted. Idempotent; later hand-overs raise.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # closed already
            loop.call_soon_threadsafe(self._spawn, self._wind_down())
        self._ended.acquire()  # the loop thread never calls stop(): no deadlock
        self._ended.release()


def _failure(exc: BaseException) -> str:
    """The outcome of an attempt that raised ``exc``: FAILED (retried or dead-lettered, as a
    sync function's error), CRASHED for what no action should raise (KeyboardInterrupt)."""
    if isinstance(exc, (Exception, SystemExit, asyncio.CancelledError)):
        return FAILED
    return CRASHED


def _fail(future: Any, exc: BaseException) -> None:
    with contextlib.suppress(queue.Full):  # set already
        future.set_exception((type(exc), exc, exc.__traceback__))


def _resolve(future: Any, value: Any) -> None:
    with contextlib.suppress(queue.Full):
        future.set(value)
