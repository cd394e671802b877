"""Browser fixtures: Debian's Chromium driven by Playwright, a real ``tidings serve`` process
and the fault proxy between them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.proxy import FaultProxy
from tests.serve_process import ServeProcess

CHROMIUM = Path("/usr/bin/chromium")
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
# Short server-side delays keep reconnects fast: SSE `retry:` and the drain window on stop.
FAST_ENV = {"TIDINGS_SERVER_SSE_RETRY_MS": "200", "TIDINGS_SERVER_DRAIN_SECONDS": "0.2"}


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests")
    pytest.skip(f"CHROMIUM IS MISSING: browser tests did not run (no {CHROMIUM})")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module."""
    require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context: no sessionStorage (remembered transport) from other tests."""
    context = browser.new_context()
    # A page that Playwright answers itself (route.fulfill) has no address, so Chromium's Local
    # Network Access checks treat it as public and block its WebSocket to 127.0.0.1; a page the
    # server sends is loopback itself and needs no such grant.
    context.grant_permissions(["local-network-access"])
    opened = context.new_page()
    yield opened
    context.close()


class ServerProcess(ServeProcess):
    """``tidings serve --port 0`` in a subprocess with quick reconnect settings."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        super().__init__(*flags, env={**FAST_ENV, **(env or {})})
        self.wait_listening()

    def publish(self, channel: str, data: Any) -> str:
        """Publish straight to the server (not through the proxy); return the event's cursor."""
        answer = httpx.post(
            f"{self.url}/api/publish", json={"channel": channel, "data": data}, timeout=10
        )
        answer.raise_for_status()
        return str(answer.json()["id"])


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerProcess]]:
    """``serve("--no-lab")`` starts a server process; every one is stopped at the end."""
    started: list[ServerProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(*flags, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tidings_server(serve: Callable[..., ServerProcess]) -> ServerProcess:
    """A server process with the defaults (and the fast reconnect delays)."""
    return serve()


@pytest.fixture
def proxy(tidings_server: ServerProcess) -> Iterator[FaultProxy]:
    """The fault proxy in front of ``tidings_server``: the browser's only way to the server."""
    running = FaultProxy(tidings_server.port).start()
    yield running
    running.stop()
