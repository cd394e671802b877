"""Make ``docs/lab.png``: the transport lab under load (20 publishes a second).

Starts its own ``tidings serve`` on a free port, opens ``/lab`` in headless Chromium (Debian's
``/usr/bin/chromium``, or ``CHROMIUM=/path``), moves the rate slider to 20/s, waits until
80 events have been published and every pane has received them, and takes the picture.

    .venv/bin/python docs/make_screenshots.py
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
TIMEOUT_MS = 30_000


def start_server() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        match = LISTENING.search(line)
        if match:
            # Keep reading its log, so that a full pipe never blocks the server.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(match[1])
    raise SystemExit("tidings serve did not start")


def shoot_lab(port: int, path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 600}, device_scale_factor=1)
        page.goto(f"http://127.0.0.1:{port}/lab")
        page.wait_for_function("() => window.lab && window.lab.ready()", timeout=TIMEOUT_MS)
        page.fill("#rate", "20")
        page.locator("#rate").blur()
        page.wait_for_function("() => window.lab.tally.published >= 80", timeout=TIMEOUT_MS)
        page.wait_for_function(
            """() => Object.values(window.lab.counts()).every(
                 (pane) => pane.events >= 70 && pane.latencies > 0)""",
            timeout=TIMEOUT_MS,
        )
        page.wait_for_function(  # the display (refreshed every 200 ms) has caught up
            """() => [...document.querySelectorAll('[data-stat="events"]')]
                 .every((shown) => Number(shown.textContent) >= 70)""",
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def main() -> None:
    process, port = start_server()
    try:
        shoot_lab(port, DOCS / "lab.png")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    print(f"wrote {DOCS / 'lab.png'}")


if __name__ == "__main__":
    main()
