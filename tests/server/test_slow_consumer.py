"""Slow consumers: a subscriber that stops reading must not cost the server unbounded memory,
must not hold back the others, and must never see a silent gap.

The slow client is a plain socket with a tiny receive buffer that sends its request and then
does not read. Some tests also shrink the kernel send buffer of the server's side of that
connection (through ``server.call``), as a slow network would: then the transport's own write
buffer fills after a few events instead of after the megabytes the loopback kernel absorbs.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from tests.conftest import RunningServer
from tests.server.support import (
    Dechunker,
    FrameReader,
    Record,
    apublish_batch,
    async_http_client,
    background,
    client_frame,
    client_json,
    close_code,
    get,
    is_chunked,
    offset,
    read_head,
    sse_stream,
    stalled_socket,
    wait_until,
    within,
    ws_handshake,
)
from tidings.protocol.sse import RESET_EVENT, SSEParser

LIMIT = 16384  # write_buffer_limit of these servers
PAD = "x" * 1000  # about 1 KB per event
STEP = 10  # events per publish while filling a buffer
# The write that crosses the limit may carry every event that arrived in one loop
# iteration (the hub writes consecutive events as one batch): at most one publish of STEP.
MOST_BUFFERED = LIMIT + STEP * 1200


# --- the server's side of a client socket ---------------------------------------------------


def server_side(server: RunningServer, sock: socket.socket) -> Any:
    """The server's connection object for the client socket ``sock`` (None once it is gone)."""
    app = server.node
    assert app is not None
    port = sock.getsockname()[1]

    def find() -> Any:
        for connection in app.connections:
            transport = getattr(connection, "transport", None)
            if transport is None or transport.is_closing():
                continue
            peer = transport.get_extra_info("peername")
            if peer is not None and peer[1] == port and hasattr(connection, "tails"):
                return connection
        return None

    return server.call(find)


def buffered(server: RunningServer, connection: Any) -> int:
    return int(server.call(lambda: connection.transport.get_write_buffer_size()))


def shrink_send_buffer(server: RunningServer, connection: Any) -> None:
    """Make the kernel hold little for the stalled client (where the edge has a socket: the
    mount's bytes wait in its bounded queue and in the ASGI server's buffer instead)."""

    def shrink() -> None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    server.call(shrink)


async def stalled_sse(server: RunningServer, channel: str) -> tuple[SlowReader, Any]:
    reader = SlowReader(stalled_socket(server, get(f"/sse?channel={channel}")))
    found = await wait_until(lambda: server_side(server, reader.sock), "the SSE stream to open")
    return reader, found


async def stalled_websocket(server: RunningServer, channel: str) -> tuple[SlowReader, Any]:
    """A WebSocket that subscribes to ``channel``, then stops reading.

    It reads the 101 before it sends a frame, as a client must (RFC 6455 section 4.1): an
    ASGI server may take only the handshake from the bytes that came with it. What the
    server sent after the 101 is kept for the reader.
    """
    sock = stalled_socket(server, ws_handshake())
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(client_json({"op": "subscribe", "channel": channel, "ref": 1}))

    def subscribed() -> Any:
        found = server_side(server, sock)
        return found if found is not None and server.call(lambda: channel in found.tails) else None

    found = await wait_until(subscribed, "the WebSocket to subscribe")
    return SlowReader(sock, head, rest), found


class SlowReader:
    """Reads the stalled socket once the test lets it: the HTTP head (unless it was read
    before: then ``head`` and ``rest``, the bytes that came after it), then the body,
    dechunked where the server sends it in chunks (as an ASGI server sends a stream)."""

    def __init__(self, sock: socket.socket, head: bytes | None = None, rest: bytes = b"") -> None:
        self.sock = sock
        self.head = head
        self.buffer = b""  # the head so far
        self.pending = rest  # bytes read already, given out first
        self.dechunker = Dechunker() if head is not None and is_chunked(head) else None

    async def chunk(self, size: int = 65536) -> bytes:
        """The next bytes of the body; b"" once the server has ended the connection."""
        while True:
            data, self.pending = self.pending or await self._receive(size), b""
            if not data:
                return b""
            if self.head is None:
                self.buffer += data
                if b"\r\n\r\n" not in self.buffer:
                    continue
                self.head, _, data = self.buffer.partition(b"\r\n\r\n")
                self.dechunker = Dechunker() if is_chunked(self.head) else None
            body = data if self.dechunker is None else self.dechunker.feed(data)
            if body:
                return body

    async def _receive(self, size: int) -> bytes:
        self.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            return bytes(await within(loop.sock_recv(self.sock, size), "the slow socket to read"))
        except ConnectionResetError:
            return b""


