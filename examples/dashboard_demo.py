# SPDX-License-Identifier: MIT
"""A Sequence under a changing load, watched on the live dashboard.

Run it:   python examples/dashboard_demo.py            (open the URL it prints)
          python examples/dashboard_demo.py --seconds 10 --screenshot dashboard.png

Three kinds of work arrive in waves: quick thumbnails, slower reports, and
payments that sometimes fail (retried, and now and then dead-lettered: requeue
them from the page). One Site crashes once, to show a restart in the tree.
``--screenshot`` drives a headless Chromium (Debian's ``chromium`` and
``chromium-driver``, and ``selenium``) to save a picture of the page.
"""

from __future__ import annotations

import argparse
import random
import shutil
import threading
import time
from typing import Any

from echo_actors import Action, Fate, Plan, Sequence, Signature, dashboard
from echo_actors.errors import CrashError

crashed = threading.Event()


def thumbnail(n: int) -> int:
    time.sleep(random.uniform(0.001, 0.004))
    return n


def report(n: int) -> int:
    time.sleep(random.uniform(0.02, 0.06))
    return n


def payment(n: int) -> int:
    time.sleep(random.uniform(0.002, 0.01))
    if n == 1013 and not crashed.is_set():
        crashed.set()
        raise CrashError("the card reader fell off")  # the Site crashes and is restarted
    if random.random() < 0.15:
        raise ConnectionError(f"bank timeout on payment {n}")
    return n


plan = (
    Plan()
    .with_signature(Signature("Thumbnail")).with_function("Thumbnail", thumbnail)
    .with_signature(Signature("Report")).with_function("Report", report)
    .with_signature(Signature("Payment")).with_function("Payment", payment)
    .build()
)


def load(sequence: Sequence, stop: threading.Event) -> None:
    """Waves of work: a burst every half second, bigger every few seconds."""
    wave = 0
    while not stop.wait(0.5):
        wave += 1
        burst = 400 if wave % 8 < 3 else 40
        actions: list[Action] = [Action("Thumbnail", i) for i in range(burst)]
        actions += [Action("Report", i) for i in range(burst // 20)]
        actions += [Action("Payment", wave * 1000 + i) for i in range(burst // 10)]
        try:
            sequence.submit_many(actions)
        except RuntimeError:  # shutting down
            return


def screenshot(url: str, path: str) -> None:
    from selenium import webdriver  # noqa: PLC0415 - only for --screenshot
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=shutil.which("chromedriver")))
    try:
        from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

        driver.get(url)
        # A moment when a wave fills the queues, so the bars show something.
        WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.site')]"
            ".reduce((n, row) => n + Number(row.dataset.depth), 0) > 40"))
        driver.save_screenshot(path)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--screenshot", metavar="PNG")
    args = parser.parse_args()
    fate = Fate(max_attempts=2, backoff_base=0.05)
    sequence = Sequence(plan, sites=4, fate=fate, name="demo")
    board = dashboard.serve(sequence, args.port)
    stop = threading.Event()
    with sequence:
        print(f"dashboard at {board.url} for {args.seconds:.0f} s", flush=True)
        feeder = threading.Thread(target=load, args=(sequence, stop), daemon=True)
        feeder.start()
        deadline = time.monotonic() + args.seconds
        if args.screenshot:
            time.sleep(max(0.0, args.seconds - 5))
            screenshot(board.url, args.screenshot)
            print(f"screenshot saved to {args.screenshot}")
        stop.wait(max(0.0, deadline - time.monotonic()))
        stop.set()
        feeder.join()
    board.close()
    stats: Any = sequence.stats()
    print(f"completed {stats.completed}, dead-lettered {stats.dead_lettered}")


if __name__ == "__main__":
    main()
