"""tidings.js in a real Chromium, against a real ``tidings serve``, through the fault proxy.

The test page lives on the proxy's origin (Playwright answers ``/e2e.html`` itself), imports
``/tidings.js`` from the server, and records in ``window.seen`` every event, reset and
``connected`` transport. Events are published straight to the server, not through the proxy,
so a cut never loses a publish: whatever the page misses is the client's or server's fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ServerProcess
from tests.e2e.proxy import FaultProxy

CHANNEL = "e2e"
TRANSPORTS = ["websocket", "sse", "long_poll", "poll"]
# Fast reconnects, so that cuts and restarts cost little time.
FAST = {"minDelay": 100, "maxDelay": 1000, "drainWindow": 300, "interval": 100}
WAIT_MS = 15_000

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tidings e2e</title>
<script type="module">
import { Tidings } from "/tidings.js";

const seen = (window.seen = {
  events: [], resets: [], connected: [], disconnected: [], opens: 0, errors: 0,
});
const offset = (id) => Number(id.slice(id.indexOf(".") + 1));

window.startClient = (channel, options) => {
  const client = (window.client = new Tidings("", options));
  client.on("connected", (name) => seen.connected.push(name));
  client.on("disconnected", (reason) => seen.disconnected.push(reason));
  window.subscription = client.subscribe(channel, {
    onEvent: ({ channel, id, data }) =>
      seen.events.push({ channel, id, offset: offset(id), data }),
    onReset: ({ channel, id, reason }) =>
      seen.resets.push({ channel, id, reason, after: seen.events.length }),
  });
};

// The browser's own EventSource, no library: it reconnects by itself with Last-Event-ID.
window.startEventSource = (channel) => {
  const source = (window.source = new EventSource("/sse?channel=" + channel));
  source.onopen = () => seen.opens++;
  source.onerror = () => seen.errors++;
  source.onmessage = ({ lastEventId: id, data }) =>
    seen.events.push({ channel, id, offset: offset(id), data: JSON.parse(data) });
};
window.ready = true;
</script>
"""


