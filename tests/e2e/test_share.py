"""``share: true`` in a real Chromium: the tabs of one browser share one server connection.

Every tab is a page of one browser context on the server's own origin (Playwright answers
``/share.html``, the page imports ``/tidings.js`` from the server). Events are published
straight to the server. Two ways to share are tested: the SharedWorker, and the leader
election over BroadcastChannel and Web Locks that Android Chrome gets, forced here by removing
``SharedWorker`` from the pages before the module loads (a change to the test pages, not a
switch of the client).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ServerProcess

CHANNEL = "share"
FAST = {"minDelay": 100, "maxDelay": 1000, "drainWindow": 300}
WAIT_MS = 15_000
PUBLISH_EVERY = 0.01  # seconds between two events while a tab closes or reloads
NO_SHARED_WORKER = "delete window.SharedWorker;"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tidings share</title>
<script type="module">
import { Tidings } from "/tidings.js";

const seen = (window.seen = { events: [], resets: [], connected: [], errors: [] });
const offset = (id) => Number(id.slice(id.indexOf(".") + 1));

window.follow = (channel) =>
  window.client.subscribe(channel, {
    onEvent: ({ channel, id, data }) => seen.events.push({ channel, id, offset: offset(id), data }),
    onReset: ({ id, reason }) => seen.resets.push({ id, reason }),
    onError: (error) => seen.errors.push(error.code),
  });
window.startClient = (channel, options) => {
  const client = (window.client = new Tidings("", options));
  client.on("connected", (name) => seen.connected.push(name));
  client.on("error", (error) => seen.errors.push(error.code));
  window.subscription = window.follow(channel);
};
window.ready = true;
</script>
"""


class Tab:
    """One page of the shared browser context, with a client subscribed to CHANNEL."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self) -> Tab:
        self.page.goto(self.url)
        self.wait("() => window.ready === true")
        return self

    def start(self, **options: Any) -> Tab:
        """Start the client; return once its subscription holds a cursor."""
        self.page.evaluate("([c, o]) => startClient(c, o)", [CHANNEL, {**FAST, **options}])
        self.wait("() => window.subscription.cursor != null")
        return self

    @property
    def seen(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.seen"))

    def offsets(self) -> list[int]:
        return [event["offset"] for event in self.seen["events"]]

    def wait(self, condition: str, arg: Any = None) -> None:
        try:
            self.page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
        except PlaywrightTimeout:
            seen = self.page.evaluate("window.seen ?? null")
            raise AssertionError(
                f"timed out on {condition} ({arg!r}); page saw {seen}; errors {self.errors}"
            ) from None

    def wait_offset(self, offset: int) -> None:
        self.wait("n => window.seen.events.some((e) => e.offset >= n)", offset)


@pytest.fixture
def context(browser: Browser, tidings_server: ServerProcess) -> Iterator[BrowserContext]:
    """One browser profile, as the tabs of one browser share it, serving ``/share.html``."""
    made = browser.new_context()
    made.grant_permissions(["local-network-access"])
    made.route(
        f"{tidings_server.url}/share.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
    )
    yield made
    made.close()


@pytest.fixture
def open_tab(context: BrowserContext, tidings_server: ServerProcess) -> Callable[[], Tab]:
    return lambda: Tab(context.new_page(), f"{tidings_server.url}/share.html").open()


def metric(server: ServerProcess, name: str, transport: str) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf'^{name}{{transport="{transport}"}} (\S+)$', text, re.M)
    return int(float(found[1])) if found else 0


def websockets_open(server: ServerProcess) -> int:
    return metric(server, "tidings_connections", "websocket")


def websockets_opened(server: ServerProcess) -> int:
    return metric(server, "tidings_connections_opened_total", "websocket")


def wait_gauge(tab: Tab, series: str, expected: int) -> None:
    """Wait until the server's gauge ``series`` (name and labels) reads ``expected``."""
    tab.wait(
        """async ([series, n]) => {
          const text = await (await fetch("/metrics")).text();
          const line = text.split("\\n").find((line) => line.startsWith(series + " "));
          return Number(line?.slice(series.length + 1) ?? 0) === n;
        }""",
        [series, expected],
    )


