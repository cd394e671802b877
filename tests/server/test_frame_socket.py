"""``FrameSocket`` without a socket: when it lets its ``websockets`` protocol object go.

An idle WebSocket holds no protocol object once it is at rest (between messages, open, no
extension): it opens without one, the one its first frames make goes with the first read
that leaves it at rest, one made by a later read goes with the next heartbeat that finds it
there. A protocol let go waits in ``RESTING`` for the next socket with frames to read. What a
client sees does not change (test_websocket.py and Autobahn run over real sockets).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Frame, Opcode

from tidings.config import load_settings
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.uvloop import websocket
from tidings.server.uvloop.http import Edge
from tidings.server.uvloop.memory import MemoryTransport
from tidings.server.uvloop.websocket import RESTING_KEPT, FrameProtocol, FrameSocket, Resting


@pytest.fixture(autouse=True)
def resting(monkeypatch: pytest.MonkeyPatch) -> Resting:
    """A pool of its own for each test: what other tests let go is not lent here."""
    pool = Resting()
    monkeypatch.setattr(websocket, "RESTING", pool)
    return pool


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    yield edge
    await node.close()


async def opened(edge: Edge, extensions: str | None = None) -> tuple[FrameSocket, MemoryTransport]:
    transport = MemoryTransport()
    connection = edge.protocol_factory()
    connection.connection_made(transport)  # type: ignore[arg-type]
    key = base64.b64encode(os.urandom(16))
    offer = b"Sec-WebSocket-Extensions: %s\r\n" % extensions.encode() if extensions else b""
    connection.data_received(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (key, offer)
    )
    assert transport.output().startswith(b"HTTP/1.1 101"), transport.output()
    socket = transport.protocol
    assert isinstance(socket, FrameSocket)
    return socket, transport


def text(payload: bytes, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


SUBSCRIBE = text(b'{"op":"subscribe","channel":"news","ref":1}')


async def answered(transport: MemoryTransport, what: bytes) -> None:
    async def wait() -> None:
        while what not in transport.output():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), 5)


async def test_a_socket_opens_without_a_protocol_and_its_first_rest_lets_one_go(
    edge: Edge,
) -> None:
    socket, transport = await opened(edge)
    assert socket.protocol is None
    socket.heartbeat(edge.node.loop.time())  # nothing to let go
    socket.data_received(SUBSCRIBE)
    await answered(transport, b'"op":"subscribed"')
    assert socket.protocol is None


async def test_a_protocol_made_by_a_read_stays_until_a_heartbeat_finds_the_socket_at_rest(
    edge: Edge,
) -> None:
    socket, transport = await opened(edge)
    socket.data_received(SUBSCRIBE)
    await answered(transport, b'"op":"subscribed"')
    socket.data_received(text(b'{"op":"subscribe","channel":"sport","ref":2}'))
    await answered(transport, b'"channel":"sport"')
    kept = socket.protocol
    assert kept is not None
    socket.data_received(text(b'{"op":"unsubscribe","channel":"sport","ref":3}'))
    assert socket.protocol is kept  # a socket that keeps sending keeps its protocol
    socket.heartbeat(edge.node.loop.time())
    assert socket.protocol is None
    assert transport.output().endswith(b"\x89\x00")  # the heartbeat's ping went out


async def test_a_message_split_across_reads_keeps_the_protocol_until_it_is_whole(
    edge: Edge,
) -> None:
    socket, transport = await opened(edge)
    first = text(b'{"op":"subscribe",', fin=False)
    last = text(b'"channel":"news","ref":1}', opcode=Opcode.CONT)
    frame = text(b'{"op":"subscribe","channel":"sport","ref":2}')
    socket.data_received(first)
    socket.heartbeat(edge.node.loop.time())  # half a message: not at rest
    assert socket.protocol is not None
    socket.data_received(last + frame[:3])  # and the start of the next frame
    socket.heartbeat(edge.node.loop.time())
    assert socket.protocol is not None
    socket.data_received(frame[3:])
    await answered(transport, b'"channel":"sport"')
    assert b'"channel":"news"' in transport.output()
    socket.heartbeat(edge.node.loop.time())
    assert socket.protocol is None


async def test_a_protocol_that_negotiated_deflate_is_kept(edge: Edge) -> None:
    socket, transport = await opened(edge, "permessage-deflate; client_max_window_bits")
    assert b"permessage-deflate" in transport.output()
    handshake = len(transport.output())
    socket.data_received(SUBSCRIBE)
    await answered(transport, b"\x81")  # a text frame: subscribed (too short to compress)
    assert len(transport.output()) > handshake
    socket.heartbeat(edge.node.loop.time())
    assert socket.protocol is not None


async def test_a_close_from_a_socket_at_rest_runs_the_closing_handshake(edge: Edge) -> None:
    socket, transport = await opened(edge)
    socket.data_received(SUBSCRIBE)
    await answered(transport, b'"op":"subscribed"')
    assert socket.protocol is None
    socket.data_received(Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=True))
    assert transport.output().endswith(b"\x88\x02\x03\xe8")  # the close echoed
    assert transport.closing


async def test_a_protocol_let_go_is_lent_to_the_next_socket_with_frames(edge: Edge) -> None:
    first, first_transport = await opened(edge)
    first.data_received(SUBSCRIBE)
    await answered(first_transport, b'"op":"subscribed"')
    first.data_received(text(b'{"op":"subscribe","channel":"sport","ref":2}'))
    kept = first.protocol
    assert kept is not None
    first.heartbeat(edge.node.loop.time())
    assert first.protocol is None
    second, transport = await opened(edge)
    second.data_received(text(b'{"op":"subscribe",', fin=False))  # half a message: kept
    assert second.protocol is kept
    second.data_received(text(b'"channel":"news","ref":1}', opcode=Opcode.CONT))
    await answered(transport, b'"op":"subscribed"')  # it reads for its new socket as new
    await edge.node.broker.publish("news", "m", b'{"n":1}')
    await answered(transport, b'{"n":1}')
    assert b"sport" not in transport.output()


def open_protocol() -> FrameProtocol:
    return websocket.RESTING.lend(1 << 16)


def test_only_a_protocol_at_rest_is_kept(resting: Resting) -> None:
    sent_nothing = open_protocol()
    resting.give_back(sent_nothing, 1 << 16)
    assert resting.lend(1 << 16) is sent_nothing
    assert resting.lend(1 << 15) is not sent_nothing  # made for another limit: not lent

    waiting = open_protocol()
    waiting.send_ping(b"")  # bytes it still has to send
    resting.give_back(waiting, 1 << 16)
    half_read = open_protocol()
    half_read.receive_data(text(b"half", fin=False))
    resting.give_back(half_read, 1 << 16)
    closing = open_protocol()
    closing.send_close()
    resting.give_back(closing, 1 << 16)
    failed = open_protocol()
    failed.receive_data(b"\x81\x05hello")  # unmasked: a protocol error
    assert failed.parser_exc is not None
    resting.give_back(failed, 1 << 16)
    lent = resting.lend(1 << 16)
    assert lent not in (waiting, half_read, closing, failed)


def test_at_most_resting_kept_wait(resting: Resting) -> None:
    protocols = [open_protocol() for _ in range(RESTING_KEPT + 5)]
    for protocol in protocols:
        resting.give_back(protocol, 1 << 16)
    lent = {id(resting.lend(1 << 16)) for _ in range(RESTING_KEPT + 5)}
    assert len(lent & {id(protocol) for protocol in protocols}) == RESTING_KEPT


async def test_a_refused_handshake_leaves_the_next_one_to_open(edge: Edge) -> None:
    """One protocol object answers every handshake without extension: a refusal leaves
    nothing behind for the next."""
    transport = MemoryTransport()
    connection = edge.protocol_factory()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    assert transport.output().startswith(b"HTTP/1.1 400"), transport.output()
    socket, transport = await opened(edge)
    socket.data_received(SUBSCRIBE)
    await answered(transport, b'"op":"subscribed"')
