"""The admin page in a real Chromium: it asks for the key, says when it is wrong, and its
numbers move while the test publishes and subscribes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ServerProcess

KEY = "admin-e2e-key"
WAIT_MS = 15_000
CHANNEL = "admin-e2e"


class AdminPage:
    def __init__(self, page: Page, server: ServerProcess) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(f"{server.url}/admin")

    def shown(self, name: str) -> str:
        return str(self.page.text_content(f'[data-stat="{name}"]'))

    def wait(self, condition: str, arg: object = None) -> None:
        try:
            self.page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
        except PlaywrightTimeout:
            state = self.page.evaluate("JSON.stringify(window.admin)")
            raise AssertionError(f"timed out on {condition} ({arg!r}); page: {state}") from None

    def wait_shows(self, name: str, text: str) -> None:
        self.wait(
            '([name, text]) => document.querySelector(`[data-stat="${name}"]`)'
            ".textContent === text",
            [name, text],
        )

    def log_in(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#key-form button[type=submit]")


@pytest.fixture
def keyed_server(serve: Callable[..., ServerProcess]) -> ServerProcess:
    return serve(env={"TIDINGS_SERVER_API_KEYS": KEY})


@pytest.fixture
def subscriber(keyed_server: ServerProcess) -> Iterator[None]:
    """An SSE subscriber held open by the test (the page should count it)."""
    with (
        httpx.Client(trust_env=False, timeout=10) as http,
        http.stream("GET", f"{keyed_server.url}/sse?channel={CHANNEL}") as response,
    ):
        assert response.status_code == 200
        yield


def publish(server: ServerProcess, n: int) -> None:
    answer = httpx.post(
        f"{server.url}/api/publish",
        json={"channel": CHANNEL, "data": {"n": n}},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text


def test_admin_asks_for_the_key_and_shows_the_node_live(
    page: Page, keyed_server: ServerProcess, subscriber: None
) -> None:
    admin = AdminPage(page, keyed_server)
    admin.wait("() => window.admin.state === 'need-key'")
    assert page.is_visible("#key")

    admin.log_in("not-the-key")
    admin.wait("() => window.admin.state === 'wrong-key'")
    assert "Wrong key" in str(page.text_content("#key-message"))
    assert page.is_visible("#key-form")

    admin.log_in(KEY)
    admin.wait("() => window.admin.state === 'live' && window.admin.snapshots > 0")
    assert not page.is_visible("#key-form")
    admin.wait_shows("conn-sse", "1")
    admin.wait_shows("conn-admin", "1")
    admin.wait_shows("publishes-total", "0")

    for n in range(7):
        publish(keyed_server, n)
    admin.wait_shows("publishes-total", "7")
    admin.wait_shows("del-sse", "7")
    admin.wait(
        "(channel) => document.querySelector('#by-followers code')?.textContent === channel",
        CHANNEL,
    )
    assert admin.shown("lag-p50").endswith(" ms")
    assert admin.shown("lag-p99").endswith(" ms")
    # the wrong key was refused once, the missing key once: both show as refusals
    admin.wait(
        "() => [...document.querySelectorAll('#refusals tr')]"
        ".some((row) => row.textContent.includes('unauthorized') && row.textContent.endsWith('2'))"
    )
    assert admin.errors == []


def test_from_loopback_without_keys_no_key_is_asked(
    page: Page, tidings_server: ServerProcess
) -> None:
    admin = AdminPage(page, tidings_server)
    admin.wait("() => window.admin.state === 'live' && window.admin.snapshots > 0")
    assert not page.is_visible("#key-form")
    tidings_server.publish(CHANNEL, {"n": 1})
    admin.wait_shows("publishes-total", "1")
    assert admin.errors == []
