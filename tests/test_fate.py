# SPDX-License-Identifier: MIT
"""Fate: typed settings with defaults, from TOML, ECHO_* variables and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from echo_actors import Fate, RetryPolicy

pytestmark = pytest.mark.timeout(30)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "echo.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    """Fate() has Echo's End of 3 attempts and the documented defaults."""
    fate = Fate()
    assert fate.max_attempts == 3
    assert fate.sites == 4
    assert fate.runtime == "thread"
    assert fate.steal is True
    assert fate.license_keys == ()
    assert fate.action_events is False
    assert fate.max_action_bytes == 1 << 20
    assert fate.mailbox_window >= 1


def test_load_with_nothing_is_the_defaults() -> None:
    """Fate.load with no file and an empty environment gives the defaults."""
    assert Fate.load(env={}) == Fate()


def test_retry_policy_from_fate() -> None:
    """The backoff settings make the default retry policy."""
    fate = Fate(max_attempts=5, backoff_base=0.2, backoff_cap=1.0, backoff_jitter=0.0)
    assert fate.retry_policy() == RetryPolicy(max_attempts=5, base=0.2, cap=1.0, jitter=0.0)


def test_toml_top_level(tmp_path: Path) -> None:
    """Settings at the top level of a TOML file are loaded."""
    path = _write(
        tmp_path, 'max_attempts = 5\nsites = 2\nlicense_keys = ["a", "b"]\nsteal = false\n'
    )
    fate = Fate.load(path, env={})
    assert fate.max_attempts == 5 and fate.sites == 2
    assert fate.license_keys == ("a", "b") and fate.steal is False


def test_toml_echo_table(tmp_path: Path) -> None:
    """Settings under an [echo] table are loaded."""
    path = _write(tmp_path, "[echo]\nmax_attempts = 7\nbackoff_base = 0.5\n")
    fate = Fate.load(str(path), env={})
    assert fate.max_attempts == 7 and fate.backoff_base == 0.5
    assert fate.sites == Fate().sites


def test_env_vars() -> None:
    """ECHO_* variables set fields; comma lists and booleans are understood; others ignored."""
    env = {
        "ECHO_MAX_ATTEMPTS": "5",
        "ECHO_SITES": "2",
        "ECHO_BACKOFF_BASE": "0.25",
        "ECHO_LICENSE_KEYS": "new,old",
        "ECHO_STEAL": "false",
        "ECHO_ACTION_EVENTS": "true",
        "ECHO_RUNTIME": "gevent",
        "OTHER_SITES": "9",
    }
    fate = Fate.load(env=env)
    assert fate.max_attempts == 5 and fate.sites == 2 and fate.backoff_base == 0.25
    assert fate.license_keys == ("new", "old")
    assert fate.steal is False and fate.action_events is True
    assert fate.runtime == "gevent"


def test_env_single_license_key() -> None:
    """A single license key in the environment is a one-element tuple."""
    assert Fate.load(env={"ECHO_LICENSE_KEYS": "only"}).license_keys == ("only",)


def test_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env=, Fate.load reads the process environment."""
    monkeypatch.setenv("ECHO_MAX_ATTEMPTS", "9")
    assert Fate.load().max_attempts == 9


def test_precedence(tmp_path: Path) -> None:
    """The file is overridden by the environment, which is overridden by keyword overrides."""
    path = _write(tmp_path, "max_attempts = 4\nsites = 3\nmailbox_window = 8\n")
    fate = Fate.load(path, env={"ECHO_SITES": "5", "ECHO_MAX_ATTEMPTS": "6"}, max_attempts=2)
    assert fate.mailbox_window == 8  # file
    assert fate.sites == 5  # environment over file
    assert fate.max_attempts == 2  # override over both


def test_overrides() -> None:
    """Keyword overrides set fields."""
    fate = Fate.load(env={}, sites=2, license_keys=("k",))
    assert fate.sites == 2 and fate.license_keys == ("k",)


def test_unknown_override_names_the_field() -> None:
    """An unknown setting raises ValueError naming it."""
    with pytest.raises(ValueError, match="bogus"):
        Fate.load(env={}, bogus=1)


def test_unknown_toml_key_names_the_field(tmp_path: Path) -> None:
    """An unknown key in the TOML file raises ValueError naming it."""
    path = _write(tmp_path, "[echo]\nmax_atempts = 5\n")
    with pytest.raises(ValueError, match="max_atempts"):
        Fate.load(path, env={})


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"sites": "many"}, "sites"),
        ({"max_attempts": [1]}, "max_attempts"),
        ({"steal": "perhaps"}, "steal"),
        ({"license_keys": 5}, "license_keys"),
    ],
    ids=["sites-str", "attempts-list", "steal-str", "keys-int"],
)
def test_wrong_type_names_the_field(source: dict[str, Any], field: str) -> None:
    """A value of the wrong type raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        Fate.load(env={}, **source)


