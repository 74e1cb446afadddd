# SPDX-License-Identifier: MIT
"""The library logs like pykka and Dramatiq: stdlib loggers ``echo_actors.*``, silent by default."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
import structlog

from echo_actors._logging import get_logger
from echo_actors.runtime._thread import ThreadScheduler

pytestmark = pytest.mark.timeout(60)

LIMIT = 10.0


def _run_program(source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter that configures no logging at all."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
        timeout=30, check=False,
    )


def _below_warning(stderr: str) -> list[str]:
    """Lines of stderr that look like an event below WARNING."""
    words = ("debug", "info", "DEBUG", "INFO")
    return [line for line in stderr.splitlines() if any(word in line for word in words)]


@pytest.fixture
def scheduler() -> Iterator[ThreadScheduler]:
    """A thread-runtime timer scheduler, stopped after the test."""
    timers = ThreadScheduler()
    yield timers
    timers.stop()


@pytest.fixture
def echo_records() -> Iterator[list[logging.LogRecord]]:
    """Records reaching the ``echo_actors`` logger at any level (debug included)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("echo_actors")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_package_logger_has_a_null_handler() -> None:
    """Importing echo_actors puts a NullHandler on the ``echo_actors`` logger."""
    handlers = logging.getLogger("echo_actors").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_unconfigured_program_sees_nothing() -> None:
    """With no logging configured, library events (debug to error, from threads) print nothing."""
    result = _run_program("""
        import threading
        import echo_actors
        from echo_actors._logging import get_logger
        from echo_actors.runtime._thread import ThreadScheduler

        log = get_logger("echo_actors.test").bind(action_id="a1")
        log.debug("a_debug_event", site=1)
        log.info("an_info_event")
        log.warning("a_warning_event")
        log.error("an_error_event")
        done = threading.Event()
        timers = ThreadScheduler()
        timers.call_later(0.0, lambda: 1 / 0)  # timer_failed, logged with its traceback
        timers.call_later(0.0, done.set)
        assert done.wait(10)
        timers.stop()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_sequence_with_retries_and_dead_letters_is_silent() -> None:
    """A Sequence run with a retry, a dead letter and per-action debug events: stdout empty."""
    result = _run_program("""
        from echo_actors import Action, Fate, Plan, Sequence, Signature

        calls = []

        def flaky(n):
            calls.append(n)
            if len(calls) == 1:
                raise ConnectionError("once")  # retried
            return n

        def broken(n):
            raise ValueError("for good")  # dead-lettered after its attempts

        plan = (Plan().with_signature(Signature("Flaky")).with_function("Flaky", flaky)
                .with_signature(Signature("Broken")).with_function("Broken", broken).build())
        fate = Fate(max_attempts=2, backoff_base=0.001, action_events=True)
        with Sequence(plan, fate=fate) as sequence:
            sequence.submit(Action("Flaky", 1))
            sequence.submit(Action("Broken", 2))
            assert sequence.join(10)
            stats = sequence.stats()
        assert (stats.retried, stats.dead_lettered, stats.completed) == (2, 1, 1), stats
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert _below_warning(result.stderr) == []


def test_application_logging_gets_fields_in_extra(echo_records: list[logging.LogRecord],
                                                  scheduler: ThreadScheduler) -> None:
    """An application using `logging` gets each event as a record with its fields as attributes."""
    get_logger("echo_actors.test").bind(action_id="a1", attempt=2).debug("stepped", site=3)
    done = threading.Event()
    scheduler.call_later(0.0, lambda: 1 / 0)
    scheduler.call_later(0.0, done.set)
    assert done.wait(LIMIT)
    stepped, failed = echo_records
    assert (stepped.name, stepped.levelno, stepped.getMessage()) == (
        "echo_actors.test", logging.DEBUG, "stepped"
    )
    assert (stepped.action_id, stepped.attempt, stepped.site) == ("a1", 2, 3)  # type: ignore[attr-defined]
    assert (failed.name, failed.levelno, failed.getMessage()) == (
        "echo_actors.runtime", logging.ERROR, "timer_failed"
    )
    assert failed.exc_info is not None and failed.exc_info[0] is ZeroDivisionError
    assert "lambda" in failed.callback  # type: ignore[attr-defined]


def test_structlog_processor_formatter_renders_the_fields() -> None:
    """An application using structlog renders library events with ProcessorFormatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(sort_keys=True)],
    ))
    logger = logging.getLogger("echo_actors")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        log = get_logger("echo_actors.test").bind(action_id="a1")
        log.info("action_retry", attempt=1, backoff=0.5)
        log.debug("not_shown")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line) == {
        "event": "action_retry", "level": "info", "logger": "echo_actors.test",
        "action_id": "a1", "attempt": 1, "backoff": 0.5,
    }


def test_disabled_level_builds_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A debug call on a logger that does not emit debug runs no processor at all."""
    log = get_logger("echo_actors.test.quiet")
    logging.getLogger("echo_actors.test.quiet").setLevel(logging.INFO)

    built: list[object] = []

    def build(method: str, event: object, _kwargs: object) -> None:
        built.append(event)
        raise RuntimeError("stop here")  # a failing processor: the logger swallows it

    monkeypatch.setattr(log, "_process_event", build)
    try:
        assert log.debug("expensive", payload=object()) is None
        assert not log.isEnabledFor(logging.DEBUG)
        assert log.info("shown") is None  # built (and its failure kept from the caller)
        assert built == ["shown"]
    finally:
        logging.getLogger("echo_actors.test.quiet").setLevel(logging.NOTSET)


def test_fields_named_like_record_attributes_are_kept(
    echo_records: list[logging.LogRecord],
) -> None:
    """A field such as ``name`` (a LogRecord attribute) is kept as ``name_``, not an error."""
    get_logger("echo_actors.test").info("named", name="Double", message="hi")
    [record] = echo_records
    assert (record.name_, record.message_) == ("Double", "hi")  # type: ignore[attr-defined]
    assert record.name == "echo_actors.test"


def test_logger_names_stay_under_the_package() -> None:
    """get_logger refuses a name outside ``echo_actors``."""
    with pytest.raises(ValueError, match="echo_actors"):
        get_logger("myapp")
    assert get_logger("echo_actors").isEnabledFor(logging.CRITICAL)
