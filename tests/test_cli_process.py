# SPDX-License-Identifier: MIT
"""The real ``echo-actors`` console script in a subprocess: signals, pipes, mistakes, options."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

import echo_actors

pytestmark = pytest.mark.timeout(60)

LIMIT = 30.0
"""Seconds a command may take before the test fails (it normally takes one or two)."""

SCRIPT = str(Path(sys.executable).with_name("echo-actors"))

PLAN = """
import sys
import threading
import time

import msgspec

from echo_actors import Plan, Signature


class Item(msgspec.Struct):
    n: int


def slow(n: int) -> int:
    if n == 0:
        print("STARTED", file=sys.stderr, flush=True)
    time.sleep(0.02)  # the workload: long enough to be interrupted mid-run
    return n


def stuck(n: int) -> int:
    print("STARTED", file=sys.stderr, flush=True)
    threading.Event().wait()  # never returns: only a second Ctrl-C ends the run
    return n


def double(item: Item) -> int:
    return item.n * 2


plan = (
    Plan()
    .with_signature(Signature("Slow")).with_function("Slow", slow)
    .with_signature(Signature("Stuck")).with_function("Stuck", stuck)
    .with_signature(Signature("Double", content_type=Item)).with_function("Double", double)
    .build()
)


def main() -> None:
    print("MAIN RAN")


def factory():
    print("FACTORY RAN")
    return 42


def make_plan() -> Plan:
    return plan
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """The test plan as a .py file."""
    path = tmp_path / "cli_plan.py"
    path.write_text(textwrap.dedent(PLAN))
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}


