"""examples/chat: two people in the lobby over WebSocket, with presence, messages published by
the browsers, tokens minted by the app, and a reload that keeps the conversation."""

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
    page.wait_for_function(
        "() => chat.client.state === 'connected' && chat.client.transport === 'websocket'",
        timeout=WAIT_MS,
    )


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#say button")


def texts(page: Page) -> list[str]:
    return list(page.evaluate("() => chat.messages.map((m) => `${m.name}: ${m.text}`)"))


def wait_for_here(page: Page, names: list[str]) -> None:
    page.wait_for_function(
        "(names) => JSON.stringify(chat.here) === JSON.stringify(names)", arg=names,
        timeout=WAIT_MS,
    )


def test_two_people_chat_see_each_other_and_keep_the_conversation_across_a_reload(
    example: Callable[..., ExampleProcess],
    open_page: Callable[[], Page],
    screenshot: Callable[..., None],
) -> None:
    chat = example("chat")
    refused = httpx.get(f"{chat.url}/rt/poll", params={"channel": "chat:lobby"}, timeout=10)
    assert refused.status_code == 401  # the lobby needs the app's token

    ann, bob = open_page(), open_page()
    sign_in(ann, chat.url, "Ann")
    wait_for_here(ann, ["Ann"])
    sign_in(bob, chat.url, "Bob")
    wait_for_here(ann, ["Ann", "Bob"])
    wait_for_here(bob, ["Ann", "Bob"])

    say(bob, "Hi Ann, is the deploy done?")
    ann.wait_for_function("() => chat.messages.length === 1", timeout=WAIT_MS)
    say(ann, "Yes, ten minutes ago.")
    say(bob, "Thanks!")
    conversation = [
        "Bob: Hi Ann, is the deploy done?",
        "Ann: Yes, ten minutes ago.",
        "Bob: Thanks!",
    ]
    for page in (ann, bob):
        page.wait_for_function("() => chat.messages.length === 3", timeout=WAIT_MS)
        assert texts(page) == conversation
    assert ann.locator("#messages li").count() == 3
    screenshot(ann, "chat")

    ann.reload()  # the tab keeps its name, transcript and cursor: nothing lost, nothing twice
    ann.wait_for_function("() => chat.client.state === 'connected'", timeout=WAIT_MS)
    say(bob, "See you tomorrow.")
    ann.wait_for_function("() => chat.messages.length === 1", timeout=WAIT_MS)
    assert texts(ann) == ["Bob: See you tomorrow."]  # the one received since the reload
    shown = ann.locator("#messages li").all_inner_texts()
    assert shown == [*conversation, "Bob: See you tomorrow."]

    bob.context.close()  # Bob leaves: his connections close and the lobby says so
    wait_for_here(ann, ["Ann"])
