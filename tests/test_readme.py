# SPDX-License-Identifier: MIT
"""The README's and the documentation's code runs as written, so the docs cannot drift.

Python blocks: each README block runs alone in a fresh interpreter; a docs page's
blocks run in order in one interpreter (a page builds on its earlier blocks, as a
reader pasting them would). Shell blocks (``bash``) run in bash with ``set -e``, in a
temporary directory, with three substitutions and nothing else: ``examples/`` and
``tests/`` point into this checkout, the gevent server's port 8080 becomes a free
port, and the Redis URL becomes the test session's own server. ``pip install`` lines
are left out: the environment running the tests has the extras already, and pip would
need the network.

A block preceded by ``<!-- test: skip: why -->`` is not run; the reason is required
and the list is kept tiny (see ``test_skips_are_few_and_justified``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis_server import redis_server

__all__ = ["redis_server"]  # the session fixture, used by name

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LIMIT = 90.0
"""Seconds one block may run before it counts as a failure."""

_FENCE = re.compile(
    r"(?P<skip><!--\s*test:\s*skip:(?P<why>[^>]*?)-->\s*\n)?"
    r"^```(?P<lang>[a-z]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, with their line numbers and skip reasons."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        fence_at = match.start("lang") - 3
        found.append(Block(
            path, text.count("\n", 0, fence_at) + 1, match["lang"], match["code"],
            match["why"].strip() if match["skip"] else None,
        ))
    return found


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(redis_url: str | None = None) -> dict[str, str]:
    """The test's environment without stray ECHO_* settings (plus the Redis URL if given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env["PYTHONUNBUFFERED"] = "1"
    if redis_url is not None:
        env["ECHO_REDIS_URL"] = redis_url
    return env


def run_python(code: str, where: str, redis_url: str | None = None) -> str:
    """Run ``code`` in a fresh interpreter in the checkout; its stdout (fails with both streams)."""
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, env=_environment(redis_url),
        capture_output=True, text=True, timeout=LIMIT,
    )
    assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def shell_script(code: str, redis_url: str | None = None) -> str:
    """The block as a script, with the documented substitutions (see the module docstring)."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith("pip install")]
    script = "\n".join(lines)
    script = re.sub(r"(?<![\w/.])(examples|tests)/", lambda m: f"{ROOT}/{m[1]}/", script)
    script = script.replace("8080", str(_free_port()))
    if redis_url is not None:
        script = script.replace("redis://127.0.0.1:6379/0", redis_url)
    return "set -euo pipefail\n" + script + "\n"


def run_shell(code: str, where: str, tmp_path: Path, redis_url: str | None = None) -> str:
    """Run a shell block in bash in ``tmp_path``; its stdout, or fail with both streams."""
    if shutil.which("bash") is None:
        pytest.fail(f"{where} needs bash", pytrace=False)
    # The venv's console scripts (echo-actors) first on PATH, as after activating it; a
    # machine without curl gets the stand-in in tests/bin (the recipes' few options).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("curl") is None:
        path = f"{path}{os.pathsep}{Path(__file__).parent / 'bin'}"
    done = subprocess.run(
        ["bash", "-c", shell_script(code, redis_url)], check=False, cwd=tmp_path,
        env={**_environment(redis_url), "PATH": path},
        capture_output=True, text=True, timeout=LIMIT,
    )
    assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _needs_redis(code: str) -> bool:
    """Whether the block talks to Redis (then it gets the session's server as ECHO_REDIS_URL)."""
    return bool(re.search(r"ECHO_REDIS_URL|redis://|echo-actors (worker|submit|stats|dead-letters)",
                          code))


# What the tests below cover


README_BLOCKS = blocks(README)
DOC_BLOCKS = [block for page in _pages() for block in blocks(page)]
SETUP = README_BLOCKS[0]


def _commands(code: str) -> list[str]:
    """The block's command lines, trailing comments and ``pip install`` lines left out."""
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in code.splitlines())
    return [line for line in lines if line and not line.startswith("pip install")]


def _standalone(command: str) -> bool:
    """A foreground command that needs nothing from the lines around it."""
    return not re.search(r"&\s*$|\\$|^(export|kill|wait)\b|\bwait$", command)


def _shell_blocks() -> list[Block]:
    """Every bash block to run, README first, without repeats (pages repeat recipes).

    A block is a repeat when its commands are those of a block already chosen, or
    when each of its commands is a standalone one that an earlier block ran.
    """
    seen_blocks: set[tuple[str, ...]] = set()
    seen_commands = set(_commands(SETUP.code.splitlines()[0].split(" && ", 1)[1]))
    chosen = []
    for block in README_BLOCKS[1:] + DOC_BLOCKS:
        if block.lang != "bash" or block.skip is not None:
            continue
        commands = _commands(block.code)
        key = tuple(commands)
        repeat = key in seen_blocks or all(
            _standalone(c) and c in seen_commands for c in commands
        )
        if commands and not repeat:
            chosen.append(block)
            seen_blocks.add(key)
            seen_commands.update(commands)
    return chosen


SHELL_BLOCKS = _shell_blocks()


def test_readme_starts_with_the_two_setup_commands() -> None:
    """The README opens with the fenced bash block of the two set-up commands, exactly."""
    text = README.read_text(encoding="utf-8")
    assert text.startswith(
        "# echo_actors\n\n```bash\n"
        "pip install -e . && echo-actors run examples/quickstart.py:plan examples/actions.jsonl\n"
        "pip install -e '.[dev]' && python -m pytest && python tests/run_patched.py\n"
        "```\n"
    )
    assert SETUP.line == 3 and SETUP.skip is None


