"""``POST /api/disconnect`` and ``/api/unsubscribe`` across ``tidings serve`` nodes on Redis
and on NATS: the call taken by one node reaches the user's WebSocket, SSE stream and held
long poll on another, and a revoked token is refused on every node, also by the node that
took the call once it has restarted (the broker keeps the revocation)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.cluster.conftest import StartNodes
from tests.cluster.support import Node, wait_until_async
from tests.server.tokens import SECRET, mint
from tidings.protocol.sse import SSEMessage, SSEParser

pytestmark = pytest.mark.timeout(120)

ENV = {"TIDINGS_AUTH_TOKEN_SECRET": SECRET}  # no API keys: loopback may call the API
WAIT = 10.0





def token(sub: str, **claims: Any) -> str:
    claims.setdefault("iat", int(time.time()) - 1)
    return mint(sub=sub, **claims)


@asynccontextmanager
async def websocket(node: Node, credential: str) -> AsyncIterator[ClientConnection]:
    url = f"ws://127.0.0.1:{node.port}/ws?token={credential}"
    async with connect(url, proxy=None, open_timeout=WAIT, ping_interval=None) as ws:
        yield ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), WAIT)
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def subscribe(ws: ClientConnection, channel: str) -> None:
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel, "ref": 1}).decode())
    answer = await receive(ws)
    assert answer["op"] == "subscribed", answer


async def close_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


class Stream:
    """An SSE stream read through httpx, parsed with the project's parser."""

    def __init__(self, response: httpx.Response) -> None:
        self.parser = SSEParser()
        self.raw = b""
        self.pending: list[SSEMessage] = []
        self._chunks = response.aiter_raw()

    async def opened(self) -> None:
        while b"\n\n" not in self.raw:
            await self._read()

    async def _read(self) -> bool:
        try:
            chunk = await asyncio.wait_for(anext(self._chunks), WAIT)
        except StopAsyncIteration:
            return False
        self.raw += chunk
        self.pending.extend(self.parser.feed(chunk))
        return True

    async def next(self) -> SSEMessage:
        while not self.pending:
            assert await self._read(), "the stream ended"
        return self.pending.pop(0)

    async def rest(self) -> list[tuple[str, Any]]:
        """Every message to the end of the stream, as (event, data)."""
        while await self._read():
            pass
        messages, self.pending = self.pending, []
        return [(m.event, orjson.loads(m.data)) for m in messages]


@asynccontextmanager
async def sse(http: httpx.AsyncClient, node: Node, target: str) -> AsyncIterator[Stream]:
    async with http.stream("GET", f"{node.url}{target}") as response:
        assert response.status_code == 200
        stream = Stream(response)
        await stream.opened()
        yield stream


async def held_long_poll(
    http: httpx.AsyncClient, node: Node, target: str
) -> asyncio.Task[httpx.Response]:
    """Send a long poll to ``node`` and return once the node holds it (its metrics say so)."""
    task = asyncio.create_task(http.get(f"{node.url}{target}"))

    async def held() -> bool:
        metrics = (await http.get(f"{node.url}/metrics")).text
        found = re.search(r'^tidings_connections\{transport="long_poll"\} (\S+)$', metrics, re.M)
        return task.done() or (found is not None and float(found[1]) >= 1)

    await wait_until_async(held, "the long poll to be held", timeout=WAIT)
    assert not task.done(), task.result().text
    return task


async def call(http: httpx.AsyncClient, node: Node, path: str, body: dict[str, Any]) -> int:
    answer = await http.post(f"{node.url}/api/{path}", json=body)
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["connections"]
    return count


async def poll_status(http: httpx.AsyncClient, node: Node, credential: str) -> int:
    answer = await http.get(f"{node.url}/poll", params={"channel": "news", "token": credential})
    return answer.status_code


@pytest.mark.parametrize("reconnect", [True, False])
async def test_disconnect_reaches_the_user_on_another_node(
    broker: str, start: StartNodes, http: httpx.AsyncClient, reconnect: bool
) -> None:
    a, b = await start(broker, 2, ENV)
    alice, bob = token("alice"), token("bob")
    async with (
        websocket(b, alice) as ws,
        websocket(b, bob) as other,
        sse(http, b, f"/sse?channel=news&token={alice}") as stream,
    ):
        await subscribe(ws, "news")
        await subscribe(other, "news")
        poll = await held_long_poll(http, b, f"/poll?channel=news&timeout=30&token={alice}")
        body = {"sub": "alice", "reconnect": reconnect}
        assert await call(http, a, "disconnect", body) == 0  # none on the node that took it
        assert await close_code(ws) == (4002 if reconnect else 4003)
        assert await stream.rest() == [("tidings.disconnect", {"reconnect": reconnect})]
        assert (await asyncio.wait_for(poll, WAIT)).status_code == 204
        await other.send(orjson.dumps({"op": "ping", "ref": 2}).decode())
        assert await receive(other) == {"op": "pong", "ref": 2}  # bob stays
    expected = 200 if reconnect else 401
    for node in (a, b):
        assert await poll_status(http, node, alice) == expected
        assert await poll_status(http, node, bob) == 200


async def test_a_revocation_outlives_the_node_that_took_it(
    broker: str, start: StartNodes, http: httpx.AsyncClient
) -> None:
    a, b = await start(broker, 2, ENV)
    old = token("carol")
    assert await poll_status(http, b, old) == 200
    assert await call(http, a, "disconnect", {"sub": "carol", "reconnect": False}) == 0

    async def refused_on_b() -> bool:
        return await poll_status(http, b, old) == 401

    await wait_until_async(refused_on_b, "the revocation to reach the other node", WAIT)
    a.stop()
    (restarted,) = await start(broker, 1, ENV)
    assert await poll_status(http, restarted, old) == 401
    assert await poll_status(http, restarted, mint(sub="carol")) == 401  # no iat: refused too
    fresh = token("carol", iat=int(time.time()) + 1)  # issued after the call
    assert await poll_status(http, restarted, fresh) == 200
    assert await poll_status(http, b, fresh) == 200


async def test_unsubscribe_reaches_the_user_on_another_node(
    broker: str, start: StartNodes, http: httpx.AsyncClient
) -> None:
    a, b = await start(broker, 2, ENV)
    erin = token("erin")
    async with (
        websocket(b, erin) as ws,
        sse(http, b, f"/sse?channel=news&token={erin}") as stream,
    ):
        await subscribe(ws, "news")
        await subscribe(ws, "chat")
        poll = await held_long_poll(http, b, f"/poll?channel=news&timeout=30&token={erin}")
        assert await call(http, a, "unsubscribe", {"sub": "erin", "channel": "news"}) == 0
        told = {"channel": "news", "reason": "server"}
        assert await receive(ws) == {"op": "unsubscribed", "ref": None, **told}
        assert await stream.rest() == [("tidings.unsubscribed", told)]
        answered = await asyncio.wait_for(poll, WAIT)
        assert (answered.status_code, answered.json()["unsubscribed"]) == (200, ["news"])
        published = await http.post(f"{a.url}/api/publish", json={"channel": "chat", "data": 1})
        event = await receive(ws)  # chat goes on, on the same connection
        assert (event["op"], event["id"]) == ("event", published.json()["id"])
