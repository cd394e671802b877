"""Presence across two ``tidings serve`` nodes on Redis and on NATS: a join made on one node
reaches WebSocket subscribers on the other, and the clients of a node killed with SIGKILL
leave everyone's presence, with a ``leave``, within ``server.presence_ttl_seconds``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cluster.conftest import StartNodes
from tests.cluster.support import Node

pytestmark = pytest.mark.timeout(90)

TTL_SECONDS = 3
ROOM = "chat:room"
ANONYMOUS = {"sub": None, "info": None}
PRESENCE_ENV = {
    "TIDINGS_NAMESPACES_CHAT_PRESENCE": "true",
    "TIDINGS_SERVER_PRESENCE_TTL_SECONDS": str(TTL_SECONDS),
}





@asynccontextmanager
async def websocket(node: Node) -> AsyncIterator[ClientConnection]:
    url = f"ws://127.0.0.1:{node.port}/ws"
    async with connect(url, proxy=None, open_timeout=10, ping_interval=None) as ws:
        yield ws


async def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    try:
        message = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        raise AssertionError(f"no WebSocket message within {timeout} s") from None
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps(message).decode())
    return await receive(ws)


async def subscribe_and_join(ws: ClientConnection) -> None:
    answer = await request(ws, {"op": "subscribe", "channel": ROOM, "ref": 1})
    assert answer["op"] == "subscribed", answer
    assert await receive(ws) == {"op": "join", "channel": ROOM, "client": ANONYMOUS}


async def test_joins_cross_nodes_and_a_killed_nodes_clients_leave_within_the_ttl(
    broker: str, start: StartNodes
) -> None:
    a, b = await start(broker, 2, PRESENCE_ENV)
    async with websocket(a) as on_a:
        await subscribe_and_join(on_a)
        async with websocket(b) as on_b:
            await subscribe_and_join(on_b)
            assert await receive(on_a) == {"op": "join", "channel": ROOM, "client": ANONYMOUS}
            listed = await request(on_a, {"op": "presence", "channel": ROOM, "ref": 2})
            assert listed["clients"] == [ANONYMOUS, ANONYMOUS]
            async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
                answer = await http.get(f"{b.url}/api/presence", params={"channel": ROOM})
            assert answer.json() == {"channel": ROOM, "clients": [ANONYMOUS, ANONYMOUS]}

            b.kill()
            killed_at = time.monotonic()
            left = await receive(on_a, timeout=TTL_SECONDS + 5)
            took = time.monotonic() - killed_at
        assert left == {"op": "leave", "channel": ROOM, "client": ANONYMOUS}
        assert took <= TTL_SECONDS, f"the leave took {took:.2f} s, more than the TTL"
        listed = await request(on_a, {"op": "presence", "channel": ROOM, "ref": 3})
        assert listed["clients"] == [ANONYMOUS]
