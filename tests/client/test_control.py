"""The Python client against the server's rewind and control (docs/protocol.md 1 and 7), on
every technique: ``subscribe(rewind=N)``, an iteration ended by ``POST /api/unsubscribe``
(never subscribed again), and a disconnect that revokes the token raised to the
application instead of a reconnect loop, while a plain disconnect resumes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.client.support import (
    FAST,
    QUICK_SERVER,
    TIMEOUT,
    collect,
    follows,
    publish_many,
    wait_until,
)
from tests.conftest import RunningServer
from tests.server.tokens import SECRET, mint
from tidings import ClientError, ServerRejected, Subscription, connect
from tidings.client import TRANSPORTS

MakeServer = Callable[..., RunningServer]
HELD = ("websocket", "sse", "long_poll")  # techniques with a connection the server can reach


def tokened(make_server: MakeServer) -> RunningServer:
    return make_server(auth__token_secret=SECRET, **QUICK_SERVER)


def token(sub: str) -> str:
    return mint(sub=sub, iat=int(time.time()) - 1)


async def call(server: RunningServer, path: str, body: dict[str, Any]) -> int:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        answer = await http.post(f"/api/{path}", json=body)
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["connections"]
    return count


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rewind_starts_with_the_last_events_then_goes_live(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    ids = await publish_many(server, "news", ["a", "b", "c"])
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news", rewind=2)
        async with collect(subscription) as seen:
            await seen.wait_events(2)
            live = await publish_many(server, "news", ["d"])
            events = await seen.wait_events(3)
    assert [(event.id, event.data) for event in events] == list(
        zip(ids[1:] + live, ["b", "c", "d"], strict=True)
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rewind_is_ignored_when_resuming_from_a_cursor(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    ids = await publish_many(server, "news", ["a", "b", "c"])
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news", since=ids[1], rewind=3)
        async with collect(subscription) as seen:
            events = await seen.wait_events(1)
            live = await publish_many(server, "news", ["d"])
            events = await seen.wait_events(2)
    assert [event.id for event in events] == [ids[2], *live]


async def test_a_bad_rewind_is_the_applications_mistake(make_server: MakeServer) -> None:
    server = make_server()
    async with connect(server.url, **FAST) as client:
        for bad in (-1, True, 1.5):
            with pytest.raises(ClientError):
                client.subscribe("news", rewind=bad)


async def iterate(subscription: Subscription) -> list[Any]:
    return [item async for item in subscription]


@pytest.mark.parametrize("transport", HELD)
async def test_a_server_unsubscribe_ends_the_iteration_for_good(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened(make_server)
    async with connect(server.url, transport=transport, token=token("erin"), **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        iterating = asyncio.create_task(iterate(subscription))
        await wait_until(lambda: follows(server, "news"), "the client to follow")
        assert await call(server, "unsubscribe", {"sub": "erin", "channel": "news"}) == 1
        assert await asyncio.wait_for(iterating, TIMEOUT) == []
        assert "unsubscribed by the server" in str(subscription.last_failure)
        assert subscription.connections == 1  # it did not subscribe again
        assert not follows(server, "news")


@pytest.mark.parametrize("transport", HELD)
async def test_a_revoking_disconnect_is_raised_not_retried(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened(make_server)
    async with connect(server.url, transport=transport, token=token("carol"), **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        iterating = asyncio.create_task(iterate(subscription))
        await wait_until(lambda: follows(server, "news"), "the client to follow")
        assert await call(server, "disconnect", {"sub": "carol", "reconnect": False}) == 1
        with pytest.raises(ServerRejected) as refused:
            await asyncio.wait_for(iterating, TIMEOUT)
        assert refused.value.status == 401
        assert subscription.connections == 1


@pytest.mark.parametrize("transport", HELD)
async def test_a_plain_disconnect_resumes_without_losing_an_event(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened(make_server)
    async with connect(server.url, transport=transport, token=token("dave"), **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            await wait_until(lambda: follows(server, "news"), "the client to follow")
            assert await call(server, "disconnect", {"sub": "dave"}) == 1
            ids = await publish_many(server, "news", [1, 2])
            events = await seen.wait_events(2)
    assert [event.id for event in events] == ids
