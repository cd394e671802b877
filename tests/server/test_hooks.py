"""The application's hooks decide who may connect, subscribe and publish (docs/asgi.md):
against a real FastAPI application with cookie sessions, on both edges."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import RunningServer
from tests.hooks_app import RunningHookApp, start_hook_app
from tests.server.support import TIMEOUT, apublish, async_http_client, sse_stream, within


@pytest.fixture
def hook_app() -> Iterator[RunningHookApp]:
    running = start_hook_app()
    yield running
    running.stop()


def hooked_server(
    make_server: Callable[..., RunningServer], app: RunningHookApp, **overrides: Any
) -> RunningServer:
    settings: dict[str, Any] = {
        "namespaces__room__public": False,
        "namespaces__room__hooks": True,
        "namespaces__room__presence": True,
        "namespaces__room__client_publish": True,
        "hooks__subscribe_url": app.url("/hooks/subscribe"),
        "hooks__publish_url": app.url("/hooks/publish"),
        "hooks__connect_url": app.url("/hooks/connect"),
        "hooks__timeout_seconds": 2.0,  # generous: a loaded machine answers slowly
    }
    settings.update(overrides)
    return make_server(**settings)


def as_user(server: RunningServer, cookie: str) -> Any:
    """A WebSocket to ``server`` sending the app's session cookie."""
    return connect(
        server.ws_url, proxy=None, open_timeout=TIMEOUT, additional_headers={"Cookie": cookie}
    )


async def until(ws: Any, op: str, what: str) -> dict[str, Any]:
    """The next message whose ``op`` is ``op`` (joins and leaves may come first)."""
    while True:
        message: dict[str, Any] = orjson.loads(await within(ws.recv(), what))
        if message["op"] == op:
            return message


async def status_of(server: RunningServer, target: str, cookie: str = "") -> tuple[int, Any]:
    async with async_http_client(server) as client:
        response = await client.get(target, headers={"Cookie": cookie} if cookie else {})
        body = response.json() if response.content else None
        return response.status_code, (body, response.headers.get("Retry-After"))


async def test_a_session_the_app_allows_follows_over_sse_and_polls(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(make_server, hook_app)
    alice = hook_app.hooks.login("alice")
    async with async_http_client(server) as client:
        headers = {"Cookie": alice}
        async with sse_stream(client, "/sse?channel=room:1", headers) as stream:
            await apublish(client, "room:1", {"n": 1})
            assert orjson.loads((await stream.next()).data) == {"n": 1}
        polled = await client.get("/poll?channel=room:1&since=" + stream.start, headers=headers)
        assert polled.status_code == 200 and len(polled.json()["events"]) == 1
    call = hook_app.hooks.calls[0]
    assert call["action"] == "subscribe" and call["channels"] == ["room:1"]
    assert call["transport"] == "sse" and call["client"] == "127.0.0.1"
    assert set(call["headers"]) == {"cookie"}  # only the forwarded headers
    # the decision is kept until its expires_at: the poll did not ask again
    assert [c["transport"] for c in hook_app.hooks.calls] == ["sse"]


async def test_a_session_the_app_denies_gets_403_and_a_public_channel_asks_nothing(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(make_server, hook_app)
    bob = hook_app.hooks.login("bob")
    for target in ("/sse?channel=room:alice", "/poll?channel=room:alice"):
        status, (body, _) = await status_of(server, target, bob)
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _ = await status_of(server, "/poll?channel=room:alice")  # no session at all
    assert status == 403
    calls = len(hook_app.hooks.calls)
    assert (await status_of(server, "/poll?channel=news"))[0] == 200
    assert len(hook_app.hooks.calls) == calls


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/broken/slow", "did not answer within"),
        ("/broken/redirect", "answered 302"),
        ("/broken/not-json", "not JSON"),
        ("/broken/wrong-types", "sub that is not a string"),
        ("/broken/error", "answered 500"),
    ],
)
async def test_a_hook_that_fails_refuses_with_503_and_says_why_in_the_log(
    make_server: Callable[..., RunningServer],
    hook_app: RunningHookApp,
    caplog: pytest.LogCaptureFixture,
    path: str,
    logged: str,
) -> None:
    server = hooked_server(make_server, hook_app, hooks__subscribe_url=hook_app.url(path))
    alice = hook_app.hooks.login("alice")
    with caplog.at_level(logging.ERROR, logger="tidings.hooks"):
        status, (body, retry) = await status_of(server, "/sse?channel=room:1", alice)
    assert (status, body["error"]["code"]) == (503, "unavailable") and retry is not None
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text


