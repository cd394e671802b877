"""Fixtures for the server tests: HTTP clients bound to the default ``server``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.asgi_server import start_mounted
from tests.conftest import RunningServer, settings_with, start_server
from tests.server.support import async_http_client, http_client
from tidings.server.uvloop.websocket import FrameSocket

EDGES = ("standalone", "mount")


# What only the standalone edge does, and an ASGI server does in its place under the mount
# (parsing HTTP, framing WebSockets, accepting sockets, logging its connections): whole
# modules, then single tests. Every other server test runs on both edges; docs/asgi.md,
# "What is weaker under ASGI", says what differs.
STANDALONE_MODULES = {
    "test_http": "raw HTTP/1.1 parsing, pipelining and 408/431 are the ASGI server's",
    "test_websocket_frames": "RFC 6455 framing is the ASGI server's",
    "test_echo": "the Autobahn echo is built on the standalone edge's framing",
}
STANDALONE_TESTS = {
    "test_over_max_connections_answers_503_at_once": "refused at accept, before any request: "
    "the ASGI server owns the socket (the mount refuses at the request)",
    "test_over_max_connections_per_address_answers_429": "refused at accept, before any "
    "request: the ASGI server owns the socket (the mount refuses at the request)",
    "test_idle_connections_close_new_ones_are_refused_and_readyz_answers_503": "idle "
    "keep-alive connections and requests still being sent are the ASGI server's",
    "test_a_websocket_that_ignores_the_close_is_dropped_at_the_deadline": "the ASGI server "
    "runs the closing handshake and its timeout",
}


@pytest.fixture(params=EDGES)
def edge(request: pytest.FixtureRequest) -> str:
    """Which edge serves the node: ``tidings serve``'s, or the ASGI mount under uvicorn."""
    name: str = request.param
    if name == "mount":
        marker = request.node.get_closest_marker("standalone_only")
        module = request.node.module.__name__.rpartition(".")[2]
        test = request.node.originalname
        reason = (
            (marker.args[0] if marker is not None else None)
            or STANDALONE_MODULES.get(module)
            or STANDALONE_TESTS.get(test)
        )
        if reason:
            pytest.skip(f"standalone edge only: {reason}")
    return name


@pytest.fixture
def make_server(edge: str) -> Iterator[Callable[..., Any]]:
    """``make_server(max_message_bytes=1024)`` starts a node with those settings, served by
    each edge in turn: every server test runs against both."""
    started: list[Any] = []

    def make(socket_class: type[FrameSocket] = FrameSocket, **overrides: Any) -> Any:
        settings = settings_with(**overrides)
        if edge == "mount":
            running: Any = start_mounted(settings)
        else:
            running = start_server(settings, socket_class)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with http_client(server) as client:
        yield client


@pytest.fixture
async def ahttp(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with async_http_client(server) as client:
        yield client


@pytest.fixture
def make_http(
    make_server: Callable[..., RunningServer],
) -> Iterator[Callable[[RunningServer], httpx.Client]]:
    """``make_http(server)``: a client for a server from ``make_server``, closed afterwards."""
    clients: list[httpx.Client] = []

    def make(server: RunningServer) -> httpx.Client:
        client = http_client(server)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