def test_wrong_type_in_toml_names_the_field(tmp_path: Path) -> None:
    """A TOML value of the wrong type raises ValueError naming the field."""
    path = _write(tmp_path, 'sites = "four"\n')
    with pytest.raises(ValueError, match="sites"):
        Fate.load(path, env={})


def test_wrong_type_in_env_names_the_field() -> None:
    """An ECHO_* value that does not parse raises ValueError naming the field."""
    with pytest.raises(ValueError, match="max_attempts"):
        Fate.load(env={"ECHO_MAX_ATTEMPTS": "three"})


@pytest.mark.parametrize(
    "settings",
    [
        {"sites": 0},
        {"max_attempts": 0},
        {"mailbox_window": 0},
        {"max_action_bytes": 0},
        {"backoff_jitter": 2.0},
        {"backoff_base": -1.0},
    ],
    ids=["sites-0", "attempts-0", "window-0", "bytes-0", "jitter-2", "negative-base"],
)
def test_invalid_values_raise(settings: dict[str, Any]) -> None:
    """Values out of range raise ValueError, whether built directly or loaded."""
    with pytest.raises(ValueError):
        Fate(**settings)
    with pytest.raises(ValueError):
        Fate.load(env={}, **settings)


def test_invalid_value_from_env_raises() -> None:
    """ECHO_SITES=0 raises ValueError."""
    with pytest.raises(ValueError, match="sites"):
        Fate.load(env={"ECHO_SITES": "0"})


def test_unknown_runtime_is_refused() -> None:
    """A runtime other than "thread" or "gevent" is refused when the settings are loaded."""
    with pytest.raises(ValueError, match="runtime"):
        Fate.load(env={}, runtime="fiber")


def test_missing_file_raises(tmp_path: Path) -> None:
    """A path to a file that does not exist raises OSError."""
    with pytest.raises(OSError):
        Fate.load(tmp_path / "missing.toml", env={})


def test_replace() -> None:
    """replace returns a changed copy and leaves the original alone."""
    fate = Fate()
    changed = fate.replace(sites=2)
    assert changed.sites == 2 and fate.sites == 4


def test_broken_toml_names_the_file_and_position(tmp_path: Path) -> None:
    """A file that is not TOML: the error names the file and the line and column."""
    path = _write(tmp_path, "[echo]\nsites = 4\nmax_attempts = = 3\n")
    with pytest.raises(ValueError, match=r"echo\.toml: not valid TOML: .*line 3, column 16"):
        Fate.load(path, env={})


def test_bad_setting_in_a_file_names_the_file(tmp_path: Path) -> None:
    """An unknown or out-of-range setting read from a file names the file."""
    path = _write(tmp_path, "[echo]\nsites = 0\n")
    with pytest.raises(ValueError, match=r"echo\.toml: sites must be >= 1"):
        Fate.load(path, env={})


def test_bad_variable_names_the_variable() -> None:
    """ECHO_MAX_ATTEMPTS=abc: the error names the variable, its value and the setting."""
    with pytest.raises(ValueError, match=r"ECHO_MAX_ATTEMPTS='abc'.*max_attempts") as info:
        Fate.load(env={"ECHO_MAX_ATTEMPTS": "abc"})
    assert "ECHO_SITES" not in str(info.value)


def test_override_hides_the_source_it_replaces(tmp_path: Path) -> None:
    """A bad override is not blamed on the file whose value it replaced."""
    path = _write(tmp_path, "sites = 2\n")
    with pytest.raises(ValueError, match="sites must be >= 1") as info:
        Fate.load(path, env={}, sites=0)
    assert "echo.toml" not in str(info.value)


def test_library_constructors_never_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ECHO_* variables are read by Fate.load() only: a Sequence, a Life and a
    RedisProduction built without a Fate use Fate()'s defaults."""
    from echo_actors import Life, Plan, Sequence, Signature  # noqa: PLC0415
    from echo_actors.production.redis import RedisProduction  # noqa: PLC0415

    monkeypatch.setenv("ECHO_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("ECHO_RUNTIME", "gevent")
    plan = Plan().with_signature(Signature("A")).with_function("A", lambda x: x).build()
    sequence = Sequence(plan)
    assert (sequence.fate, sequence.runtime.name) == (Fate(), "thread")
    assert Life().fate == Fate()
    production = RedisProduction("redis://127.0.0.1:1/0")  # connects only when used
    try:
        assert production.fate == Fate()
    finally:
        production.close()
    assert Fate.load().max_attempts == 7  # where you ask
