# SPDX-License-Identifier: MIT
"""The live dashboard: in Debian's Chromium (headless, through chromium-driver), and its guards.

The browser test starts a dashboard on a loopback port over a Sequence doing
work and checks, in the page, that the Site bars and counts follow the work,
that a dead letter's Requeue button makes it run, and that a hostile action
name is shown as text. It saves a screenshot (to docs/img/dashboard.png when
ECHO_SCREENSHOT=1). In CI (ECHO_REQUIRE_BROWSER=1, set by .ci/run) a missing
browser is a failure, not a skip.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echo_actors import Action, Fate, Plan, Sequence, Signature, dashboard

LIMIT = 20.0
HOSTILE = '<img src=x onerror="window.pwned=1">'
ROOT = Path(__file__).resolve().parent.parent


class Work:
    """A plan whose actions wait on a gate, and one that fails until told not to."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.healed = threading.Event()
        self.plan = (
            Plan()
            .with_signature(Signature("Resize")).with_function("Resize", self.resize)
            .with_signature(Signature("Charge")).with_function("Charge", self.charge)
            .build()
        )

    def resize(self, content: Any) -> Any:
        assert self.gate.wait(LIMIT)
        return content

    def charge(self, content: Any) -> Any:
        if not self.healed.is_set():
            raise ValueError("card <declined> & refused")
        return content


@pytest.fixture
def work() -> Iterator[tuple[Work, Sequence, dashboard.Dashboard]]:
    work = Work()
    sequence = Sequence(work.plan, sites=3, fate=Fate(max_attempts=1))
    board = dashboard.serve(sequence)
    sequence.start()
    try:
        yield work, sequence, board
    finally:
        work.gate.set()
        board.close()
        sequence.shutdown(drain=False)


