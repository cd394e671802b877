"""``/ws`` framing by hand: fragmented messages, UTF-8, a close between fragments, failures.

RFC 6455 lets a client split any message into frames and put control frames between them;
text must be UTF-8 (1007 otherwise). These run on the real protocol connection; the
Autobahn suite (tests/autobahn) covers the same edge through the test echo.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tests.conftest import RunningServer
from tests.server.support import (
    FrameReader,
    RawConnection,
    close_code,
    connection_count,
    wait_until,
    within,
    ws_handshake,
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int = TEXT, fin: bool = True) -> bytes:
    """One masked client frame, final or not (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Peer:
    """A raw WebSocket client: writes frames, reads the server's frames one at a time."""

    def __init__(self, connection: RawConnection) -> None:
        self.connection = connection
        self.reader = FrameReader()
        self.pending: list[tuple[int, bytes]] = []

    async def send(self, *frames: bytes) -> None:
        await self.connection.send(b"".join(frames))

    async def next(self) -> tuple[int, bytes]:
        while not self.pending:
            data = await within(self.connection.reader.read(65536), "a frame from the server")
            assert data, "the server closed the connection"
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    async def closed_with(self) -> int:
        """The close code the server sends, after which it ends the connection."""
        opcode, payload = await self.next()
        assert opcode == CLOSE, (opcode, payload)
        await self.connection.closed_by_server()
        return close_code(payload)


@asynccontextmanager
async def peer(server: RunningServer) -> AsyncIterator[Peer]:
    async with await RawConnection.open(server) as connection:
        await connection.send(ws_handshake())
        assert (await connection.head()).status == 101
        yield Peer(connection)


def refusals(server: RunningServer) -> dict[str, int]:
    app = server.node
    assert app is not None
    return dict(server.call(lambda: dict(app.stats.refusals)))


async def test_a_fragmented_request_is_read_whole(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(
            frame(b'{"op": "pi', fin=False),
            frame(b'ng", "ref"', CONT, fin=False),
            frame(b": 7}", CONT),
        )
        assert await client.next() == (TEXT, b'{"op":"pong","ref":7}')


async def test_a_ping_between_fragments_is_answered_first(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(frame(b'{"op": "ping",', fin=False), frame(b"hello", PING))
        assert await client.next() == (PONG, b"hello")
        await client.send(frame(b' "ref": 8}', CONT))
        assert await client.next() == (TEXT, b'{"op":"pong","ref":8}')


async def test_invalid_utf8_closes_with_1007(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(frame(b'{"op": "ping", "x": "\xc0\xaf"}'))
        assert await client.closed_with() == 1007
    assert refusals(server).get("ws_invalid_utf8") == 1


async def test_invalid_utf8_fails_at_its_fragment_not_the_last(server: RunningServer) -> None:
    async with peer(server) as client:
        # the message is never finished: the close must come from the bad fragment alone
        surrogate = b"\xed\xa0\x80"  # UTF-8 never encodes surrogates
        await client.send(frame(b'{"op": "\xce\xba', fin=False), frame(surrogate, CONT, False))
        assert await client.closed_with() == 1007


async def test_utf8_split_across_fragments_is_valid(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(frame(b'{"op": "ping", "ref": 9, "x": "\xe2', fin=False))
        await client.send(frame(b'\x82\xac"}', CONT))
        assert await client.next() == (TEXT, b'{"op":"pong","ref":9}')


async def test_a_close_between_fragments_is_a_normal_close(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(
            frame(b'{"op": "ping"', fin=False),
            frame(struct.pack("!H", 1000), CLOSE),
            frame(b"}", CONT),
        )
        assert await client.closed_with() == 1000
    await wait_until(lambda: connection_count(server) == 0, "the connection to end")


async def test_a_fragmented_binary_message_is_refused_at_its_first_frame(
    server: RunningServer,
) -> None:
    async with peer(server) as client:
        await client.send(frame(b"\x00\x01", BINARY, fin=False))
        opcode, payload = await client.next()
        assert (opcode, close_code(payload)) == (CLOSE, 1003)
    assert refusals(server).get("ws_binary") == 1


async def test_a_continuation_without_a_start_closes_with_1002(server: RunningServer) -> None:
    async with peer(server) as client:
        await client.send(frame(b"orphan", CONT))
        assert await client.closed_with() == 1002
    assert refusals(server).get("ws_protocol_error") == 1


async def test_a_message_over_the_limit_across_fragments_closes_with_1009(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_bytes=1024)
    async with peer(server) as client:
        await client.send(*(frame(b"x" * 2000, TEXT if i == 0 else CONT, False) for i in range(3)))
        assert await client.closed_with() == 1009
    assert refusals(server).get("too_large") == 1


async def test_a_heartbeat_pong_alone_marks_the_peer_alive_and_changes_nothing(
    server: RunningServer,
) -> None:
    async with peer(server) as client:
        for _ in range(3):
            await client.send(frame(b"", PONG))
        await client.send(frame(b'{"op": "ping", "ref": 1}'))
        assert await client.next() == (TEXT, b'{"op":"pong","ref":1}')


async def test_pong_like_bytes_inside_a_frame_are_read_as_the_frame(
    server: RunningServer,
) -> None:
    # the mask makes "ab" inside the payload travel as 8a 80, the head of an empty pong;
    # those six bytes arrive alone, in the middle of the frame, and must reach the parser
    message = b'{"op": "ping", "ref": 2, "pad": "ab-cdefgh"}'
    cut = message.index(b"ab")
    mask = bytearray(os.urandom(4))
    mask[cut % 4] = 0x8A ^ ord("a")
    mask[(cut + 1) % 4] = 0x80 ^ ord("b")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    whole = struct.pack("!BB", 0x80 | TEXT, 0x80 | len(message)) + bytes(mask) + masked
    start = 6 + cut
    assert whole[start : start + 2] == b"\x8a\x80"
    async with peer(server) as client:
        for chunk in (whole[:start], whole[start : start + 6], whole[start + 6 :]):
            await client.send(chunk)
            await asyncio.sleep(0.05)  # read apart by the server
        assert await client.next() == (TEXT, b'{"op":"pong","ref":2}')


async def test_a_pong_after_a_header_split_across_reads_goes_to_the_parser(
    server: RunningServer,
) -> None:
    async with peer(server) as client:
        text = frame(b'{"op": "ping", "ref": 3}')
        await client.send(text[:1])
        await client.send(text[1:] + frame(b"", PONG))
        assert await client.next() == (TEXT, b'{"op":"pong","ref":3}')
        await client.send(frame(b"", PONG), frame(b'{"op": "ping", "ref": 4}'))
        assert await client.next() == (TEXT, b'{"op":"pong","ref":4}')