def wait_websockets_open(tab: Tab, expected: int) -> None:
    wait_gauge(tab, 'tidings_connections{transport="websocket"}', expected)


def publish(server: ServerProcess, first: int, last: int) -> list[str]:
    return [server.publish(CHANNEL, {"n": n}) for n in range(first, last + 1)]


@contextmanager
def publishing(server: ServerProcess, first: int, last: int) -> Iterator[list[str]]:
    """Publish ``first..last`` from a thread, paced, while the block runs; wait for the end."""
    published: list[str] = []
    failures: list[BaseException] = []

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for n in range(first, last + 1):
                try:
                    answer = http.post("/api/publish", json={"channel": CHANNEL, "data": {"n": n}})
                    answer.raise_for_status()
                except httpx.HTTPError as error:
                    failures.append(error)
                    return
                published.append(str(answer.json()["id"]))
                threading.Event().wait(PUBLISH_EVERY)

    thread = threading.Thread(target=run, name="publisher", daemon=True)
    thread.start()
    try:
        yield published
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive(), "the publisher did not stop"
    assert failures == [], failures


def assert_exactly(tab: Tab, last: int) -> None:
    """The tab got events 1..last, each once, in order, and nothing else went wrong."""
    tab.wait_offset(last)
    seen = tab.seen
    assert [event["offset"] for event in seen["events"]] == list(range(1, last + 1))
    assert [event["data"]["n"] for event in seen["events"]] == list(range(1, last + 1))
    assert seen["resets"] == [] and seen["errors"] == [] and tab.errors == []


@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_three_tabs_hold_one_websocket(
    context: BrowserContext,
    open_tab: Callable[[], Tab],
    tidings_server: ServerProcess,
    mode: str,
) -> None:
    if mode == "locks":
        context.add_init_script(NO_SHARED_WORKER)
    tabs = [open_tab().start(share=True) for _ in range(3)]
    assert tabs[0].page.evaluate("typeof SharedWorker") == (
        "function" if mode == "worker" else "undefined"
    )
    publish(tidings_server, 1, 5)
    for tab in tabs:
        assert_exactly(tab, 5)
        assert tab.seen["connected"] == ["websocket"]
        assert tab.page.evaluate("window.client.transport") == "websocket"
    assert websockets_open(tidings_server) == 1
    assert websockets_opened(tidings_server) == 1


@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_closing_the_leading_tab_hands_over_with_nothing_lost_or_repeated(
    context: BrowserContext,
    open_tab: Callable[[], Tab],
    tidings_server: ServerProcess,
    mode: str,
) -> None:
    if mode == "locks":
        context.add_init_script(NO_SHARED_WORKER)
    leader = open_tab().start(share=True)  # the first tab holds the lock (locks mode)
    others = [open_tab().start(share=True) for _ in range(2)]
    publish(tidings_server, 1, 10)
    for tab in [leader, *others]:
        tab.wait_offset(10)
    assert websockets_opened(tidings_server) == 1
    with publishing(tidings_server, 11, 70):
        others[0].wait_offset(20)
        leader.page.close()
    for tab in others:
        assert_exactly(tab, 70)
    # one more event on the new connection: nothing repeated arrives before it
    publish(tidings_server, 71, 71)
    for tab in others:
        assert_exactly(tab, 71)
    wait_websockets_open(others[0], 1)
    # the leader's socket went with it in locks mode; the worker's stays
    assert websockets_opened(tidings_server) == (2 if mode == "locks" else 1)


