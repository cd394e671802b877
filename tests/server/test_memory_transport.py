"""``MemoryTransport``: the standalone edge without a socket, as tests and edge_cost.py use it."""

from __future__ import annotations

import asyncio

from tidings.config import load_settings
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.uvloop.http import Edge
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
