# SPDX-License-Identifier: MIT
"""on_main_exit: a process whose main thread ends with pykka actors running can still exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

LIMIT = 30.0  # seconds a child process may take (interpreter start included)

SCRIPT = textwrap.dedent('''
    import sys
    if sys.argv[1] == "patched":
        from gevent import monkey
        monkey.patch_all()
    import pykka
    from echo_actors.runtime import on_main_exit

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message):
            return message

    ref = Echo.start()
    assert ref.ask("up", timeout=10) == "up"  # its non-daemon thread runs

    def stop():
        print("stopping", flush=True)
        ref.stop()

    def tell():
        print("main ended", flush=True)

    handle = on_main_exit(stop)
    if sys.argv[2] == "cancel":
        handle.cancel()
    on_main_exit(tell)  # the latest registered runs first
    print("main done", flush=True)
''')


def _start(mode: str, what: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, what],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("mode", ["plain", "patched"])
def test_callback_stops_the_actor_and_the_process_exits(mode: str) -> None:
    """The callback runs once the main thread ended; it stops the actor and the process exits."""
    proc = _start(mode, "keep")
    out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["main done", "main ended", "stopping"]


def test_without_the_callback_the_process_waits_for_the_actor() -> None:
    """Control: with the stopping callback cancelled, the main thread ends and the process stays."""
    proc = _start("plain", "cancel")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "main done\n"
        assert proc.stdout.readline() == "main ended\n"  # the main thread has ended...
        # ...and nothing will stop the actor's thread: the process cannot have exited.
        assert proc.poll() is None
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=LIMIT)
    assert "stopping" not in out
