"""``MemoryTransport``: the standalone edge without a socket, as tests and edge_cost.py use it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tidings.config import load_settings
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.uvloop.http import MAX_PIPELINED, Edge, HttpConnection
from tidings.server.uvloop.memory import MemoryTransport

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    try:
        yield edge
    finally:
        await node.close()


def connected(
    edge: Edge, peer: tuple[str, int] = ("127.0.0.1", 50000)
) -> tuple[HttpConnection, MemoryTransport]:
    transport = MemoryTransport(peer)
    connection = edge.protocol_factory()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def publish(edge: Edge, body: bytes) -> None:
    publisher, _ = connected(edge)
    publisher.data_received(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_request_fed_as_bytes_is_answered_into_the_transport(edge: Edge) -> None:
    connection, transport = connected(edge, ("192.0.2.7", 4000))
    assert transport.protocol is None and connection.peer == "192.0.2.7"
    connection.data_received(HEALTH)
    assert transport.output().startswith(b"HTTP/1.1 200 ")
    assert not transport.is_closing()  # kept alive
    connection.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert transport.output().count(b"HTTP/1.1 200 ") == 2
    assert transport.is_closing()


async def test_reading_paused_by_a_full_queue_or_a_slow_reader_resumes_once_answered(
    edge: Edge,
) -> None:
    connection, transport = connected(edge)
    # a slow reader: reading stops until its answers drain, then goes on
    connection.pause_writing()
    assert not transport.is_reading()
    connection.resume_writing()
    assert transport.is_reading()
    # a held long poll, then MAX_PIPELINED requests behind it: reading stops
    held = b"GET /poll?channel=q&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n"
    connection.data_received(held + HEALTH * MAX_PIPELINED)
    assert not transport.is_reading() and transport.output() == b""
    publish(edge, b'{"channel":"q","data":1}')
    answered = 1 + MAX_PIPELINED
    await until(lambda: transport.output().count(b"HTTP/1.1 200 ") == answered)
    assert transport.output().count(b"HTTP/1.1 200 ") == answered
    assert transport.is_reading()  # the queue is answered: the next requests are read


async def test_an_answer_does_not_touch_reading_that_the_connection_did_not_pause(
    edge: Edge,
) -> None:
    connection, transport = connected(edge)
    transport.reading = False  # not by the connection: its answers leave it so
    connection.data_received(HEALTH)
    assert transport.output().startswith(b"HTTP/1.1 200 ")
    assert not transport.is_reading()


async def test_a_request_fed_a_byte_at_a_time_is_read_whole(edge: Edge) -> None:
    connection, transport = connected(edge)
    body = b'{"channel":"bytes","data":"one at a time"}'
    request = (
        b"POST /api/publish?channel=ignored HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    )
    for index in range(len(request)):  # the URL and the body arrive in pieces
        connection.data_received(request[index : index + 1])
    await until(lambda: bool(transport.output()))
    assert transport.output().startswith(b"HTTP/1.1 200 "), transport.output()
    page = await edge.node.broker.recent("bytes", 10)
    assert [event.data for event in page.events] == [b'"one at a time"']
