"""The mount under hypercorn in a real Chromium: over TLS its SSE streams share one HTTP/2
connection, so one page holds ten of them; over HTTP/1.1 the same page gets six.

Chromium opens at most six connections per host over HTTP/1.1, and an SSE stream holds its
connection for as long as it lasts: a seventh stream waits until one of the six ends. Over
HTTP/2 every stream of the page is a stream of one connection, its WebSockets too (RFC
8441). The page (``tests.asgi.hypercorn_host``) opens plain ``EventSource`` streams on its
own origin; the host app tells which HTTP version and client port each stream reached the
mount with, and the node's ``/metrics`` gauges show it let go of every stream that ended.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.asgi.hypercorn_process import (
    Certificate,
    HypercornProcess,
    require_hypercorn,
    self_signed,
)
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium

STREAMS = 10
PER_HOST = 6  # Chromium's limit of HTTP/1.1 connections to one host
WAIT_MS = 10_000
PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
START_POLL = """() => {
  window.poll = new AbortController();
  fetch("/rt/poll?channel=stream-1&timeout=20", { signal: window.poll.signal }).catch(() => {});
}"""  # a function that returns nothing: evaluate() would wait for a returned promise
OPEN_SOCKET = """() => {
  const ws = new WebSocket(`wss://${location.host}/rt/ws`);
  window.socket = { ws, seen: [], closed: null };
  ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", channel: "socket", ref: 1 }));
  ws.onmessage = (message) => window.socket.seen.push(JSON.parse(message.data));
  ws.onclose = (closed) => { window.socket.closed = closed.code; };
}"""


@pytest.fixture(scope="module")
def tls_browser() -> Iterator[Browser]:
    """Chromium that accepts the test's self-signed certificate (a test-only flag)."""
    require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, "--ignore-certificate-errors"],
        )
        yield launched
        launched.close()


@pytest.fixture
def tab(tls_browser: Browser) -> Iterator[Page]:
    context = tls_browser.new_context()
    context.grant_permissions(["local-network-access"])
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed(tmp_path_factory.mktemp("tls"))


def hypercorn(certificate: Certificate | None) -> Iterator[HypercornProcess]:
    require_hypercorn()
    server = HypercornProcess(certificate)
    yield server
    server.stop()


@pytest.fixture
def over_tls(certificate: Certificate) -> Iterator[HypercornProcess]:
    yield from hypercorn(certificate)


@pytest.fixture
def over_http1() -> Iterator[HypercornProcess]:
    yield from hypercorn(None)


def publish_to_every_stream(server: HypercornProcess) -> None:
    """One event on each channel of the page, through the mount's publish API."""
    with server.client() as http:
        for index in range(STREAMS):
            answer = http.post("/api/publish", json={"channel": f"stream-{index}", "data": index})
            assert answer.status_code == 200, answer.text


def streams_seen(server: HypercornProcess, kind: str = "http") -> list[dict[str, object]]:
    """What the host app saw of each SSE request (``http``) or WebSocket (``websocket``)."""
    with server.client() as http:
        answer = http.get(f"{server.origin}/streams")
    answer.raise_for_status()
    return [stream for stream in answer.json() if stream["type"] == kind]


def test_ten_streams_of_one_page_share_one_http2_connection(
    over_tls: HypercornProcess, tab: Page
) -> None:
    tab.goto(f"{over_tls.origin}/?streams={STREAMS}")
    tab.wait_for_function(f"window.opened === {STREAMS}", timeout=WAIT_MS)
    assert tab.evaluate(PROTOCOL) == "h2"

    publish_to_every_stream(over_tls)
    tab.wait_for_function(f"Object.keys(window.received).length === {STREAMS}", timeout=WAIT_MS)
    assert tab.evaluate("window.received") == {str(index): index for index in range(STREAMS)}

    seen = streams_seen(over_tls)
    assert [stream["http_version"] for stream in seen] == ["2"] * STREAMS
    assert len({stream["client_port"] for stream in seen}) == 1  # one connection
    over_tls.wait_for_connections("sse", STREAMS)

    # One stream ends (RST_STREAM), the connection stays: the node lets go of that stream.
    tab.evaluate("window.sources[0].close()")
    over_tls.wait_for_connections("sse", STREAMS - 1)
    # A long poll aborted on the same connection is let go as well.
    tab.evaluate(START_POLL)
    over_tls.wait_for_connections("long_poll", 1)
    tab.evaluate("window.poll.abort()")
    over_tls.wait_for_connections("long_poll", 0)
    assert tab.evaluate("window.sources.filter((s) => s.readyState === 1).length") == STREAMS - 1


def test_a_websocket_of_an_http2_page_shares_its_connection(
    over_tls: HypercornProcess, tab: Page
) -> None:
    """Chromium opens it with RFC 8441's CONNECT, which carries no ``Upgrade`` header."""
    tab.goto(f"{over_tls.origin}/?streams=1")
    tab.wait_for_function("window.opened === 1", timeout=WAIT_MS)
    [stream] = streams_seen(over_tls)
    tab.evaluate(OPEN_SOCKET)
    tab.wait_for_function("window.socket.seen.length === 1", timeout=WAIT_MS)
    with over_tls.client() as http:
        cursor = http.post("/api/publish", json={"channel": "socket", "data": "hi"}).json()["id"]
    tab.wait_for_function("window.socket.seen.length === 2", timeout=WAIT_MS)
    subscribed, event = tab.evaluate("window.socket.seen")
    assert (subscribed["op"], event["op"], event["id"], event["data"]) == (
        "subscribed",
        "event",
        cursor,
        "hi",
    )
    [socket] = streams_seen(over_tls, "websocket")
    assert (socket["http_version"], socket["client_port"]) == ("2", stream["client_port"])
    # The server ends it (binary frames are refused): the close reaches the page, and the
    # node lets go of the socket.
    tab.evaluate("window.socket.ws.send(new Uint8Array([1]))")
    tab.wait_for_function("window.socket.closed !== null", timeout=WAIT_MS)
    assert tab.evaluate("window.socket.closed") == 1003
    over_tls.wait_for_connections("websocket", 0)


def test_over_http1_the_seventh_stream_waits_for_a_free_connection(
    over_http1: HypercornProcess, tab: Page
) -> None:
    tab.goto(f"{over_http1.origin}/?streams={STREAMS}")
    tab.wait_for_function(f"window.opened === {PER_HOST}", timeout=WAIT_MS)
    assert tab.evaluate(PROTOCOL) == "http/1.1"

    publish_to_every_stream(over_http1)
    tab.wait_for_function(f"Object.keys(window.received).length === {PER_HOST}", timeout=WAIT_MS)
    # By the time six streams got their events, the other four have still not opened.
    states = tab.evaluate("window.sources.map((source) => source.readyState)")
    open_streams = [index for index, state in enumerate(states) if state == 1]
    assert len(open_streams) == PER_HOST and states.count(0) == STREAMS - PER_HOST
    received = tab.evaluate("window.received")
    assert received == {str(index): index for index in open_streams}
    seen = streams_seen(over_http1)
    assert [stream["http_version"] for stream in seen] == ["1.1"] * PER_HOST
    assert len({stream["client_port"] for stream in seen}) == PER_HOST  # a connection each

    # It was waiting, not refused: one stream ends, and the seventh opens on its connection.
    tab.evaluate(f"window.sources[{open_streams[0]}].close()")
    tab.wait_for_function(f"window.opened === {PER_HOST + 1}", timeout=WAIT_MS)
    assert len(streams_seen(over_http1)) == PER_HOST + 1