@dataclass
class Progress:
    """How far a fast subscriber has read, so the publisher never runs far ahead of it."""

    seen: list[int] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, number: int) -> None:
        async with self.changed:
            self.seen.append(number)
            self.changed.notify_all()

    async def at_least(self, count: int) -> None:
        async with self.changed:
            await within(self.changed.wait_for(lambda: len(self.seen) >= count), "the reader")


async def publish_numbered(
    client: httpx.AsyncClient, channel: str, first: int, count: int
) -> list[str]:
    values = [{"n": n, "pad": PAD} for n in range(first, first + count)]
    return await apublish_batch(client, channel, values)


# --- disconnect ----------------------------------------------------------------------------


async def test_slow_sse_reader_is_disconnected_while_others_get_everything(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(write_buffer_limit=LIMIT)
    app = server.node
    assert app is not None
    reader, slow = await stalled_sse(server, "feed")
    progress = Progress()
    try:
        async with (
            async_http_client(server) as client,
            sse_stream(client, "/sse?channel=feed") as stream,
        ):

            async def read_fast() -> None:
                while True:
                    message = await stream.next()
                    await progress.add(json.loads(message.data)["n"])

            async with background(read_fast()):
                published = 0
                while server_side(server, reader.sock) is not None:
                    assert published < 20000, "the slow reader was never disconnected"
                    await progress.at_least(published - 200)
                    await publish_numbered(client, "feed", published + 1, STEP)
                    published += STEP
                assert server.call(lambda: app.hub.subscriber_count("feed")) == 1
                await publish_numbered(client, "feed", published + 1, 50)
                published += 50
                await progress.at_least(published)
        assert progress.seen == list(range(1, published + 1))
        assert server.call(lambda: slow not in app.connections)
        assert app.stats.slow_consumers >= 1
        # What reached the slow socket is the start of the stream, in order, then its end.
        parser = SSEParser()
        numbers = []
        while chunk := await reader.chunk():
            numbers.extend(json.loads(m.data)["n"] for m in parser.feed(chunk))
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(numbers) < published
    finally:
        reader.sock.close()


async def test_slow_websocket_is_closed_with_4000_and_memory_stays_bounded(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(write_buffer_limit=LIMIT)
    app = server.node
    assert app is not None
    reader, slow = await stalled_websocket(server, "wfeed")
    progress = Progress()
    try:
        async with (
            async_http_client(server) as client,
            connect(server.ws_url, proxy=None, ping_interval=None) as ws,
        ):
            await ws.send('{"op": "subscribe", "channel": "wfeed", "ref": 1}')
            assert orjson.loads(await within(ws.recv(), "subscribed"))["op"] == "subscribed"

            async def read_fast() -> None:
                while True:
                    message = orjson.loads(await ws.recv())
                    await progress.add(message["data"]["n"])

            async with background(read_fast()):
                published = 0
                while server.call(lambda: "wfeed" in slow.tails):
                    assert published < 20000, "the slow WebSocket was never closed"
                    await progress.at_least(published - 200)
                    await publish_numbered(client, "wfeed", published + 1, STEP)
                    published += STEP
                held = buffered(server, slow)
                await publish_numbered(client, "wfeed", published + 1, 200)
                published += 200
                await progress.at_least(published)
                # Nothing more is queued for it: its buffer holds at most the limit, the
                # write that crossed it and the close frame.
                assert held <= MOST_BUFFERED + 128
                assert buffered(server, slow) <= held
        assert progress.seen == list(range(1, published + 1))
        assert app.stats.slow_consumers >= 1
        frames = FrameReader()
        received: list[tuple[int, bytes]] = []
        while not any(opcode == 0x8 for opcode, _ in received):
            chunk = await reader.chunk()
            assert chunk, "the connection ended without a close frame"
            received.extend(frames.feed(chunk))
        *messages, (_, payload) = received
        assert close_code(payload) == 4000
        assert orjson.loads(messages[0][1])["op"] == "subscribed"
        numbers = [orjson.loads(p)["data"]["n"] for _, p in messages[1:]]
        assert numbers == list(range(1, len(numbers) + 1))
        reader.sock.setblocking(True)
        reader.sock.sendall(client_frame(payload[:2], opcode=0x8))  # finish the closing handshake
        await wait_until(lambda: server.call(lambda: slow not in app.connections), "the close")
    finally:
        reader.sock.close()


# --- drop-oldest ---------------------------------------------------------------------------


async def read_sse_record(reader: SlowReader, record: Record, until: int, size: int) -> None:
    parser = SSEParser()
    while record.position < until:
        chunk = await reader.chunk(size)
        assert chunk, "the drop-oldest stream was closed"
        for message in parser.feed(chunk):
            if message.event == RESET_EVENT:
                detail = json.loads(message.data)
                assert detail["reason"] in ("gap", "epoch")
                assert detail["id"] == message.last_event_id
                record.reset(detail["id"])
            else:
                assert offset(message.last_event_id) == json.loads(message.data)["n"]
                record.event(message.last_event_id)


async def lag(
    server: RunningServer, client: httpx.AsyncClient, connection: Any, channel: str
) -> int:
    """Publish until the connection lags; return how many were published."""
    published = 0
    while not server.call(lambda: connection.lagging):
        assert published < 20000, "the stream never lagged"
        await publish_numbered(client, channel, published + 1, STEP)
        published += STEP
    return published


async def test_drop_oldest_reader_gets_every_event_or_a_reset(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        write_buffer_limit=LIMIT,
        namespaces__default__slow_consumer="drop-oldest",
        namespaces__default__history_size=200,
    )
    reader, slow = await stalled_sse(server, "drop")
    shrink_send_buffer(server, slow)
    try:
        async with async_http_client(server) as client:
            published = await lag(server, client, slow, "drop")
            for _ in range(15):  # past the backlog of 1,000 and the history of 200
                await publish_numbered(client, "drop", published + 1, 100)
                published += 100
            assert buffered(server, slow) <= MOST_BUFFERED  # held back, not queued
            record = Record()
            total = published + 500

            async def keep_publishing() -> None:
                for first in range(published + 1, total + 1, 10):
                    await publish_numbered(client, "drop", first, 10)

            # The slow reader starts reading, 4 KB at a time, while publishing goes on.
            async with background(keep_publishing()) as publisher:
                await read_sse_record(reader, record, total, 4096)
                await within(publisher, "the publisher")
        assert record.check() == total
        assert record.resets >= 1, "events left history: a reset is due"
        assert server_side(server, reader.sock) is slow  # still connected: nothing was dropped
    finally:
        reader.sock.close()


async def test_drop_oldest_stalled_reader_holds_a_bounded_buffer(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(write_buffer_limit=LIMIT, namespaces__default__slow_consumer="drop-oldest")
    reader, slow = await stalled_sse(server, "stall")
    shrink_send_buffer(server, slow)
    try:
        async with async_http_client(server) as client:
            published = await lag(server, client, slow, "stall")
            held = buffered(server, slow)
            assert held <= MOST_BUFFERED
            for _ in range(20):
                await publish_numbered(client, "stall", published + 1, 100)
                published += 100
                assert buffered(server, slow) <= held  # nothing more is queued
    finally:
        reader.sock.close()


async def test_drop_oldest_buffer_stays_bounded_after_a_catch_up(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        write_buffer_limit=LIMIT,
        namespaces__default__slow_consumer="drop-oldest",
        namespaces__default__history_size=5000,
    )
    reader, slow = await stalled_sse(server, "again")
    shrink_send_buffer(server, slow)
    try:
        async with async_http_client(server) as client:
            lagged_at = await lag(server, client, slow, "again")
            published = lagged_at
            for _ in range(5):  # 500 KB held back while it lags
                await publish_numbered(client, "again", published + 1, 100)
                published += 100
            # Read until an event published during the lag arrives: the server has resumed
            # writing and caught up from history. Then the reader stalls again.
            record = Record()
            await read_sse_record(reader, record, lagged_at + 10, 4096)
            after_catch_up = buffered(server, slow)
            for _ in range(10):
                await publish_numbered(client, "again", published + 1, 100)
                published += 100
            grown = buffered(server, slow) - after_catch_up
            assert grown <= LIMIT, f"the buffer grew by {grown} bytes while the reader stalled"
    finally:
        reader.sock.close()


async def test_drop_oldest_applies_to_websocket_too(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        write_buffer_limit=LIMIT,
        namespaces__feed__slow_consumer="drop-oldest",
        namespaces__feed__history_size=200,
    )
    reader, slow = await stalled_websocket(server, "feed:x")
    shrink_send_buffer(server, slow)
    try:
        async with async_http_client(server) as client:
            published = 0
            for _ in range(20):
                await publish_numbered(client, "feed:x", published + 1, 100)
                published += 100
            frames = FrameReader()
            record = Record()
            while record.position < published:
                chunk = await reader.chunk(4096)
                assert chunk, "the connection ended"
                for opcode, payload in frames.feed(chunk):
                    assert opcode == 0x1, f"closed with {close_code(payload)}"
                    message = orjson.loads(payload)
                    if message["op"] == "event":
                        record.event(message["id"])
                    elif message["op"] == "reset":
                        record.reset(message["id"])
            assert record.check() == published
    finally:
        reader.sock.close()