class E2EPage:
    """The e2e page in Chromium, on the proxy's origin, loaded by the first ``start``, so that
    a test sets the proxy's faults before the browser opens any connection."""

    def __init__(self, page: Page, proxy: FaultProxy) -> None:
        self.page = page
        self.url = f"http://127.0.0.1:{proxy.port}/e2e.html"
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.route(
            "**/e2e.html",
            lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
        )

    def _open(self) -> None:
        self.page.goto(self.url)
        self.wait("() => window.ready === true")

    def start(self, **options: Any) -> None:
        """A Tidings client subscribed to CHANNEL; returns once the subscription holds a cursor
        (WebSocket ``subscribed``, the stream's first ``id:``, the first poll's answer), so that
        nothing published from now on can be missed."""
        self._open()
        self.page.evaluate("([c, o]) => startClient(c, o)", [CHANNEL, {**FAST, **options}])
        self.wait("() => window.subscription.cursor != null")

    def start_event_source(self) -> None:
        """The browser's own EventSource on CHANNEL; returns once the stream is open."""
        self._open()
        self.page.evaluate("(c) => startEventSource(c)", CHANNEL)
        self.wait("() => window.seen.opens === 1")

    @property
    def seen(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.seen"))

    def offsets(self) -> list[int]:
        return [event["offset"] for event in self.seen["events"]]

    def wait(self, condition: str, arg: Any = None, timeout: int = WAIT_MS) -> None:
        """Wait for a JavaScript predicate; on timeout, fail showing what the page saw."""
        try:
            self.page.wait_for_function(condition, arg=arg, timeout=timeout)
        except PlaywrightTimeout:
            raise AssertionError(
                f"timed out on {condition} ({arg!r}); page saw {self.seen}; errors {self.errors}"
            ) from None

    def wait_events(self, count: int) -> None:
        self.wait("n => window.seen.events.length >= n", count)


@pytest.fixture
def e2e(page: Page, proxy: FaultProxy) -> E2EPage:
    return E2EPage(page, proxy)


def publish_numbered(server: ServerProcess, first: int, last: int) -> list[str]:
    return [server.publish(CHANNEL, {"n": n}) for n in range(first, last + 1)]


def offset(cursor: str) -> int:
    return int(cursor.rsplit(".", 1)[1])


def epoch(cursor: str) -> str:
    return cursor.rsplit(".", 1)[0]


# 1. every technique, forced, receives published events in order


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_technique_receives_events_in_order(
    e2e: E2EPage, tidings_server: ServerProcess, transport: str
) -> None:
    e2e.start(transports=[transport])
    cursors = publish_numbered(tidings_server, 1, 5)
    e2e.wait_events(5)
    seen = e2e.seen
    assert [event["id"] for event in seen["events"]] == cursors
    assert [event["data"] for event in seen["events"]] == [{"n": n} for n in range(1, 6)]
    assert seen["connected"] == [transport]
    assert e2e.page.evaluate("window.client.transport") == transport
    assert seen["resets"] == [] and e2e.errors == []


# 2. the ladder: what `auto` lands on behind each kind of proxy


def start_auto_and_receive(e2e: E2EPage, server: ServerProcess, **options: Any) -> str:
    """Start with the whole ladder; return the technique that delivered one event."""
    e2e.start(**options)
    cursor = server.publish(CHANNEL, "hello")
    e2e.wait_events(1)
    seen = e2e.seen
    assert [event["id"] for event in seen["events"]] == [cursor]
    assert len(seen["connected"]) == 1, seen["connected"]
    assert e2e.page.evaluate("window.client.transport") == seen["connected"][0]
    return str(seen["connected"][0])


def test_auto_picks_websocket(e2e: E2EPage, tidings_server: ServerProcess) -> None:
    assert start_auto_and_receive(e2e, tidings_server) == "websocket"


def test_auto_lands_on_sse_when_the_proxy_refuses_websocket(
    e2e: E2EPage, tidings_server: ServerProcess, proxy: FaultProxy
) -> None:
    proxy.refuse_websocket = True
    assert start_auto_and_receive(e2e, tidings_server) == "sse"
    assert proxy.refused_upgrades >= 1


def test_auto_lands_on_long_polling_when_the_proxy_also_buffers_streams(
    e2e: E2EPage, tidings_server: ServerProcess, proxy: FaultProxy
) -> None:
    proxy.refuse_websocket = True
    proxy.buffer_streams = True
    proxy.one_request_per_connection = True  # or a kept-alive connection carries the stream
    assert start_auto_and_receive(e2e, tidings_server, firstByteTimeout=500) == "long_poll"
    assert proxy.refused_upgrades >= 1
    assert proxy.buffered_streams >= 1


# 3. cuts lose nothing and duplicate nothing


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cutting_every_connection_loses_and_duplicates_nothing(
    e2e: E2EPage, tidings_server: ServerProcess, proxy: FaultProxy, transport: str
) -> None:
    e2e.start(transports=[transport])
    published: list[str] = []
    for _ in range(4):
        connections = len(proxy.request_heads)
        published += publish_numbered(tidings_server, len(published) + 1, len(published) + 5)
        assert proxy.cut_all() >= 1
        # published while the client is cut off: only its resume can bring these
        published += publish_numbered(tidings_server, len(published) + 1, len(published) + 5)
        e2e.wait_events(len(published))
        # every connection is gone, so the events after the cut came over a new one
        assert len(proxy.request_heads) > connections, "nothing reconnected after the cut"
    # a last event as a barrier: a duplicate of anything before it would have arrived by now
    published += publish_numbered(tidings_server, len(published) + 1, len(published) + 1)
    e2e.wait("n => window.seen.events.some((e) => e.offset === n)", len(published))
    seen = e2e.seen
    assert [offset(cursor) for cursor in published] == list(range(1, 42))
    assert e2e.offsets() == list(range(1, 42))
    assert [event["data"]["n"] for event in seen["events"]] == list(range(1, 42))
    assert seen["resets"] == [] and e2e.errors == []
    assert set(seen["connected"]) == {transport}
    if transport in ("websocket", "sse"):
        # the client saw each cut; Chromium itself may retry a cut poll, unseen by the client
        assert len(seen["disconnected"]) >= 4, seen["disconnected"]


# 4. a restarted memory broker: the page is told (reset), then goes on


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_restarted_server_surfaces_a_reset_then_delivers(
    e2e: E2EPage,
    serve: Callable[..., ServerProcess],
    tidings_server: ServerProcess,
    proxy: FaultProxy,
    transport: str,
) -> None:
    e2e.start(transports=[transport])
    before = publish_numbered(tidings_server, 1, 3)
    e2e.wait_events(3)
    tidings_server.stop()
    restarted = serve()
    proxy.upstream_port = restarted.port
    e2e.wait("() => window.seen.resets.length >= 1")
    [reset] = e2e.seen["resets"]
    assert reset["channel"] == CHANNEL and reset["reason"] == "epoch"
    assert reset["after"] == 3
    assert epoch(reset["id"]) != epoch(before[0])
    after = publish_numbered(restarted, 4, 6)
    e2e.wait_events(6)
    seen = e2e.seen
    assert [event["id"] for event in seen["events"]] == before + after
    assert [event["data"]["n"] for event in seen["events"]] == list(range(1, 7))
    assert epoch(after[0]) == epoch(reset["id"])
    assert set(seen["connected"]) == {transport} and len(seen["connected"]) >= 2
    assert e2e.errors == []


# 5. no library at all: the browser's EventSource resumes with its own Last-Event-ID


def test_a_plain_event_source_resumes_after_a_cut_with_last_event_id(
    e2e: E2EPage, tidings_server: ServerProcess, proxy: FaultProxy
) -> None:
    proxy.one_request_per_connection = True  # so that the proxy sees every request's head
    e2e.start_event_source()
    first = publish_numbered(tidings_server, 1, 5)
    e2e.wait_events(5)
    assert proxy.cut_all() >= 1
    rest = publish_numbered(tidings_server, 6, 10)
    e2e.wait("() => window.seen.opens >= 2")
    e2e.wait_events(10)
    barrier = publish_numbered(tidings_server, 11, 11)
    e2e.wait("() => window.seen.events.some((e) => e.offset === 11)")
    seen = e2e.seen
    assert [event["id"] for event in seen["events"]] == first + rest + barrier
    assert [event["data"]["n"] for event in seen["events"]] == list(range(1, 12))
    assert seen["errors"] >= 1
    streams = [head.lower() for head in proxy.request_heads if head.startswith(b"GET /sse?")]
    assert len(streams) == 2
    assert b"last-event-id" not in streams[0]
    assert f"\r\nlast-event-id: {first[-1]}\r\n".lower().encode() in streams[1]
