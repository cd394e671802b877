"""examples/notifications: a private inbox over SSE, allowed by the app's session cookie;
after time away, a reload shows exactly the notifications that were missed."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page

from tests.examples.conftest import ExampleProcess

WAIT_MS = 10_000


def sign_in(page: Page, url: str, name: str) -> None:
    page.goto(url)
    page.fill("#name", name)
    page.click("#sign-in button")
    wait_live(page)


def wait_live(page: Page) -> None:
    page.wait_for_function(
        "() => inbox.client?.state === 'connected' && inbox.client.transport === 'sse'",
        timeout=WAIT_MS,
    )


def notify(app: ExampleProcess, to: str, text: str) -> str:
    answer = httpx.post(f"{app.url}/notify", json={"to": to, "text": text}, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["id"])


def shown(page: Page) -> list[dict[str, object]]:
    items = page.evaluate("() => inbox.items.map(({ id, text, fresh }) => ({ id, text, fresh }))")
    return list(items)


def test_a_reload_shows_exactly_the_notifications_missed_while_away(
    example: Callable[..., ExampleProcess],
    open_page: Callable[[], Page],
    screenshot: Callable[..., None],
) -> None:
    app = example("notifications")
    alice = open_page()
    sign_in(alice, app.url, "alice")
    first = [notify(app, "alice", "Bob liked your post"), notify(app, "alice", "Build 812 passed")]
    alice.wait_for_function("() => inbox.items.length === 2", timeout=WAIT_MS)

    alice.goto("about:blank")  # away: the page saves its cursor as it goes
    missed = [
        notify(app, "alice", "Carol mentioned you in #ops"),
        notify(app, "bob", "not for alice"),
        notify(app, "alice", "Invoice 2026-118 is due Friday"),
        notify(app, "alice", "Dan shared a dashboard with you"),
    ]
    alice.goto(app.url)  # back: a fresh load of the page, from its saved cursor
    wait_live(alice)
    alice.wait_for_function("() => inbox.items.length === 5", timeout=WAIT_MS)
    later = notify(app, "alice", "Deploy finished")  # live again: it comes after the missed ones
    alice.wait_for_function("() => inbox.items.length === 6", timeout=WAIT_MS)
    assert shown(alice) == [
        {"id": first[0], "text": "Bob liked your post", "fresh": False},
        {"id": first[1], "text": "Build 812 passed", "fresh": False},
        {"id": missed[0], "text": "Carol mentioned you in #ops", "fresh": True},
        {"id": missed[2], "text": "Invoice 2026-118 is due Friday", "fresh": True},
        {"id": missed[3], "text": "Dan shared a dashboard with you", "fresh": True},
        {"id": later, "text": "Deploy finished", "fresh": True},
    ]
    assert alice.locator("#badge").inner_text() == "4 new"
    screenshot(alice, "notifications")

    alice.reload()  # nothing was published meanwhile: the same six, none twice
    wait_live(alice)
    also = notify(app, "alice", "One more")
    alice.wait_for_function("() => inbox.items.length === 7", timeout=WAIT_MS)
    assert [item["id"] for item in shown(alice)][-2:] == [later, also]
    assert alice.locator("#list li").count() == 7


def test_a_user_follows_only_their_own_inbox(
    example: Callable[..., ExampleProcess], open_page: Callable[[], Page]
) -> None:
    app = example("notifications")
    bob = open_page()
    sign_in(bob, app.url, "bob")
    refused = bob.evaluate(
        """() => new Promise((resolve) => {
             const client = new inbox.client.constructor("/rt", { transports: ["sse"] });
             client.subscribe("inbox:alice", { onError: (error) => resolve(error.code) });
           })"""
    )
    assert refused == "forbidden"
    stranger = httpx.get(f"{app.url}/rt/sse", params={"channel": "inbox:bob"}, timeout=10)
    assert stranger.status_code == 403  # no session cookie, no stream
