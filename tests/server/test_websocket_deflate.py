"""permessage-deflate on ``/ws`` (RFC 7692, ``server.ws_deflate``).

The standalone edge negotiates it with ``server_no_context_takeover`` and writes each
event's compressed frame, built once, to every subscriber that negotiated it. Under the
mount the ASGI server frames the messages and compresses them if it is configured to: the
events must arrive the same either way, and the mount never writes our compressed frames.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    RawConnection,
    apublish,
    async_http_client,
    client_json,
    get,
    within,
)
from tests.server.test_websocket import expect_closed, receive, request, send, subscribe

# A realistic event: about 1 KB of JSON, as bench/fanout.py publishes.
ORDER = {
    "order": "ord_8f3a2c91d4",
    "status": "shipped",
    "items": [
        {"sku": f"SKU-{i}", "name": "USB-C cable 2 m", "qty": i, "price": "12.95"} for i in range(8)
    ],
    "address": {"line1": "12 Analytical Street", "city": "London", "country": "GB"},
}
RSV1 = 0x40
TEXT = 0x1
EMPTY_BLOCK = b"\x00\x00\xff\xff"


@asynccontextmanager
async def websocket(
    server: RunningServer, compression: str | None = "deflate"
) -> AsyncIterator[ClientConnection]:
    async with connect(
        server.ws_url,
        proxy=None,
        open_timeout=TIMEOUT,
        ping_interval=None,
        compression=compression,
    ) as ws:
        yield ws


def extensions(ws: ClientConnection) -> str:
    assert ws.response is not None
    return ws.response.headers.get("Sec-WebSocket-Extensions", "")


async def test_a_client_that_offers_deflate_gets_it_and_its_events(
    server: RunningServer, edge: str
) -> None:
    async with websocket(server) as ws, async_http_client(server) as client:
        if edge == "standalone":
            negotiated = extensions(ws)
            assert negotiated.startswith("permessage-deflate"), negotiated
            assert "server_no_context_takeover" in negotiated
            assert "client_no_context_takeover" in negotiated
        await subscribe(ws, "orders")
        first = await apublish(client, "orders", ORDER)
        second = await apublish(client, "orders", {**ORDER, "status": "delivered"})
        got = [await receive(ws), await receive(ws)]
        assert [(m["op"], m["id"]) for m in got] == [("event", first), ("event", second)]
        assert got[0]["data"] == ORDER and got[1]["data"]["status"] == "delivered"
        assert await request(ws, {"op": "ping", "ref": 5}) == {"op": "pong", "ref": 5}


async def test_a_client_that_does_not_offer_it_gets_plain_frames(
    server: RunningServer, edge: str
) -> None:
    async with websocket(server, compression=None) as ws, async_http_client(server) as client:
        assert extensions(ws) == ""
        await subscribe(ws, "orders")
        cursor = await apublish(client, "orders", ORDER)
        event = await receive(ws)
        assert (event["id"], event["data"]) == (cursor, ORDER)


async def test_the_setting_off_negotiates_nothing(
    make_server: Callable[..., RunningServer], edge: str
) -> None:
    server = make_server(ws_deflate=False)
    async with websocket(server) as ws, async_http_client(server) as client:
        if edge == "standalone":
            assert extensions(ws) == ""
        await subscribe(ws, "orders")
        cursor = await apublish(client, "orders", ORDER)
        assert (await receive(ws))["id"] == cursor


async def test_a_compressed_publish_from_a_client_is_read(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__chat__client_publish=True)
    async with websocket(server) as publisher, websocket(server) as listener:
        await subscribe(listener, "chat:lobby")
        # the websockets client compresses every message once deflate is negotiated
        await send(publisher, {"op": "publish", "channel": "chat:lobby", "data": ORDER, "ref": 2})
        answer = await receive(publisher)
        assert answer["op"] == "published" and answer["ref"] == 2
        heard = await receive(listener)
        assert (heard["id"], heard["data"]) == (answer["id"], ORDER)


async def test_a_compressed_message_over_the_limit_once_inflated_closes_with_1009(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_bytes=1024)
    limit = 1024 + 4096
    async with websocket(server) as ws:
        padded = '{"op": "ping", "ref": 1, "pad": "' + " " * (limit * 4) + '"}'
        await ws.send(padded)  # a few hundred bytes on the wire, four times the limit inflated
        await expect_closed(ws, 1009)


async def test_a_decompression_bomb_closes_with_1009(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_bytes=1024)
    # 20 MiB inflated, 20 KiB on the wire: over the limit on both edges (uvicorn's is 16 MiB)
    bomb = deflate(b"0" * (20 * 1024 * 1024))
    async with await RawConnection.open(server) as connection:
        await connection.send(deflate_handshake())
        head = await connection.head()
        assert head.status == 101
        await connection.send(masked(bomb, RSV1 if head.header("Sec-WebSocket-Extensions") else 0))
        frames = await read_frames(connection, until_close=True)
        assert frames[-1][0] & 0x0F == 0x8
        assert struct.unpack("!H", frames[-1][1][:2])[0] == 1009


# raw bytes: the standalone edge's frames as written


@pytest.mark.standalone_only("the ASGI server frames and compresses the messages itself")
async def test_every_subscriber_gets_the_same_compressed_bytes(server: RunningServer) -> None:
    async with (
        await RawConnection.open(server) as first,
        await RawConnection.open(server) as second,
        async_http_client(server) as client,
    ):
        for connection in (first, second):
            await connection.send(deflate_handshake())
            head = await connection.head()
            assert head.status == 101
            assert "server_no_context_takeover" in (head.header("Sec-WebSocket-Extensions") or "")
            await connection.send(client_json({"op": "subscribe", "channel": "orders", "ref": 1}))
            [(flags, answer)] = await read_frames(connection)
            assert flags == 0x80 | TEXT, "answers go uncompressed"
            assert orjson.loads(answer)["op"] == "subscribed"
        cursor = await apublish(client, "orders", ORDER)
        [(flags, one)] = await read_frames(first)
        [(other_flags, other)] = await read_frames(second)
        assert flags == other_flags == 0x80 | RSV1 | TEXT
        assert one == other
        event = orjson.loads(zlib.decompressobj(-15).decompress(one + EMPTY_BLOCK))
        assert (event["op"], event["id"], event["data"]) == ("event", cursor, ORDER)
        assert len(one) < len(orjson.dumps(event)) * 2 // 3


@pytest.mark.standalone_only("the ASGI server frames and compresses the messages itself")
async def test_client_messages_compressed_by_hand_are_inflated_each_on_its_own(
    server: RunningServer,
) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(deflate_handshake())  # offers no client_no_context_takeover
        head = await connection.head()
        answer = head.header("Sec-WebSocket-Extensions") or ""
        # asked of the client all the same, so that no connection keeps an inflate state
        assert "client_no_context_takeover" in answer, answer
        for ref in (7, 8):
            await connection.send(masked(deflate(orjson.dumps({"op": "ping", "ref": ref})), RSV1))
            [(flags, pong)] = await read_frames(connection)
            assert (flags, orjson.loads(pong)) == (0x80 | TEXT, {"op": "pong", "ref": ref})


@pytest.mark.standalone_only("the ASGI server frames and compresses the messages itself")
async def test_an_offer_we_cannot_accept_opens_an_uncompressed_connection(
    server: RunningServer,
) -> None:
    async with await RawConnection.open(server) as connection, async_http_client(server) as client:
        # zlib cannot compress within a 256-byte window: websockets declines this offer
        await connection.send(deflate_handshake("permessage-deflate; server_max_window_bits=8"))
        head = await connection.head()
        assert (head.status, head.header("Sec-WebSocket-Extensions")) == (101, None)
        await connection.send(client_json({"op": "subscribe", "channel": "orders", "ref": 1}))
        [(flags, answer)] = await read_frames(connection)
        assert orjson.loads(answer)["op"] == "subscribed"
        cursor = await apublish(client, "orders", ORDER)
        [(flags, event)] = await read_frames(connection)
        assert flags == 0x80 | TEXT
        assert orjson.loads(event)["id"] == cursor


def deflate_handshake(offer: str = "permessage-deflate; client_max_window_bits") -> bytes:
    return get(
        "/ws",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Extensions: {offer}",
    )


def deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def masked(payload: bytes, rsv: int) -> bytes:
    """One masked client text frame with the given reserved bits."""
    mask = os.urandom(4)
    first = 0x80 | rsv | TEXT
    if len(payload) < 126:
        header = struct.pack("!BB", first, 0x80 | len(payload))
    elif len(payload) < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, len(payload))
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload))
    return header + mask + body


async def read_frames(connection: RawConnection, until_close: bool = False) -> list[Any]:
    """The next server frames as (first byte, payload): one read's worth, or up to a close;
    the heartbeat's pings, which may come at any moment, left out."""
    buffer = b""
    frames: list[tuple[int, bytes]] = []
    while not frames or (until_close and frames[-1][0] & 0x0F != 0x8):
        data = await within(connection.reader.read(65536), "frames from the server")
        assert data, "the server ended the connection"
        buffer += data
        while len(buffer) >= 2:
            length, start = buffer[1] & 0x7F, 2
            if length == 126:
                length, start = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                length, start = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < start + length:
                break
            if buffer[0] & 0x0F != 0x9:
                frames.append((buffer[0], buffer[start : start + length]))
            buffer = buffer[start + length :]
    return frames
