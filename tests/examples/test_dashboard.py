"""examples/dashboard: the numbers arrive every second over SSE, and behind the example's
proxy (WebSocket refused, SSE buffered) over long polling, with no tick skipped."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page

from tests.examples.conftest import ExampleProcess

WAIT_MS = 15_000  # includes the 4 s tidings.js gives a stream to show its first byte
LINE = re.compile(r"at http://127\.0\.0\.1:(\d+)/ \(the app itself at http://127\.0\.0\.1:(\d+)/")


class Dashboard(ExampleProcess):
    listening = LINE  # the proxy's port; the line names the app's too

    @property
    def app_url(self) -> str:
        match = LINE.search(self.logs())
        assert match is not None
        return f"http://127.0.0.1:{match[2]}"


def watch(page: Page, url: str, transport: str, ticks: int) -> list[int]:
    page.goto(url)
    page.wait_for_function(
        "([transport, ticks]) => dashboard.client.transport === transport"
        " && dashboard.client.state === 'connected' && dashboard.ticks.length >= ticks",
        arg=[transport, ticks],
        timeout=WAIT_MS,
    )
    received: list[int] = page.evaluate("() => dashboard.ticks")
    assert received == list(range(received[0], received[0] + len(received)))  # none skipped
    tick = page.locator("#tick").inner_text()
    page.wait_for_function("(shown) => tick.textContent !== shown", arg=tick, timeout=WAIT_MS)
    return received


def test_the_numbers_arrive_over_sse_and_over_long_polling_behind_the_proxy(
    example: Callable[..., ExampleProcess],
    open_page: Callable[[], Page],
    screenshot: Callable[..., None],
) -> None:
    dashboard = example("dashboard", kind=Dashboard)
    assert isinstance(dashboard, Dashboard)
    watch(open_page(), dashboard.app_url, "sse", 2)

    behind = open_page()
    watch(behind, dashboard.url, "long_poll", 3)
    screenshot(behind, "dashboard", when="dashboard.ticks.length >= 30")
    refused = behind.evaluate(
        """() => new Promise((resolve) => {
             const socket = new WebSocket(`ws://${location.host}/rt/ws`);
             socket.onopen = () => resolve("open");
             socket.onerror = () => resolve("refused");
           })"""
    )
    assert refused == "refused"  # the proxy lets no WebSocket through
