"""tidings.js in a real Chromium with short-lived connection tokens from a token function.

A real ``tidings serve`` checks JWTs (HS256); channels in ``secret`` need a token. The page's
``token`` option is a function that asks the test for a fresh token (``page.expose_function``),
each living about two seconds, so the server ends the connection on expiry (WebSocket close
``4001``, the end of the SSE stream, a long poll answered at ``exp``, then ``401``) several
times while a publisher keeps publishing: the page must see every event once, in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ServerProcess
from tests.server.tokens import SECRET, mint

CHANNEL = "secret:feed"
LIFETIME = 2  # seconds a token lives (at most: exp is whole seconds)
EXPIRIES = 2
WAIT_MS = 20_000
MAX_PUBLISHED = 500  # the publisher's bounds, whatever happens
MAX_PUBLISHING_SECONDS = 30.0
PUBLISH_EVERY = 0.03
TOKEN_ENV = {
    "TIDINGS_AUTH_TOKEN_SECRET": SECRET,
    "TIDINGS_NAMESPACES_SECRET_PUBLIC": "false",
    "TIDINGS_NAMESPACES_VAULT_PUBLIC": "false",
}
FAST = {"minDelay": 100, "maxDelay": 1000, "interval": 100}

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tidings tokens e2e</title>
<script type="module">
import { Tidings } from "/tidings.js";

const seen = (window.seen = { events: [], connected: [], errors: [], tokens: 0 });

window.startClient = (channel, options) => {
  // The token function the application passes: a fresh token from its own backend.
  const token = async () => {
    const fresh = await window.mintToken();
    seen.tokens++;
    return fresh;
  };
  const client = (window.client = new Tidings("", { ...options, token }));
  client.on("connected", (name) => seen.connected.push(name));
  client.on("error", (error) => seen.errors.push(error.code + ": " + error.message));
  window.subscription = client.subscribe(channel, {
    onEvent: ({ id, data }) => seen.events.push({ id, data }),
    onReset: (reset) => seen.errors.push("reset " + JSON.stringify(reset)),
    onError: (error) => seen.errors.push(error.code + ": " + error.message),
  });
};
window.ready = true;
</script>
"""


class Issuer:
    """The test's token endpoint: mints a token for the page and records when it was asked."""

    def __init__(self) -> None:
        self.asked_at: list[float] = []
        self.expiries: list[int] = []

    def __call__(self) -> str:
        now = time.time()
        exp = int(now + LIFETIME)
        self.asked_at.append(now)
        self.expiries.append(exp)
        return mint(lifetime=None, exp=exp, sub="page", channels=["secret:*"])

    def renewed_after_expiry(self) -> bool:
        slack = 0.1  # the server's timer wheel against the wall clock
        pairs = zip(self.asked_at[1:], self.expiries, strict=False)
        return all(asked >= exp - slack for asked, exp in pairs)


class TokenPage:
    def __init__(self, page: Page, server: ServerProcess, issuer: Issuer) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.expose_function("mintToken", issuer)
        page.route(
            f"{server.url}/tokens.html",
            lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
        )
        page.goto(f"{server.url}/tokens.html")
        self.wait("() => window.ready === true")

    def start(self, **options: Any) -> None:
        self.page.evaluate("([c, o]) => startClient(c, o)", [CHANNEL, {**FAST, **options}])
        self.wait("() => window.subscription.cursor != null")

    @property
    def seen(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.seen"))

    def wait(self, condition: str, arg: Any = None) -> None:
        try:
            self.page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
        except PlaywrightTimeout:
            seen = self.page.evaluate("window.seen ?? null")
            raise AssertionError(
                f"timed out on {condition} ({arg!r}); page saw {seen}; errors {self.errors}"
            ) from None


@contextmanager
def publishing(server: ServerProcess) -> Iterator[list[str]]:
    """Publish to CHANNEL from a thread until the block ends (bounded in count and time)."""
    published: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        deadline = time.monotonic() + MAX_PUBLISHING_SECONDS
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http:
            for n in range(MAX_PUBLISHED):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    answer = http.post("/api/publish", json={"channel": CHANNEL, "data": n})
                    answer.raise_for_status()
                except httpx.HTTPError as error:
                    failures.append(error)
                    return
                published.append(str(answer.json()["id"]))
                stop.wait(PUBLISH_EVERY)

    thread = threading.Thread(target=run, name="publisher", daemon=True)
    thread.start()
    try:
        yield published
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive(), "the publisher did not stop"
    assert failures == [], failures


@pytest.fixture
def token_server(serve: Callable[..., ServerProcess]) -> ServerProcess:
    return serve(env=TOKEN_ENV)


@pytest.mark.parametrize("transport", ["websocket", "sse", "long_poll", "poll"])
def test_a_token_function_keeps_the_page_receiving_across_expiries(
    page: Page, token_server: ServerProcess, transport: str
) -> None:
    issuer = Issuer()
    tokens = TokenPage(page, token_server, issuer)
    tokens.start(transports=[transport])
    with publishing(token_server) as published:
        tokens.wait("n => window.seen.tokens > n", EXPIRIES)
        # Something published after the last renewal must arrive over the renewed connection.
        tokens.wait("n => window.seen.events.length > n", len(published) + 1)
    tokens.wait("n => window.seen.events.length >= n", len(published))
    # A last event as a barrier: a repeat of anything before it would have arrived by now.
    published.append(token_server.publish(CHANNEL, "last"))
    tokens.wait("id => window.seen.events.some((e) => e.id === id)", published[-1])
    seen = tokens.seen
    assert [event["id"] for event in seen["events"]] == published
    assert seen["errors"] == [] and tokens.errors == []
    assert set(seen["connected"]) == {transport}
    assert len(seen["connected"]) > EXPIRIES  # it reconnected after each expiry
    assert len(issuer.asked_at) == seen["tokens"] > EXPIRIES
    assert issuer.renewed_after_expiry(), (issuer.asked_at, issuer.expiries)
    assert len(published) < MAX_PUBLISHED


def test_a_token_without_the_channel_is_an_error_for_the_page(
    page: Page, token_server: ServerProcess
) -> None:
    issuer = Issuer()
    tokens = TokenPage(page, token_server, issuer)
    tokens.page.evaluate(
        "startClient('vault:feed', {transports: ['sse'], minDelay: 100, maxDelay: 1000})"
    )
    tokens.wait("() => window.seen.errors.length > 0")
    assert tokens.page.evaluate("window.seen.errors") == [
        "forbidden: 403 the token's channels claim does not allow 'vault:feed'"
    ]
    assert len(issuer.asked_at) == 1