def _actions(tmp_path: Path, lines: list[object], name: str = "actions.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    ))
    return path


def _slow(tmp_path: Path, n: int = 2000) -> Path:
    return _actions(tmp_path, [{"name": "Slow", "content": i} for i in range(n)])


def echo_actors_cli(*args: str, env: dict[str, str] | None = None,
                    cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to its end (bounded)."""
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=LIMIT, check=False,
        env=env if env is not None else _env(), cwd=cwd,
    )


def start(*args: str, **options: object) -> subprocess.Popen[str]:
    """Start the console script with piped output."""
    return subprocess.Popen(
        [SCRIPT, *args], text=True, env=_env(), **options,  # type: ignore[call-overload]
    )


def read_until(stream: IO[str], wanted: Callable[[str], bool]) -> list[str]:
    """Lines of ``stream`` up to the first one ``wanted`` (the process writes it soon)."""
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        if wanted(line):
            return seen
    raise AssertionError(f"the process ended without the expected line; it wrote {seen}")


def no_traceback(*texts: str) -> None:
    """No Python traceback in the command's output."""
    for text in texts:
        assert "Traceback" not in text, text


def test_version() -> None:
    """--version prints the package version, before or after a command."""
    for args in (["--version"], ["run", "--version"]):
        result = echo_actors_cli(*args)
        assert result.returncode == 0
        assert result.stdout.strip() == f"echo-actors {echo_actors.__version__}"


def test_global_options_before_or_after_the_command(plan_file: Path, tmp_path: Path) -> None:
    """--log-level/--log-format work on either side of the command; events go to stderr."""
    actions = _actions(tmp_path, [{"name": "Double", "content": {"n": 1}}])
    for args in (
        ["--log-level", "debug", "--log-format", "json", "run", f"{plan_file}:plan",
         str(actions), "--json"],
        ["run", f"{plan_file}:plan", str(actions), "--json", "--log-level", "debug",
         "--log-format", "json"],
    ):
        result = echo_actors_cli(*args)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["completed"] == 1  # stdout: the summary only
        events = [json.loads(line) for line in result.stderr.splitlines()
                  if line.startswith("{")]
        ours = [e for e in events if e.get("logger", "").startswith("echo_actors")]
        assert ours and all(e["level"] in {"debug", "info", "warning", "error"} for e in ours)
        assert any(e["level"] == "debug" for e in ours)


def test_default_log_level_shows_no_debug(plan_file: Path, tmp_path: Path) -> None:
    """Without --log-level, no debug or info event reaches stderr."""
    actions = _actions(tmp_path, [{"name": "Double", "content": {"n": 1}}])
    result = echo_actors_cli("run", f"{plan_file}:plan", str(actions), "--no-progress",
                             "--log-format", "json")
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{plan}:plan", "{tmp}"], "is a directory, not a file of actions"),
        (["run", "{plan}:plan", "{tmp}/missing.jsonl"], "no such file: "),
        (["run", "{plan}:plan", "{actions}", "--sites", "0"], "--sites: must be at least 1"),
        (["run", "{plan}:plan", "{actions}", "--sites", "-3"], "--sites: must be at least 1"),
        (["run", "{plan}:main", "{actions}"], "returning None, not a Plan (it was not called)"),
        (["run", "{plan}:factory", "{actions}"], "factory() returned a int, not a Plan"),
        (["run", "{plan}:slow", "{actions}"], "needs arguments (n)"),
        (["run", "json:loads", "{actions}"], "needs arguments (s)"),
        (["run", "{plan}:Item", "{actions}"], "is a class"),
        (["run", "{broken}:plan", "{actions}"], "importing {broken} failed: ZeroDivisionError"),
        (["run", "{tmp}:plan", "{actions}"], "is a directory; MODULE is a .py file"),
        (["run", "no_such_module_here:plan", "{actions}"], "no module named"),
        (["run", "{plan}:plan", "{actions}", "--config", "{tmp}/bad.toml"],
         "bad.toml: not valid TOML: Invalid value (at line 1, column 9)"),
        (["run", "{plan}:plan", "{actions}", "--config", "{tmp}"], "cannot read --config"),
        (["stats", "--stream", "s"], "no Redis server: pass --redis URL or set ECHO_REDIS_URL"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=["dir-file", "missing-file", "sites-0", "sites-negative", "main-not-called",
         "factory-not-a-plan", "needs-args", "json-loads", "class", "import-fails",
         "dir-module", "no-module", "broken-toml", "dir-config", "no-redis", "unknown-command",
         "no-command"],
)
def test_mistakes_exit_2_with_a_message(args: list[str], message: str, plan_file: Path,
                                        tmp_path: Path) -> None:
    """Each user mistake: exit 2, one message naming the problem, no traceback, nothing run."""
    (tmp_path / "bad.toml").write_text("sites = = 2\n")
    broken = tmp_path / "broken_plan.py"
    broken.write_text("x = 1 / 0\n")
    actions = _actions(tmp_path, [{"name": "Double", "content": {"n": 1}}])
    names = {"plan": plan_file, "tmp": tmp_path, "actions": actions, "broken": broken}
    result = echo_actors_cli(*(arg.format(**names) for arg in args))
    assert result.returncode == 2, result
    assert message.format(**names) in result.stderr
    assert "error:" in result.stderr
    no_traceback(result.stdout, result.stderr)
    assert "MAIN RAN" not in result.stdout + result.stderr  # refused by looking, not called
    assert "completed" not in result.stdout


def test_bad_variable_is_named(plan_file: Path, tmp_path: Path) -> None:
    """ECHO_MAX_ATTEMPTS=abc: exit 2 and a message naming the variable."""
    actions = _actions(tmp_path, [{"name": "Double", "content": {"n": 1}}])
    result = echo_actors_cli("run", f"{plan_file}:plan", str(actions),
                             env={**_env(), "ECHO_MAX_ATTEMPTS": "abc"})
    assert result.returncode == 2
    assert "ECHO_MAX_ATTEMPTS='abc'" in result.stderr
    no_traceback(result.stderr)


def test_plan_factory_and_dotted_module(plan_file: Path, tmp_path: Path) -> None:
    """A zero-argument factory annotated -> Plan is called; a dotted module is found from cwd."""
    actions = _actions(tmp_path, [{"name": "Double", "content": {"n": 1}}])
    result = echo_actors_cli("run", "cli_plan:make_plan", str(actions), "--json",
                             cwd=plan_file.parent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["completed"] == 1


def test_empty_file_exits_0_and_says_so(plan_file: Path, tmp_path: Path) -> None:
    """An empty FILE (or blank lines only) is not an error, and the command says it was empty."""
    actions = _actions(tmp_path, ["", "   "])
    result = echo_actors_cli("run", f"{plan_file}:plan", str(actions))
    assert result.returncode == 0
    assert "holds no actions" in result.stderr
    assert "completed 0," in result.stdout


def test_progress_lines_when_not_a_terminal(plan_file: Path, tmp_path: Path) -> None:
    """stderr not a terminal: whole progress lines (no carriage returns) with %, rate, ETA."""
    result = echo_actors_cli("run", f"{plan_file}:plan", str(_slow(tmp_path, 100)),
                             "--progress-every", "0.1")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    pattern = re.compile(r"progress: \d+/100 done \(\d+%\), [\d.?]+ actions/s, ETA [\d:?]+$")
    assert lines and all(pattern.match(line) for line in lines), lines
    assert lines[-1].startswith("progress: 100/100 done (100%)")


def test_progress_bar_on_a_terminal(plan_file: Path, tmp_path: Path) -> None:
    """stderr a terminal: a tqdm bar with percentage, rate and the count."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = start("run", f"{plan_file}:plan", str(_slow(tmp_path, 100)),
                        stdout=subprocess.PIPE, stderr=terminal)
        os.close(terminal)
        chunks: list[bytes] = []
        while True:  # drain the terminal until the process has ended and nothing is left
            readable, _, _ = select.select([controller], [], [], 0.1)
            if not readable:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=LIMIT) == 0
        assert process.stdout is not None
        assert "completed 100," in process.stdout.read()
        process.stdout.close()
    finally:
        os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert "100%" in shown and "100/100" in shown and "actions/s" in shown


def test_closed_stdout_and_stderr_end_quietly(plan_file: Path, tmp_path: Path) -> None:
    """`echo-actors run ... 2>&1 | head -3`: the command ends promptly, status 141."""
    process = start("run", f"{plan_file}:plan", str(_slow(tmp_path, 5000)),
                    "--progress-every", "0.05",
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    read_until(process.stdout, lambda line: line.startswith("progress:"))
    process.stdout.close()  # what head does after its lines
    assert process.wait(timeout=LIMIT) == 141


def test_closed_stdout_leaves_no_traceback(plan_file: Path, tmp_path: Path) -> None:
    """stdout closed before the summary: exit 141 and nothing on stderr but progress."""
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as err:
        process = start("run", f"{plan_file}:plan", str(_slow(tmp_path, 200)), "--json",
                        stdout=subprocess.PIPE, stderr=err)
        assert process.stdout is not None
        process.stdout.close()
        assert process.wait(timeout=LIMIT) == 141
    text = errors.read_text()
    no_traceback(text)
    assert "Exception ignored" not in text


def test_ctrl_c_finishes_running_actions_and_prints_the_summary(plan_file: Path,
                                                                 tmp_path: Path) -> None:
    """First Ctrl-C mid-run: stop reading, cancel what has not started, summary, exit 130."""
    process = start("run", f"{plan_file}:plan", str(_slow(tmp_path)), "--json",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None
    read_until(process.stderr, lambda line: line.startswith("STARTED"))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=LIMIT)
    assert process.returncode == 130
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["completed"] >= 1 and summary["cancelled"] >= 1
    assert summary["completed"] + summary["cancelled"] == summary["submitted"]
    assert summary["submitted"] <= 2000
    assert "Ctrl-C again to leave now" in err and "interrupted" in err
    no_traceback(err)


_SIGNALLED_ELSEWHERE = """
import signal, sys, threading
from echo_actors.cli._signals import Stopping, interruptible

never = threading.Event()


def hurry(signum):
    print("HURRY", file=sys.stderr, flush=True)


def other():
    me = threading.get_ident()
    signal.pthread_kill(me, signal.SIGINT)  # to this thread, not the main one
    stopping.requested.wait()
    print("REQUESTED", file=sys.stderr, flush=True)
    signal.pthread_kill(me, signal.SIGINT)


with Stopping(hurry=hurry) as stopping:
    threading.Thread(target=other, daemon=True).start()
    interruptible(never.wait)  # a plain never.wait() here never wakes: the test hangs
"""


def test_signals_delivered_to_another_thread_still_stop_and_leave(tmp_path: Path) -> None:
    """The kernel may deliver SIGINT to any thread; Python handles it in the main thread
    once that wakes. Sent to a helper thread while the main one waits (as the CLI's
    shutdown waits for a running action), the first still asks to stop and the second
    still leaves with 130: the wait is :func:`interruptible` (an untimed one never wakes)."""
    script = tmp_path / "signalled.py"
    script.write_text(_SIGNALLED_ELSEWHERE)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=_env(), timeout=LIMIT, check=False)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "REQUESTED" in result.stderr and "HURRY" in result.stderr


def test_second_ctrl_c_leaves_at_once(plan_file: Path, tmp_path: Path) -> None:
    """Second Ctrl-C while an action never ends: the command leaves with 130."""
    actions = _actions(tmp_path, [{"name": "Stuck", "content": 1}])
    process = start("run", f"{plan_file}:plan", str(actions),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None
    read_until(process.stderr, lambda line: line.startswith("STARTED"))
    process.send_signal(signal.SIGINT)
    read_until(process.stderr, lambda line: "Ctrl-C again" in line)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=LIMIT)
    assert process.returncode == 130
    assert "leaving without waiting" in err
    no_traceback(err)


def _dead_letter_file(tmp_path: Path) -> Path:
    return _actions(tmp_path, [
        {"name": "Double", "content": {"n": 1}},   # 1
        {"name": "Nope", "content": 1},            # 2: routing
        "not json",                                 # 3: bad line
        {"name": "Double", "content": {"n": "x"}},  # 4: validation
        {"name": "Double", "content": {"n": 2}},   # 5
        {"name": "Nope", "content": 2},            # 6: routing
    ])


def test_dead_letters_in_file_order_with_lines(plan_file: Path, tmp_path: Path) -> None:
    """Dead letters are listed with their input line numbers, in file order; exit 1."""
    result = echo_actors_cli("run", f"{plan_file}:plan", str(_dead_letter_file(tmp_path)),
                             "--no-progress")
    assert result.returncode == 1
    listed = [line for line in result.stderr.splitlines() if line.startswith("dead letter")]
    assert [re.match(r"dead letter \(line (\d+)\)", line).group(1)  # type: ignore[union-attr]
            for line in listed] == ["2", "4", "6"]
    assert "line 3: " in result.stderr
    assert "completed 2, dead-lettered 3, bad lines 1 " in result.stdout


def test_each_dead_letter_is_reported_once(plan_file: Path, tmp_path: Path) -> None:
    """A dead letter's id appears once in the output: no log line besides the listing."""
    result = echo_actors_cli("run", f"{plan_file}:plan", str(_dead_letter_file(tmp_path)),
                             "--no-progress", "--json")
    summary = json.loads(result.stdout)
    for letter in summary["dead_letters"]:
        assert result.stderr.count(letter["id"]) == 0  # --json: in the summary only
    result = echo_actors_cli("run", f"{plan_file}:plan", str(_dead_letter_file(tmp_path)),
                             "--no-progress")
    for line in result.stderr.splitlines():
        if line.startswith("dead letter"):
            action_id = line.split()[3]
            assert result.stderr.count(action_id) == 1, result.stderr