@pytest.mark.timeout(LIMIT + 10)
def test_the_first_setup_command_runs(tmp_path: Path) -> None:
    """The main job of the first set-up command exits 0 with all 2,000 actions completed.

    (The second command's tests are this suite itself, which CI runs from the README's
    words in .ci/run; running it from inside itself would recurse.)
    """
    first = SETUP.code.splitlines()[0]
    command = first.split(" && ", 1)[1]
    assert command == "echo-actors run examples/quickstart.py:plan examples/actions.jsonl"
    out = run_shell(command, SETUP.where, tmp_path)
    assert re.search(r"completed 2,?000\b", out), out  # all of them (with or without a comma)
    assert re.search(r"dead-lettered 0\b", out), out


@pytest.mark.timeout(LIMIT + 10)
@pytest.mark.parametrize(
    "block", [b for b in README_BLOCKS if b.lang == "python"], ids=lambda b: b.where
)
def test_readme_python_block_runs(block: Block) -> None:
    """Each Python block of the README runs alone, as pasted, and exits 0."""
    assert block.skip is None, f"{block.where}: README Python blocks are never skipped"
    run_python(block.code, block.where)


@pytest.mark.timeout(LIMIT + 10)
@pytest.mark.parametrize(
    "page",
    [p for p in _pages() if any(b.lang == "python" and b.skip is None for b in blocks(p))],
    ids=lambda p: str(p.relative_to(DOCS)),
)
def test_docs_page_python_runs(page: Path, request: pytest.FixtureRequest) -> None:
    """A docs page's Python blocks run in order in one interpreter and exit 0."""
    code = "\n".join(b.code for b in blocks(page) if b.lang == "python" and b.skip is None)
    redis_url = request.getfixturevalue("redis_server") if _needs_redis(code) else None
    run_python(code, str(page.relative_to(ROOT)), redis_url)


@pytest.mark.timeout(LIMIT + 10)
@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_recipe_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each shell recipe runs as pasted (see the module docstring) and exits 0."""
    redis_url = request.getfixturevalue("redis_server") if _needs_redis(block.code) else None
    out = run_shell(block.code, block.where, tmp_path, redis_url)
    if "gevent_server.py" in block.code:
        assert '"status":"ok"' in out, out
        assert '"result":5' in out, out
        assert "stopped: completed 1, dead-lettered 0, cancelled 0" in out, out
    if "examples/bank.py" in block.code:
        assert "money before" in out and ": conserved" in out, out
    if "examples/epidemic.py" in block.code:
        _check_epidemic(out)
    simulations = re.findall(r"examples/(?:bank|epidemic)\.py", block.code)
    if simulations:  # each run says where its chart went, or how to get one
        said = re.findall(
            r"^  (?:chart saved to \S+\.png|no chart: matplotlib is not installed .*)$",
            out, re.M,
        )
        assert len(said) == len(simulations), out
    if "echo-actors submit" in block.code:
        assert re.search(r"\b2,?000\b", out), out  # submit counts what it added


def _check_epidemic(out: str) -> None:
    """The epidemic's report: N days simulated for --days N, and every table row adds up."""
    days = int(re.search(r"(\d+) days\n", out)[1])  # type: ignore[index]
    assert f"{days}.00 simulated days" in out, out
    population = int(re.search(r"population (\d+), at the end (\d+): conserved", out)[1])  # type: ignore[index]
    rows = re.findall(r"^ +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.M)
    assert rows, out
    for day, s, i, r, transit, total in rows:
        assert int(s) + int(i) + int(r) + int(transit) == int(total) == population, (day, out)
    assert rows[-1][0] == str(days)


def test_simulations_say_how_to_get_a_chart_without_matplotlib(tmp_path: Path) -> None:
    """Without matplotlib, each simulation prints one line saying how to get its chart."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "matplotlib.py").write_text("raise ImportError('hidden for this test')\n")
    for script, args in (("bank.py", ["--accounts", "10", "--transfers", "50"]),
                         ("epidemic.py", ["--regions", "2", "--days", "3"])):
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / script), *args],
            check=False, cwd=tmp_path,
            env={**_environment(), "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])},
            capture_output=True, text=True, timeout=LIMIT,
        )
        assert done.returncode == 0, done.stderr
        lines = [ln for ln in done.stdout.splitlines() if "chart" in ln]
        assert lines == [
            "  no chart: matplotlib is not installed "
            "(pip install 'echo_actors[plot]', or pip install -e '.[plot]' in a checkout)"
        ], done.stdout
        assert not list(tmp_path.glob("*.png"))


def test_skips_are_few_and_justified() -> None:
    """Only blocks that cannot run in CI are skipped, each with its reason."""
    skipped = [b for b in README_BLOCKS + DOC_BLOCKS if b.skip is not None]
    assert all(len(b.skip or "") >= 20 for b in skipped), [(b.where, b.skip) for b in skipped]
    assert len(skipped) <= 3, [b.where for b in skipped]
    assert len(SHELL_BLOCKS) >= 5, [b.where for b in SHELL_BLOCKS]


def test_substitutions_are_the_documented_ones() -> None:
    """The shell runner changes paths, the port and the Redis URL, and nothing else."""
    script = shell_script(
        "pip install -e '.[redis]'\n"
        "export ECHO_REDIS_URL=redis://127.0.0.1:6379/0\n"
        "python examples/gevent_server.py --port 8080 &\n"
        "echo-actors run examples/quickstart.py:plan examples/actions.jsonl\n",
        "redis://127.0.0.1:1/0",
    )
    assert "pip install" not in script
    assert "export ECHO_REDIS_URL=redis://127.0.0.1:1/0" in script
    assert f"python {ROOT}/examples/gevent_server.py --port " in script
    assert "8080" not in script
    assert f"run {ROOT}/examples/quickstart.py:plan {ROOT}/examples/actions.jsonl" in script
