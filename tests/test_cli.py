# SPDX-License-Identifier: MIT
"""The echo-actors command line: exit codes, summaries and errors with line numbers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from echo_actors import Action
from echo_actors.cli import main

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent

PLAN_MODULE = """
import msgspec

from echo_actors import Plan, Signature


class Item(msgspec.Struct):
    n: int


def double(item: Item) -> int:
    return item.n * 2


plan = (
    Plan()
    .with_signature(Signature("Double", content_type=Item))
    .with_function("Double", double)
    .build()
)


def make_plan() -> Plan:
    return plan


not_a_plan = 42
"""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """A small plan module written to a .py file."""
    path = tmp_path / "small_plan.py"
    path.write_text(textwrap.dedent(PLAN_MODULE))
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """Run ``main(argv)`` in-process; returns (exit status, stdout, stderr).

    ``main`` configures logging while it runs and undoes it before returning
    (the autouse fixture in conftest checks that structlog is left alone).
    """

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        status = main(list(argv))
        assert (root.handlers, root.level) == (handlers, level), "main left logging configured"
        out, err = capsys.readouterr()
        return status, out, err

    yield run


def _line(name: str = "Double", content: Any = None, **fields: Any) -> str:
    return json.dumps({"name": name, "content": content, **fields})


def _write_lines(tmp_path: Path, lines: list[str], name: str = "actions.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mixed_file_reports_bad_lines(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """Good, malformed, wrong-typed and oversized lines: exit 1, counts and line numbers."""
    config = tmp_path / "echo.toml"
    config.write_text("[echo]\nmax_action_bytes = 200\n")
    lines = [
        _line(content={"n": 1}),  # 1
        '{"name": "Double", "content": ',  # 2: malformed
        _line(content={"n": 2}),  # 3
        json.dumps({"name": 7, "content": {"n": 3}}),  # 4: wrong type
        _line(content={"n": 4, "padding": "x" * 300}),  # 5: oversized
        _line(content={"n": 5}),  # 6
    ]
    actions = _write_lines(tmp_path, lines)
    status, out, err = cli(
        "run", f"{plan_file}:plan", str(actions), "--config", str(config), "--no-progress"
    )
    assert status == 1
    assert "completed 3," in out
    assert "dead-lettered 0," in out
    assert "bad lines 3 " in out
    error_lines = [line for line in err.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in error_lines] == ["line 2", "line 4", "line 5"]
    assert "$.name" in error_lines[1]
    assert "limit" in error_lines[2]


def test_mixed_file_json_summary(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """--json prints the counts and the dead letters (with their lines, in file order)."""
    lines = [
        _line(content={"n": 1}),
        _line("Unknown", content={"n": 2}),
        _line(content={"n": "three"}),
        "not json at all",
        _line(content={"n": 4}),
    ]
    actions = _write_lines(tmp_path, lines)
    status, out, err = cli("run", f"{plan_file}:plan", str(actions), "--json")
    assert status == 1
    summary = json.loads(out)
    assert summary["submitted"] == 4
    assert summary["completed"] == 2
    assert summary["dead_lettered"] == 2
    assert summary["cancelled"] == 0
    assert summary["bad_lines"] == 1
    assert "line 4:" in err
    letters = summary["dead_letters"]
    assert [(d["line"], d["name"], d["error_kind"]) for d in letters] == [
        (2, "Unknown", "routing"), (3, "Double", "validation"),
    ]
    assert all(d["attempts"] == 1 and d["message"] and d["id"] for d in letters)
    assert summary["interrupted"] is False


def test_all_good_exits_zero(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """A file of good lines (blank lines skipped): exit 0 and a summary with every action."""
    lines = [_line(content={"n": n}) for n in range(50)]
    lines.insert(10, "")
    actions = _write_lines(tmp_path, lines)
    status, out, err = cli("run", f"{plan_file}:plan", str(actions), "--sites", "2")
    assert status == 0, err
    assert "completed 50, dead-lettered 0, bad lines 0" in out


def test_all_good_json_parses(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """--json output is one parseable JSON object with the counts."""
    actions = _write_lines(tmp_path, [_line(content={"n": n}) for n in range(20)])
    status, out, _ = cli("run", f"{plan_file}:plan", str(actions), "--json", "--no-progress")
    assert status == 0
    summary = json.loads(out)
    assert summary["submitted"] == summary["completed"] == 20
    assert summary["dead_lettered"] == summary["bad_lines"] == summary["cancelled"] == 0
    assert summary["seconds"] >= 0 and summary["per_second"] >= 0


def test_plan_factory_is_accepted(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """MODULE:PLAN may name a function that returns a Plan."""
    actions = _write_lines(tmp_path, [_line(content={"n": 1})])
    status, out, _ = cli("run", f"{plan_file}:make_plan", str(actions), "--json")
    assert status == 0
    assert json.loads(out)["completed"] == 1


def test_encoded_actions_are_accepted(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """Lines produced by Action.encode run as they are, chain included."""
    action = Action("Double", {"n": 1}, next=Action("Double", {"n": 2}))
    actions = _write_lines(tmp_path, [action.encode().decode()])
    status, out, _ = cli("run", f"{plan_file}:plan", str(actions), "--json")
    assert status == 0
    summary = json.loads(out)
    assert summary["submitted"] == 1 and summary["completed"] == 2


def test_progress_goes_to_stderr(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """--progress writes nothing to stdout but the summary."""
    actions = _write_lines(tmp_path, [_line(content={"n": n}) for n in range(10)])
    status, out, _ = cli("run", f"{plan_file}:plan", str(actions), "--progress", "--json")
    assert status == 0
    assert json.loads(out)["completed"] == 10


def test_missing_file_exits_2(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """A FILE that does not exist: exit 2 and a message naming it."""
    missing = tmp_path / "missing.jsonl"
    status, out, err = cli("run", f"{plan_file}:plan", str(missing))
    assert status == 2
    assert "missing.jsonl" in err
    assert out == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "MODULE:PLAN"),
        ("{plan}:", "MODULE:PLAN"),
        ("{plan}:nothing_here", "nothing_here"),
        ("{plan}:not_a_plan", "not a Plan"),
        ("{missing}:plan", "missing_plan.py"),
        ("echo_actors_no_such_module:plan", "echo_actors_no_such_module"),
    ],
    ids=["no-colon", "no-attribute", "missing-attribute", "not-a-plan", "no-file", "no-module"],
)
def test_bad_plan_spec_exits_2(
    cli: Run, plan_file: Path, tmp_path: Path, spec: str, message: str
) -> None:
    """A MODULE:PLAN that is malformed, missing, or not a Plan: exit 2 with a clear message."""
    actions = _write_lines(tmp_path, [_line(content={"n": 1})])
    spec = spec.format(plan=plan_file, missing=tmp_path / "missing_plan.py")
    status, out, err = cli("run", spec, str(actions))
    assert status == 2
    assert message in err
    assert "error" in err
    assert out == ""


def test_bad_config_exits_2(cli: Run, plan_file: Path, tmp_path: Path) -> None:
    """A --config file with an unknown setting: exit 2 naming it."""
    config = tmp_path / "echo.toml"
    config.write_text("sitez = 2\n")
    actions = _write_lines(tmp_path, [_line(content={"n": 1})])
    status, _, err = cli("run", f"{plan_file}:plan", str(actions), "--config", str(config))
    assert status == 2
    assert "sitez" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "only_one_argument"],
        ["fly", "a", "b"],
        ["run", "a:b", "f", "--sites", "x"],
    ],
    ids=["nothing", "run-alone", "one-argument", "unknown-command", "bad-sites"],
)
def test_usage_errors_exit_2(cli: Run, argv: list[str]) -> None:
    """Usage errors end with status 2 and a usage message."""
    status, _, err = cli(*argv)
    assert status == 2
    assert "usage" in err


def test_console_script_runs_the_quickstart() -> None:
    """`python -m echo_actors run examples/quickstart.py:plan examples/actions.jsonl --json`."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "echo_actors",
            "run",
            "examples/quickstart.py:plan",
            "examples/actions.jsonl",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["submitted"] == 2000
    assert summary["completed"] == 2000
    assert summary["dead_lettered"] == 0
    assert summary["bad_lines"] == 0


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["worker", "--help"], ["submit", "--help"],
     ["dead-letters", "--help"], ["dead-letters", "list", "--help"],
     ["dead-letters", "requeue", "--help"], ["stats", "--help"], ["dashboard", "--help"]],
    ids=lambda args: "-".join(args[:-1]) or "top",
)
def test_help_shows_examples_and_exit_codes(cli: Run, args: list[str]) -> None:
    """Every command's --help has examples and the exit statuses, and no RST markup."""
    status, out, _ = cli(*args)
    assert status == 0
    assert "examples:" in out and "exit status:" in out
    assert "130" in out and "``" not in out and ":class:" not in out


def test_dead_letters_help_names_its_actions(cli: Run) -> None:
    """`dead-letters --help` lists list and requeue with a line each."""
    status, out, _ = cli("dead-letters", "--help")
    assert status == 0
    assert "list the dead letters" in out and "put dead letters back" in out
