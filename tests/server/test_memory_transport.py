"""``MemoryTransport``: the standalone edge without a socket, as tests and edge_cost.py use it."""

from __future__ import annotations

import asyncio

from tidings.config import load_settings
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.uvloop.http import MAX_PIPELINED, Edge
from tidings.server.uvloop.memory import MemoryTransport


async def test_a_request_fed_as_bytes_is_answered_into_the_transport() -> None:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    try:
        transport = MemoryTransport(("192.0.2.7", 4000))
        connection = edge.protocol_factory()
        connection.connection_made(transport)  # type: ignore[arg-type]
        assert transport.protocol is None and connection.peer == "192.0.2.7"
        connection.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.output().startswith(b"HTTP/1.1 200 ")
        assert not transport.is_closing()  # kept alive
        connection.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert transport.output().count(b"HTTP/1.1 200 ") == 2
        assert transport.is_closing()
    finally:
        await node.close()


async def test_reading_paused_by_a_full_queue_or_a_slow_reader_resumes_once_answered() -> None:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    try:
        transport = MemoryTransport()
        connection = edge.protocol_factory()
        connection.connection_made(transport)  # type: ignore[arg-type]
        # a slow reader: reading stops until its answers drain, then goes on
        connection.pause_writing()
        assert not transport.is_reading()
        connection.resume_writing()
        assert transport.is_reading()
        # a held long poll, then MAX_PIPELINED requests behind it: reading stops
        held = b"GET /poll?channel=q&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n"
        queued = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * MAX_PIPELINED
        connection.data_received(held + queued)
        assert not transport.is_reading() and transport.output() == b""
        publisher, publisher_transport = edge.protocol_factory(), MemoryTransport()
        publisher.connection_made(publisher_transport)  # type: ignore[arg-type]
        body = b'{"channel":"q","data":1}'
        publisher.data_received(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        for _ in range(100):
            if transport.output().count(b"HTTP/1.1 200 ") == 1 + MAX_PIPELINED:
                break
            await asyncio.sleep(0.01)
        assert transport.output().count(b"HTTP/1.1 200 ") == 1 + MAX_PIPELINED
        assert transport.is_reading()  # the queue is answered: the next requests are read
    finally:
        await node.close()


async def test_an_answer_does_not_touch_reading_that_the_connection_did_not_pause() -> None:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    try:
        transport = MemoryTransport()
        connection = edge.protocol_factory()
        connection.connection_made(transport)  # type: ignore[arg-type]
        transport.reading = False  # not by the connection: its answers leave it so
        connection.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.output().startswith(b"HTTP/1.1 200 ")
        assert not transport.is_reading()
    finally:
        await node.close()


async def test_a_request_fed_a_byte_at_a_time_is_read_whole() -> None:
    node = Node(load_settings(environ={}), asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    try:
        transport = MemoryTransport()
        connection = edge.protocol_factory()
        connection.connection_made(transport)  # type: ignore[arg-type]
        body = b'{"channel":"bytes","data":"one at a time"}'
        request = (
            b"POST /api/publish?channel=ignored HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
        )
        for index in range(len(request)):  # the URL and the body arrive in pieces
            connection.data_received(request[index : index + 1])
        for _ in range(100):
            if transport.output():
                break
            await asyncio.sleep(0.01)
        assert transport.output().startswith(b"HTTP/1.1 200 "), transport.output()
        page = await node.broker.recent("bytes", 10)
        assert [event.data for event in page.events] == [b'"one at a time"']
    finally:
        await node.close()