@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_a_reload_with_session_resume_misses_nothing(
    context: BrowserContext,
    open_tab: Callable[[], Tab],
    tidings_server: ServerProcess,
    mode: str,
) -> None:
    if mode == "locks":
        context.add_init_script(NO_SHARED_WORKER)
    options = {"share": True, "resume": "session"}
    reloaded = open_tab().start(**options)  # the leader in locks mode
    other = open_tab().start(**options)
    publish(tidings_server, 1, 5)
    reloaded.wait_offset(5)
    before = reloaded.seen["events"]
    reloaded.page.reload()
    reloaded.wait("() => window.ready === true")
    # published while the page is gone: only resuming from the saved cursor brings these
    publish(tidings_server, 6, 10)
    other.wait_offset(10)
    reloaded.start(**options)
    reloaded.wait_offset(10)
    publish(tidings_server, 11, 11)
    reloaded.wait_offset(11)
    after = reloaded.seen["events"]
    assert [event["offset"] for event in before + after] == list(range(1, 12))
    assert reloaded.seen["resets"] == [] and reloaded.errors == []
    assert_exactly(other, 11)


def test_closing_a_tab_closes_only_its_subscriptions(
    open_tab: Callable[[], Tab], tidings_server: ServerProcess
) -> None:
    first, second = open_tab().start(share=True), open_tab().start(share=True)
    first.page.evaluate("window.follow('other'), window.subscription.close()")
    publish(tidings_server, 1, 3)
    assert_exactly(second, 3)
    second.page.evaluate("window.client.close()")
    publish(tidings_server, 4, 4)
    # the first tab's other channel still flows over the one shared connection
    tidings_server.publish("other", {"n": 1})
    first.wait("() => window.seen.events.length === 1")
    assert first.seen["events"][0]["channel"] == "other"
    assert first.page.evaluate("window.client.state") == "connected"
    assert [event["offset"] for event in second.seen["events"]] == [1, 2, 3]
    assert second.page.evaluate("window.client.state") == "closed"
    assert websockets_open(tidings_server) == 1


def test_a_page_without_share_resumes_a_reload_from_the_session(
    open_tab: Callable[[], Tab], tidings_server: ServerProcess
) -> None:
    tab = open_tab().start(resume="session")
    publish(tidings_server, 1, 3)
    tab.wait_offset(3)
    tab.page.reload()
    tab.wait("() => window.ready === true")
    publish(tidings_server, 4, 6)
    tab.start(resume="session")
    tab.wait_offset(6)
    assert [event["offset"] for event in tab.seen["events"]] == [4, 5, 6]
    tab.page.evaluate("window.client.close()")
    tab.page.reload()
    tab.wait("() => window.ready === true")
    tab.start()  # without resume: from now
    publish(tidings_server, 7, 7)
    tab.wait_offset(7)
    assert [event["offset"] for event in tab.seen["events"]] == [7]


def test_a_worker_script_that_does_not_load_falls_back_to_a_leading_tab(
    open_tab: Callable[[], Tab], tidings_server: ServerProcess
) -> None:
    # as when a bundler has moved the module away from the URL the worker is started with; the
    # second tab may be attached to the failed worker without an error: then openTimeout counts
    options = {"share": True, "worker": "/no-such-worker.js", "openTimeout": 3000}
    tabs = [open_tab().start(**options) for _ in range(2)]
    publish(tidings_server, 1, 3)
    for tab in tabs:
        assert_exactly(tab, 3)
        assert tab.seen["connected"] == ["websocket"]
    assert websockets_open(tidings_server) == 1
    tabs[0].page.close()
    publish(tidings_server, 4, 5)
    assert_exactly(tabs[1], 5)
    assert websockets_opened(tidings_server) == 2


@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_a_tab_that_goes_away_leaves_its_channels(
    context: BrowserContext,
    open_tab: Callable[[], Tab],
    tidings_server: ServerProcess,
    mode: str,
) -> None:
    if mode == "locks":
        context.add_init_script(NO_SHARED_WORKER)
    staying = open_tab().start(share=True)  # the leader in locks mode
    leaving = open_tab().start(share=True)
    leaving.page.evaluate("window.follow('solo')")
    wait_gauge(staying, "tidings_subscriptions", 2)  # share and solo, on the one WebSocket
    leaving.page.close()  # no close(): the tab's lock going with it is what tells
    wait_gauge(staying, "tidings_subscriptions", 1)
    publish(tidings_server, 1, 2)
    assert_exactly(staying, 2)
    assert websockets_open(tidings_server) == 1