async def test_a_hook_that_is_down_refuses_with_503(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    down = "http://127.0.0.1:9/hooks/subscribe"  # the discard port: nothing listens
    server = hooked_server(make_server, hook_app, hooks__subscribe_url=down)
    status, (body, retry) = await status_of(server, "/poll?channel=room:1", "sid=x")
    assert (status, body["error"]["code"]) == (503, "unavailable") and retry is not None


async def test_a_websocket_takes_its_identity_from_the_connect_hook_and_a_denied_channel_does_not_stop_the_others(  # noqa: E501
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(make_server, hook_app)
    bob = hook_app.hooks.login("bob")
    async with as_user(server, bob) as ws:
        await ws.send('{"op": "subscribe", "channel": "room:bob", "ref": 1}')
        await until(ws, "subscribed", "subscribed")
        await ws.send('{"op": "subscribe", "channel": "room:alice", "ref": 2}')
        refused = await until(ws, "error", "the refusal")
        assert (refused["ref"], refused["code"]) == (2, "forbidden")
        await ws.send('{"op": "presence", "channel": "room:bob", "ref": 3}')
        answer = await until(ws, "presence", "presence")
        assert answer["clients"] == [{"sub": "bob", "info": {"name": "Bob"}}]
        async with async_http_client(server) as client:
            await apublish(client, "room:bob", {"still": "here"})
        event = await until(ws, "event", "an event")
        assert event["data"] == {"still": "here"}
    assert [c["action"] for c in hook_app.hooks.calls][:1] == ["connect"]


async def test_a_stranger_is_refused_at_the_websocket_handshake(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(make_server, hook_app)
    with pytest.raises(Exception, match="403"):
        async with connect(server.ws_url, proxy=None, open_timeout=TIMEOUT):
            pass


async def test_publishing_over_the_websocket_asks_the_publish_hook(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(make_server, hook_app)
    bob = hook_app.hooks.login("bob")
    async with as_user(server, bob) as ws:
        await ws.send('{"op": "publish", "channel": "room:bob", "data": 1, "ref": 1}')
        assert (await until(ws, "published", "published"))["ref"] == 1
        await ws.send('{"op": "publish", "channel": "room:alice", "data": 1, "ref": 2}')
        refused = await until(ws, "error", "the refusal")
        assert (refused["ref"], refused["code"]) == (2, "forbidden")
    assert "publish" in [c["action"] for c in hook_app.hooks.calls]


async def test_a_crowd_reconnecting_at_once_is_bounded_by_max_concurrent(
    make_server: Callable[..., RunningServer], hook_app: RunningHookApp
) -> None:
    server = hooked_server(
        make_server, hook_app, hooks__max_concurrent=3, hooks__timeout_seconds=10
    )
    hook_app.hooks.hold_seconds = 0.05
    cookies = [hook_app.hooks.login("alice") for _ in range(40)]  # forty distinct sessions
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answers = await asyncio.gather(
            *(
                client.get("/poll?channel=room:1", headers={"Cookie": cookie})
                for cookie in cookies
            )
        )
    assert [a.status_code for a in answers] == [200] * 40
    assert hook_app.hooks.most_in_flight <= 3
    assert len(hook_app.hooks.calls) == 40
