"""Presence on one node (docs/protocol.md sections 6 and 7): joins and leaves on the WebSocket,
the ``presence`` request and ``GET /api/presence``, with anonymous clients and with tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import RunningServer
from tests.server.support import async_http_client, sse_stream, wait_until, within
from tests.server.test_websocket import receive, request, send, websocket
from tests.server.tokens import SECRET, mint

pytestmark = pytest.mark.timeout(30)

ANONYMOUS = {"sub": None, "info": None}
ROOM = "chat:room"


@pytest.fixture
def chat(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(namespaces__chat__presence=True, api_keys=("k",))


async def subscribe(ws: ClientConnection, channel: str = ROOM, ref: int = 1) -> None:
    answer = await request(ws, {"op": "subscribe", "channel": channel, "ref": ref})
    assert (answer["op"], answer["channel"]) == ("subscribed", channel), answer


async def change(ws: ClientConnection, op: str, channel: str = ROOM) -> None:
    """The next message is ``op`` (join or leave) of an anonymous client in ``channel``."""
    assert await receive(ws) == {"op": op, "channel": channel, "client": ANONYMOUS}


async def presence(ws: ClientConnection, channel: str = ROOM, ref: int = 4) -> dict[str, Any]:
    return await request(ws, {"op": "presence", "channel": channel, "ref": ref})


async def api_presence(http: httpx.AsyncClient, channel: str, key: str = "k") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await http.get("/api/presence", params={"channel": channel}, headers=headers)


async def test_websocket_subscribers_see_each_other_join_and_leave(chat: RunningServer) -> None:
    async with websocket(chat) as a:
        await subscribe(a)
        await change(a, "join")  # its own join: it is a subscriber of the channel too
        async with websocket(chat) as b:
            await subscribe(b)
            await change(b, "join")
            await change(a, "join")
            answer = await presence(a)
            assert answer == {
                "op": "presence",
                "ref": 4,
                "channel": ROOM,
                "clients": [ANONYMOUS, ANONYMOUS],
            }
            unsubscribed = await request(b, {"op": "unsubscribe", "channel": ROOM, "ref": 2})
            assert unsubscribed["op"] == "unsubscribed"
            await change(a, "leave")
            await subscribe(b, ref=3)
            await change(a, "join")
        await change(a, "leave")  # b closed its connection
        assert (await presence(a, ref=5))["clients"] == [ANONYMOUS]


async def test_a_connection_that_drops_leaves_at_once(chat: RunningServer) -> None:
    async with websocket(chat) as a:
        await subscribe(a)
        await change(a, "join")
        async with websocket(chat) as b:
            await subscribe(b)
            await change(a, "join")
            b.transport.abort()  # no closing handshake
            await change(a, "leave")


async def test_sse_streams_are_present_and_polls_are_not(chat: RunningServer) -> None:
    async with websocket(chat) as a, async_http_client(chat) as http:
        await subscribe(a)
        await change(a, "join")
        polled = await http.get("/poll", params={"channel": ROOM})
        assert polled.status_code == 200
        assert (await presence(a))["clients"] == [ANONYMOUS]
        async with sse_stream(http, f"/sse?channel={ROOM}"):
            await change(a, "join")
            assert (await presence(a, ref=5))["clients"] == [ANONYMOUS, ANONYMOUS]
        await change(a, "leave")


async def test_joins_and_leaves_are_not_events_and_not_sent_over_sse(chat: RunningServer) -> None:
    async with async_http_client(chat) as http, sse_stream(http, f"/sse?channel={ROOM}") as sse:
        async with websocket(chat) as a:
            await subscribe(a)
            await change(a, "join")
        published = await http.post(
            "/api/publish",
            json={"channel": ROOM, "data": "after"},
            headers={"Authorization": "Bearer k"},
        )
        assert published.status_code == 200
        message = await sse.next()
        assert (message.data, message.last_event_id) == ('"after"', published.json()["id"])
        assert published.json()["id"].endswith(".1")  # the join took no offset


async def test_without_presence_there_are_no_joins_and_the_query_is_refused(
    chat: RunningServer,
) -> None:
    async with websocket(chat) as a:
        await subscribe(a, "news")
        answer = await presence(a, "news", ref=9)
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", 9, "presence_disabled")
        assert await request(a, {"op": "ping", "ref": 10}) == {"op": "pong", "ref": 10}
    app = chat.node
    assert app is not None
    assert chat.call(lambda: app.stats.refusals.get("presence_disabled")) == 1


async def test_a_presence_query_needs_no_subscription(chat: RunningServer) -> None:
    async with websocket(chat) as a, websocket(chat) as b:
        await subscribe(a)
        await change(a, "join")
        assert (await presence(b))["clients"] == [ANONYMOUS]
        assert (await presence(b, "chat:empty", ref=6))["clients"] == []


async def test_api_presence_answers_with_a_key(chat: RunningServer) -> None:
    async with websocket(chat) as a, async_http_client(chat) as http:
        await subscribe(a)
        await change(a, "join")
        answer = await api_presence(http, ROOM)
        assert answer.status_code == 200
        assert answer.json() == {"channel": ROOM, "clients": [ANONYMOUS]}

        nobody = await api_presence(http, "chat:nobody")
        assert (nobody.status_code, nobody.json()) == (
            200,
            {"channel": "chat:nobody", "clients": []},
        )

        for key, status, code in (("", 401, "unauthorized"), ("wrong", 401, "unauthorized")):
            refused = await api_presence(http, ROOM, key)
            assert (refused.status_code, refused.json()["error"]["code"]) == (status, code)

        off = await api_presence(http, "news")
        assert (off.status_code, off.json()["error"]["code"]) == (400, "invalid_channel")
        assert "presence is not enabled" in off.json()["error"]["message"]
        bad = await api_presence(http, "no spaces")
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_channel")
        posted = await http.post("/api/presence?channel=chat:room", json={})
        assert posted.status_code == 405


async def test_presence_entries_are_refreshed_on_the_timer(
    make_server: Callable[..., RunningServer],
) -> None:
    running = make_server(namespaces__chat__presence=True, server__presence_ttl_seconds=1)
    app = running.node
    assert app is not None
    async with websocket(running) as a:
        await subscribe(a)
        await change(a, "join")
        # Entries live half the TTL: still listed after several lifetimes means refreshed.
        start = running.loop.time()
        await wait_until(lambda: running.loop.time() - start > 2.0, "two TTLs", timeout=5)
        assert (await presence(a))["clients"] == [ANONYMOUS]
        await send(a, {"op": "ping", "ref": 7})
        assert await within(receive(a), "a pong") == {"op": "pong", "ref": 7}


async def test_presence_shows_each_token_sub_and_info_in_a_private_namespace(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        auth__token_secret=SECRET,
        namespaces__chat__presence=True,
        namespaces__chat__public=False,
        api_keys=("k",),
    )
    ann = {"sub": "ann", "info": {"name": "Ann", "color": "teal"}}
    bob = {"sub": "bob", "info": {"name": "Bob"}}
    stranger = mint(sub="eve", channels=["chat:other"])
    async with websocket(server, f"/ws?token={mint(channels=['chat:*'], **ann)}") as a:
        await subscribe(a)
        assert await receive(a) == {"op": "join", "channel": ROOM, "client": ann}
        async with (
            websocket(server, f"/ws?token={mint(channels=[ROOM], **bob)}") as b,
            websocket(server, f"/ws?token={stranger}") as e,
        ):
            await subscribe(b)
            assert await receive(a) == {"op": "join", "channel": ROOM, "client": bob}
            both = sorted([ann, bob], key=str)
            assert await receive(b) == {"op": "join", "channel": ROOM, "client": bob}  # its own
            assert sorted((await presence(b))["clients"], key=str) == both
            refused = await presence(e, ref=9)  # its token does not allow the room
            assert (refused["op"], refused["ref"], refused["code"]) == ("error", 9, "forbidden")
            async with async_http_client(server) as http:
                listed = (await api_presence(http, ROOM)).json()["clients"]
            assert sorted(listed, key=str) == both
        assert await receive(a) == {"op": "leave", "channel": ROOM, "client": bob}
        async with async_http_client(server) as http:
            assert (await api_presence(http, ROOM)).json()["clients"] == [ann]
