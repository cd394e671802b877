"""examples/jobs: a worker process publishes 100 steps with tidings.publish; the page's bar
reaches 100 % through a reload and a network cut, every step received once."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from playwright.sync_api import Page

from tests.e2e.proxy import FaultProxy
from tests.examples.conftest import ExampleProcess

WAIT_MS = 15_000
JOB_MS = 60_000  # a whole job: 100 publishes, each a new HTTP request from the worker


def wait_published_after(app: ExampleProcess, channel: str, cursor: str, count: int) -> None:
    """Wait (with long polls) until ``count`` events follow ``cursor`` in ``channel``."""
    deadline = time.monotonic() + JOB_MS / 1000
    seen = 0
    while seen < count:
        assert time.monotonic() < deadline, f"the worker published {seen} of {count} steps"
        answer = httpx.get(
            f"{app.url}/rt/poll",
            params={"channel": channel, "since": cursor, "timeout": 5},
            timeout=10,
        )
        if answer.status_code == 200:
            body = answer.json()
            seen += len(body["events"])
            cursor = body["cursor"]


def test_the_bar_reaches_100_through_a_reload_and_a_network_cut(
    example: Callable[..., ExampleProcess],
    open_page: Callable[[], Page],
    screenshot: Callable[..., None],
) -> None:
    app = example("jobs")
    proxy = FaultProxy(app.port).start()  # the browser's only way to the app, to cut
    try:
        page = open_page()
        page.goto(f"http://127.0.0.1:{proxy.port}/")
        page.click("#start")
        page.wait_for_function("() => job.state?.percent >= 15", timeout=JOB_MS)

        page.reload()  # the page comes back to its job from the cursor it saved
        page.wait_for_function(
            "() => job.client?.transport === 'sse' && job.state.percent >= 35", timeout=JOB_MS
        )
        screenshot(page, "jobs")

        page.context.set_offline(True)  # no new connection, and the open ones cut
        proxy.cut_all()
        page.wait_for_function("() => job.drops >= 1", timeout=WAIT_MS)
        away = page.evaluate("() => job.state")
        wait_published_after(app, away["channel"], away["cursor"], 5)  # steps it must catch up
        page.context.set_offline(False)

        page.wait_for_function("() => job.state.percent === 100", timeout=JOB_MS)
        done = page.evaluate("() => job.state")
        assert (done["step"], done["received"], done["gaps"], done["resets"]) == (100, 100, 0, 0)
        assert page.locator("#percent").inner_text() == "100%"
        assert page.locator("#detail").inner_text() == "Done: 100 steps, none missed."
    finally:
        proxy.stop()
