"""The transport lab at ``/lab``: four live panes, one per technique, in a real Chromium."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ServerProcess

TRANSPORTS = ["websocket", "sse", "long_poll", "poll"]
CHANNEL = "lab-test"
WAIT_MS = 15_000
SHOWN = """() => Object.fromEntries([...document.querySelectorAll(".pane")].map((pane) => [
  pane.dataset.transport,
  Object.fromEntries(
    [...pane.querySelectorAll("[data-stat]")].map((stat) => [stat.dataset.stat, stat.textContent]),
  ),
]))"""


class Lab:
    """The lab page, loaded straight from the server (its own origin, as a user opens it)."""

    def __init__(self, page: Page, server: ServerProcess) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(f"{server.url}/lab?channel={CHANNEL}")
        self.wait("() => window.lab !== undefined && window.lab.ready()")

    def shown(self) -> dict[str, dict[str, str]]:
        """What each pane displays, by transport and statistic."""
        return dict(self.page.evaluate(SHOWN))

    def counts(self) -> dict[str, dict[str, Any]]:
        return dict(self.page.evaluate("window.lab.counts()"))

    def tally(self) -> dict[str, int]:
        return dict(self.page.evaluate("window.lab.tally"))

    def wait(self, condition: str, arg: Any = None) -> None:
        try:
            self.page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
        except PlaywrightTimeout:
            raise AssertionError(
                f"timed out on {condition} ({arg!r}); the lab shows {self.shown()}, "
                f"published {self.tally()}; errors {self.errors}"
            ) from None

    def wait_every_pane_shows(self, events: int) -> None:
        """Every pane displays at least ``events`` events (the display refreshes itself)."""
        self.wait(
            """n => [...document.querySelectorAll('[data-stat="events"]')]
                .every((shown) => Number(shown.textContent) >= n)""",
            events,
        )


@pytest.fixture
def lab(page: Page, tidings_server: ServerProcess) -> Lab:
    return Lab(page, tidings_server)


def publish(server: ServerProcess, data: Any) -> None:
    server.publish(CHANNEL, data)


def test_every_pane_counts_exactly_the_events_published(
    lab: Lab, tidings_server: ServerProcess
) -> None:
    lab.page.fill("#text", "from the box")
    for _ in range(3):
        lab.page.click("button[type=submit]")
    for n in range(12):
        publish(tidings_server, {"sent": int(time.time() * 1000), "n": n})
    lab.wait("() => window.lab.tally.published === 3")
    lab.wait_every_pane_shows(15)
    # a last event as a barrier: a duplicate of anything before it would show by now
    publish(tidings_server, {"sent": int(time.time() * 1000), "n": "last"})
    lab.wait_every_pane_shows(16)
    shown, counts = lab.shown(), lab.counts()
    assert sorted(shown) == sorted(TRANSPORTS)
    for transport in TRANSPORTS:
        assert shown[transport]["events"] == "16", (transport, shown[transport])
        assert counts[transport]["events"] == 16 and counts[transport]["latencies"] == 16
        assert shown[transport]["p50"].endswith(" ms") and shown[transport]["p99"].endswith(" ms")
        assert '"n":"last"' in shown[transport]["last"]
        assert counts[transport]["bytes"] > 16 * len('{"sent":0}')
        assert counts[transport]["resets"] == 0
    assert counts["websocket"]["requests"] == 1  # one handshake, every event on it
    assert counts["sse"]["requests"] == 1  # one stream
    assert counts["long_poll"]["requests"] >= 2
    assert counts["poll"]["requests"] >= 2
    assert lab.tally()["failed"] == 0 and lab.errors == []


def test_the_rate_slider_publishes_and_every_pane_keeps_up(lab: Lab) -> None:
    lab.page.fill("#rate", "25")
    assert lab.page.text_content("#rate-value") == "25 / s"
    lab.wait("() => window.lab.tally.published >= 20")
    lab.page.fill("#rate", "0")
    lab.wait("() => window.lab.tally.inFlight === 0")
    tally = lab.tally()
    assert tally["failed"] == 0
    lab.wait_every_pane_shows(tally["published"])
    counts = lab.counts()
    assert {t: counts[t]["events"] for t in TRANSPORTS} == dict.fromkeys(
        TRANSPORTS, tally["published"]
    )
    assert lab.tally()["published"] == tally["published"]  # the timer stopped at 0 / s
    assert lab.errors == []


def test_the_lab_is_served_by_default_and_not_with_no_lab(
    tidings_server: ServerProcess, serve: Callable[..., ServerProcess]
) -> None:
    served = httpx.get(f"{tidings_server.url}/lab", timeout=10)
    assert served.status_code == 200
    assert served.headers["content-type"] == "text/html; charset=utf-8"
    assert b'import { Tidings } from "/tidings.js"' in served.content
    refused = httpx.get(f"{serve('--no-lab').url}/lab", timeout=10)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
