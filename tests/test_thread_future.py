# SPDX-License-Identifier: MIT
"""ThreadFuture: pykka's future contract without a lock of its own (a waiting get makes one)."""

from __future__ import annotations

import queue
import threading

import pykka
import pytest

from echo_actors.runtime._thread import ThreadFuture

LIMIT = 10.0


def test_a_get_waiting_in_other_threads_is_woken_by_set() -> None:
    """Several threads blocked in get() all receive the value set afterwards."""
    future: ThreadFuture[int] = ThreadFuture()
    results: list[int] = []
    waiting = threading.Barrier(5)

    def wait() -> None:
        waiting.wait(LIMIT)
        results.append(future.get(timeout=LIMIT))

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    waiting.wait(LIMIT)
    future.set(7)
    for thread in threads:
        thread.join(LIMIT)
    assert results == [7, 7, 7, 7]
    assert future.get() == 7  # read again once set: no wait
    assert future._callbacks == []  # every waiter's lock was released and dropped


def test_a_get_that_times_out_raises_pykka_timeout_and_leaves_nothing_behind() -> None:
    """Polling with timeouts raises pykka.Timeout each time and piles up no locks."""
    future: ThreadFuture[int] = ThreadFuture()
    for _ in range(3):
        with pytest.raises(pykka.Timeout):
            future.get(timeout=0)
    assert future._callbacks == []
    future.set(1)
    assert future.get(timeout=0) == 1


def test_set_exception_is_reraised_and_a_second_set_is_refused() -> None:
    """A set exception is raised by every get; setting again raises queue.Full."""
    future: ThreadFuture[int] = ThreadFuture()
    try:
        raise KeyError("gone")
    except KeyError:
        future.set_exception()
    for _ in range(2):
        with pytest.raises(KeyError, match="gone"):
            future.get(timeout=LIMIT)
    with pytest.raises(queue.Full):
        future.set(1)


def test_set_racing_get_never_loses_the_wake_up() -> None:
    """A set in one thread and a get in another, many times: every get returns."""
    for n in range(300):
        future: ThreadFuture[int] = ThreadFuture()
        setter = threading.Thread(target=future.set, args=(n,))
        setter.start()
        assert future.get(timeout=LIMIT) == n
        setter.join(LIMIT)


def test_done_callbacks_and_get_hooks_still_work() -> None:
    """A done-callback runs once set; pykka's map (a get hook) computes on get."""
    future: ThreadFuture[int] = ThreadFuture()
    seen: list[int] = []
    future.add_done_callback(lambda f: seen.append(f.get(timeout=0)))
    mapped = future.map(lambda v: v + 1)
    future.set(2)
    assert seen == [2]
    assert mapped.get(timeout=LIMIT) == 3
