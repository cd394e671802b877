"""The mount under hypercorn over plain HTTP/1.1: publish, SSE, long poll and WebSocket.

tests/server proves the protocol on the mount under uvicorn; these show that it holds under
the other ASGI server users pick, where what differs is the server's side of ASGI: how it
reports a client that left (``http.disconnect``), what it does with a ``send`` after that,
and how it answers a refused WebSocket handshake (``websocket.http.response``). Each leaving
client is checked on the node's own gauge, ``tidings_connections``, read from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.asgi.hypercorn_process import HypercornProcess, open_connections, require_hypercorn
from tests.server.support import (
    TIMEOUT,
    apublish,
    async_http_client,
    background,
    sse_stream,
    within,
)

SECRET = "s" * 32  # tokens on, so that a bad one is refused before the upgrade


@pytest.fixture(scope="module")
def hypercorn() -> Iterator[HypercornProcess]:
    require_hypercorn()
    server = HypercornProcess(env={"TIDINGS_AUTH_TOKEN_SECRET": SECRET})
    yield server
    server.stop()


@pytest.fixture
async def client(hypercorn: HypercornProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with async_http_client(hypercorn) as http:
        yield http


async def wait_for_connections(client: httpx.AsyncClient, transport: str, count: int) -> None:
    """Poll the gauge until it shows ``count``, with a deadline."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while open_connections((await client.get("/metrics")).text, transport) != count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{transport} connections never became {count}")
        await asyncio.sleep(0.02)


async def test_sse_gets_what_is_published_and_a_leaving_client_is_released(
    client: httpx.AsyncClient,
) -> None:
    async with sse_stream(client, "/sse?channel=smoke-sse") as stream:
        await wait_for_connections(client, "sse", 1)
        cursor = await apublish(client, "smoke-sse", {"n": 1})
        message = await stream.next()
        assert (message.event, message.last_event_id) == ("message", cursor)
        assert json.loads(message.data) == {"n": 1}
    await wait_for_connections(client, "sse", 0)


async def test_a_long_poll_is_held_then_answered_and_released_when_its_client_leaves(
    hypercorn: HypercornProcess, client: httpx.AsyncClient
) -> None:
    cursor = await apublish(client, "smoke-poll", "first")
    target = f"/poll?channel=smoke-poll&since={cursor}&timeout=20"
    async with background(client.get(target)) as poll:
        await wait_for_connections(client, "long_poll", 1)  # held, nothing new yet
        second = await apublish(client, "smoke-poll", "second")
        answer = await within(poll, "the held poll's answer")
    assert answer.status_code == 200
    assert [event["data"] for event in answer.json()["events"]] == ["second"]
    assert answer.json()["cursor"] == second

    target = f"/poll?channel=smoke-poll&since={second}&timeout=20"
    async with async_http_client(hypercorn) as leaving, background(leaving.get(target)):
        await wait_for_connections(client, "long_poll", 1)
    # the poll's task was cancelled, its connection closed: the node lets go of the poll
    await wait_for_connections(client, "long_poll", 0)


async def test_a_websocket_subscribes_and_receives(
    hypercorn: HypercornProcess, client: httpx.AsyncClient
) -> None:
    async with connect(hypercorn.ws_url, proxy=None, open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channel": "smoke-ws", "ref": 1}))
        subscribed = json.loads(await within(ws.recv(), "subscribed"))
        assert (subscribed["op"], subscribed["ref"]) == ("subscribed", 1)
        cursor = await apublish(client, "smoke-ws", {"n": 2})
        event = json.loads(await within(ws.recv(), "the event"))
        assert (event["op"], event["id"], event["data"]) == ("event", cursor, {"n": 2})
    await wait_for_connections(client, "websocket", 0)


async def test_a_refused_handshake_is_answered_with_its_http_status(
    hypercorn: HypercornProcess,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{hypercorn.ws_url}?token=nonsense", proxy=None, open_timeout=TIMEOUT):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "unauthorized"