def _driver() -> Any:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        message = (f"{' and '.join(missing)} not installed "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get("ECHO_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1100", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options,
                            service=Service(executable_path=shutil.which("chromedriver")))


def _wait(driver: Any, condition: Any, message: str) -> Any:
    """Wait for ``condition`` (the page re-renders twice a second: stale elements are retried)."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, LIMIT, ignored_exceptions=[StaleElementReferenceException]
                         ).until(condition, message)


def _read(driver: Any, script: str) -> Any:
    """Read the page in one go (no element handle outlives a re-render)."""
    return driver.execute_script(script)


def _tile(driver: Any, key: str) -> int:
    text = _read(driver, f"const b = document.querySelector('#total-{key} b');"
                         "return b ? b.textContent : '';")
    return int(text.replace(",", "")) if text not in ("", "-") else -1


_SITES = """return [...document.querySelectorAll('.site')].map((row) => ({
  depth: Number(row.dataset.depth),
  bars: [...row.querySelectorAll('.bar-mailbox, .bar-backlog')]
        .map((bar) => bar.getBoundingClientRect().width)}));"""
_DEAD = """return [...document.querySelectorAll('#dead tr[data-dead]')].map(
  (row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent));"""


def _click(driver: Any, selector: str) -> bool:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def test_the_page_follows_the_work_and_requeues_a_dead_letter(
    work: tuple[Work, Sequence, dashboard.Dashboard], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    plan_work, sequence, board = work
    driver = _driver()
    try:
        driver.get(board.url)
        _wait(driver, lambda d: int(_read(d, "return document.body.dataset.updates || 0")) >= 1,
              "the page never got figures")
        # One that fails for good, and one with a name made to be markup.
        charge = sequence.submit(Action("Charge", 7))
        with pytest.raises(Exception, match="declined"):
            charge.get(timeout=LIMIT)
        hostile = sequence.submit(Action(HOSTILE, 1))
        with pytest.raises(Exception, match="no function"):
            hostile.get(timeout=LIMIT)
        # 30 actions held at the gate: the Sites' queues fill, and the bars show it.
        futures = sequence.submit_many([Action("Resize", i) for i in range(30)])
        _wait(driver, lambda d: sum(row["depth"] for row in _read(d, _SITES)) >= 20,
              "the Site rows never showed the queued actions")
        sites = _read(driver, _SITES)
        assert len(sites) == 3
        assert any(width > 0 for row in sites for width in row["bars"])  # bars drawn
        plan_work.gate.set()
        for future in futures:
            future.get(timeout=LIMIT)
        _wait(driver, lambda d: _tile(d, "completed") == 30, "completed never reached 30")
        _wait(driver, lambda d: _tile(d, "dead_lettered") == 2, "dead letters not shown")
        rows = _read(driver, _DEAD)
        assert len(rows) == 2
        # The hostile name is text in a cell: no element was made of it, nothing ran.
        assert HOSTILE in [cells[1] for cells in rows]
        assert driver.find_elements(By.CSS_SELECTOR, "#dead img") == []
        assert driver.execute_script("return window.pwned === undefined")
        assert any("card <declined> & refused" in cells[3] for cells in rows)
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        if os.environ.get("ECHO_SCREENSHOT"):
            driver.save_screenshot(str(ROOT / "docs" / "img" / "dashboard.png"))
        # Requeue the Charge from the page: it runs again, completes, and leaves the list.
        charge_id = next(d.action.id for d in sequence.dead_letters() if d.action.name == "Charge")
        plan_work.healed.set()
        _wait(driver, lambda d: _click(d, f'button.requeue[data-id="{charge_id}"]'),
              "no Requeue button for the dead letter")
        _wait(driver, lambda d: _tile(d, "completed") == 31,
              "the requeued action never completed")
        assert sequence.stats().completed == 31
        assert [d.action.name for d in sequence.dead_letters()] == [HOSTILE]
        _wait(driver, lambda d: len(_read(d, _DEAD)) == 1, "the requeued letter stayed in the list")
        # Another origin's page, even holding the token, cannot requeue.
        other = _other_origin_page()
        try:
            driver.get(other.url)
            outcome = driver.execute_async_script(
                """const done = arguments[arguments.length - 1];
                fetch(arguments[0] + "requeue", {method: "POST", mode: "no-cors",
                  body: JSON.stringify({id: arguments[1]}),
                  headers: {"Content-Type": "text/plain"}})
                  .then(() => done("sent"), (e) => done("error " + e));""",
                board.url, sequence.dead_letters()[0].action.id,
            )
            assert outcome == "sent"  # the browser sent it; the server said no
        finally:
            other.close()
        assert [d.action.name for d in sequence.dead_letters()] == [HOSTILE]
    finally:
        driver.quit()


class _OtherOrigin:
    """A blank page on another loopback port: another origin."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        class Blank(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<!doctype html><title>elsewhere</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _other_origin_page() -> _OtherOrigin:
    return _OtherOrigin()


# The guards, without a browser


def _request(board: dashboard.Dashboard, method: str, path: str,
             headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=LIMIT)
    try:
        connection.putrequest(method, path, skip_host=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.fixture
def failed() -> Iterator[tuple[Sequence, dashboard.Dashboard, str]]:
    def fail(content: Any) -> Any:
        raise ValueError("no")

    plan = Plan().with_signature(Signature("Fail")).with_function("Fail", fail).build()
    sequence = Sequence(plan, sites=1, fate=Fate(max_attempts=1))
    board = dashboard.serve(sequence)
    sequence.start()
    try:
        future = sequence.submit(Action("Fail", 1))
        with pytest.raises(Exception, match="no"):
            future.get(timeout=LIMIT)
        yield sequence, board, sequence.dead_letters()[0].action.id
    finally:
        board.close()
        sequence.shutdown(drain=False)


def test_requeue_needs_the_page_origin_and_its_token(
    failed: tuple[Sequence, dashboard.Dashboard, str],
) -> None:
    sequence, board, action_id = failed
    host = f"127.0.0.1:{board.port}"
    body = json.dumps({"id": action_id}).encode()
    good = {"Host": host, "Content-Type": "application/json", "X-Echo-Token": board.token,
            "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    refused = [
        {**good, "Origin": "http://evil.example"},
        {**good, "Sec-Fetch-Site": "cross-site"},
        {key: value for key, value in good.items() if key != "X-Echo-Token"},
        {**good, "X-Echo-Token": board.token[:-1] + ("y" if board.token[-1] == "x" else "x")},
    ]
    for headers in refused:
        status, _ = _request(board, "POST", "/requeue", headers, body)
        assert status == 403, headers
    assert _request(board, "OPTIONS", "/requeue", {"Host": host})[0] == 403
    assert [d.action.id for d in sequence.dead_letters()] == [action_id]
    status, reply = _request(board, "POST", "/requeue", good, body)
    assert (status, json.loads(reply)) == (200, {"requeued": 1})


def test_a_wrong_host_is_refused_against_dns_rebinding(
    failed: tuple[Sequence, dashboard.Dashboard, str],
) -> None:
    sequence, board, action_id = failed
    body = json.dumps({"id": action_id}).encode()
    for path in ("/", "/snapshot", "/events"):
        status, _ = _request(board, "GET", path, {"Host": f"attacker.example:{board.port}"})
        assert status == 421
    status, _ = _request(board, "POST", "/requeue",
                         {"Host": "attacker.example", "X-Echo-Token": board.token}, body)
    assert status == 421
    status, page = _request(board, "GET", "/", {"Host": f"localhost:{board.port}"})
    assert status == 200 and board.token.encode() in page
    assert [d.action.id for d in sequence.dead_letters()] == [action_id]


def test_the_snapshot_escapes_nothing_but_the_page_title_is_escaped() -> None:
    plan = Plan().with_signature(Signature("Noop")).with_function("Noop", lambda c: c).build()
    sequence = Sequence(plan, name='<script>alert("x")</script>')
    board = dashboard.serve(sequence)
    try:
        status, page = _request(board, "GET", "/", {"Host": f"127.0.0.1:{board.port}"})
        assert status == 200
        assert b'<script>alert("x")' not in page
        assert b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    finally:
        board.close()
        sequence.shutdown(drain=False)


def test_off_loopback_needs_an_explicit_option_and_a_token() -> None:
    plan = Plan().with_signature(Signature("Noop")).with_function("Noop", lambda c: c).build()
    sequence = Sequence(plan)
    with pytest.raises(ValueError, match="allow_remote"):
        dashboard.serve(sequence, host="0.0.0.0")
    with pytest.raises(ValueError, match="token"):
        dashboard.serve(sequence, host="0.0.0.0", allow_remote=True)
    with pytest.raises(TypeError, match="Sequence or a RedisProduction"):
        dashboard.serve(object())
    sequence.shutdown()
