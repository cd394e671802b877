"""The echo ``/ws`` for the Autobahn suite: only a test builds it, no setting turns it on."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    RawConnection,
    wait_until,
    within,
    ws_handshake,
)
from tests.server.test_websocket import expect_closed
from tidings.config import Settings, load_settings
from tidings.exceptions import ConfigError
from tidings.server.uvloop.echo import EchoSocket


@asynccontextmanager
async def websocket(server: RunningServer) -> AsyncIterator[ClientConnection]:
    async with connect(
        server.ws_url, proxy=None, open_timeout=TIMEOUT, ping_interval=None, max_size=None
    ) as ws:
        yield ws


def echo_server(make_server: Callable[..., RunningServer], **overrides: object) -> RunningServer:
    return make_server(socket_class=EchoSocket, **overrides)


def test_no_setting_turns_the_echo_on() -> None:
    assert not any("echo" in name for name in Settings().server.__dataclass_fields__)
    with pytest.raises(ConfigError):
        load_settings(environ={"TIDINGS_SERVER_TEST_ECHO": "true"}, flags={})


async def test_without_echo_ws_answers_the_protocol_and_echoes_nothing(
    server: RunningServer,
) -> None:
    async with websocket(server) as ws:
        await ws.send("hello, echo?")
        answer = orjson.loads(await within(ws.recv(), "an answer"))
        assert (answer["op"], answer["code"]) == ("error", "invalid_json")
        await ws.send('{"op": "ping", "ref": 1}')
        assert await within(ws.recv(), "a pong") == '{"op":"pong","ref":1}'
        await ws.send(b"binary")
        await expect_closed(ws, 1003)


async def test_echo_sends_text_and_binary_back(make_server: Callable[..., RunningServer]) -> None:
    server = echo_server(make_server)
    async with websocket(server) as ws:
        for message in ("hello", "κόσμε", "", b"\x00\xffbytes", b""):
            await ws.send(message)
            assert await within(ws.recv(), "the echo") == message


async def test_echo_sends_a_fragmented_message_back_whole(
    make_server: Callable[..., RunningServer],
) -> None:
    server = echo_server(make_server)
    async with websocket(server) as ws:
        await ws.send(["frag", "mented ", "κόσμε"])
        assert await within(ws.recv(), "the echo") == "fragmented κόσμε"


async def test_echo_keeps_the_size_limit(make_server: Callable[..., RunningServer]) -> None:
    server = echo_server(make_server, max_message_bytes=1024)
    async with websocket(server) as ws:
        await ws.send("x" * (1024 + 4096))
        assert await within(ws.recv(), "the echo") == "x" * (1024 + 4096)
        await ws.send("x" * (1024 + 4097))
        await expect_closed(ws, 1009)


def binary_frame(payload: bytes, mask: bool) -> bytes:
    """A final binary frame; a client's with a zero mask, so the payload goes as it is."""
    header = struct.pack("!BBQ", 0x82, (0x80 if mask else 0) | 127, len(payload))
    return header + (b"\x00" * 4 if mask else b"") + payload


async def test_an_echo_that_is_not_read_stops_reading_instead_of_dropping(
    make_server: Callable[..., RunningServer],
) -> None:
    # no heartbeat in the byte-exact echo: a ping may otherwise come between two echoes
    server = echo_server(
        make_server, write_buffer_limit=65536, max_message_bytes=1 << 20, heartbeat_seconds=600
    )
    app = server.node
    assert app is not None
    payloads = [bytes([n]) * 262144 for n in range(48)]  # 12 MiB: more than socket buffers
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    async with RawConnection(reader, writer) as connection:
        await connection.send(ws_handshake())
        assert (await connection.head()).status == 101
        # written without waiting for the server to read it all: the echo has to hold back
        writer.write(b"".join(binary_frame(payload, mask=True) for payload in payloads))

        def echo_reading() -> bool:
            echoes = [c for c in app.connections if isinstance(c, EchoSocket)]
            assert len(echoes) == 1, "the echo connection was closed"
            return echoes[0].transport.is_reading()

        await wait_until(lambda: not server.call(echo_reading), "the echo to stop reading")
        assert server.call(lambda: app.stats.slow_consumers) == 0
        expected = b"".join(binary_frame(payload, mask=False) for payload in payloads)
        echoed = await within(reader.readexactly(len(expected)), "every echo", timeout=30)
        assert echoed == expected
        await within(writer.drain(), "the server to read everything")
        assert server.call(echo_reading)
