"""Make ``docs/lab.png`` and ``docs/admin.png``: the transport lab and the admin page under load.

Starts its own ``tidings serve`` on a free port and uses headless Chromium (Debian's
``/usr/bin/chromium``, or ``CHROMIUM=/path``). The lab: the rate slider at 20/s, a picture
once 80 events have been published and every pane has received them. The admin page: the
lab publishing at 20/s in another tab, a few more streams and publishers on other channels,
a picture once ten snapshots have arrived.

    .venv/bin/python docs/make_screenshots.py            # both
    .venv/bin/python docs/make_screenshots.py admin      # only docs/admin.png
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


# Other channels for the admin page's tables: followers held open, and steady publishers.
TRAFFIC = """() => {
  const follow = { news: 3, "chat:lobby": 2, sports: 1 };
  // WebSockets: the browser holds at most six HTTP/1.1 connections per host
  for (const [channel, count] of Object.entries(follow))
    for (let i = 0; i < count; i++) {
      const socket = new WebSocket(`ws://${location.host}/ws`);
      socket.onopen = () => socket.send(JSON.stringify({ op: "subscribe", channel, ref: 1 }));
      window.keep = [...(window.keep || []), socket];
    }
  const publish = (channel) => fetch("/api/publish", {
    method: "POST", body: JSON.stringify({ channel, data: { at: Date.now() } }),
  });
  setInterval(() => publish("news"), 200);
  setInterval(() => publish("chat:lobby"), 500);
}"""


def shoot_admin(port: int, path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        lab = browser.new_page()
        lab.goto(f"http://127.0.0.1:{port}/lab")
        lab.wait_for_function("() => window.lab && window.lab.ready()", timeout=TIMEOUT_MS)
        lab.fill("#rate", "20")
        lab.locator("#rate").blur()
        lab.evaluate(TRAFFIC)
        page = browser.new_page(viewport={"width": 1280, "height": 720}, device_scale_factor=1)
        page.goto(f"http://127.0.0.1:{port}/admin")  # loopback, no keys: no key asked
        page.wait_for_function(
            """() => window.admin.snapshots >= 10 && window.admin.last.lag_ms.p99 !== null
                 && window.admin.last.channels.by_rate.length >= 3""",
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(path), full_page=True)
        browser.close()


PICTURES = {"lab": shoot_lab, "admin": shoot_admin}


def main() -> None:
    names = sys.argv[1:] or list(PICTURES)
    unknown = set(names) - set(PICTURES)
    if unknown:
        raise SystemExit(f"unknown picture {sorted(unknown)}; choose from {', '.join(PICTURES)}")
    for name in names:
        process, port = start_server()  # a fresh node each, so the numbers are this page's
        try:
            PICTURES[name](port, DOCS / f"{name}.png")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        print(f"wrote {DOCS / f'{name}.png'}")


if __name__ == "__main__":
    main()
