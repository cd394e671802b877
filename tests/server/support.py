"""Clients for the server tests: raw HTTP on asyncio streams, SSE, WebSocket frames, waiting.

Everything here waits on what it expects with a deadline: a read that does not
come fails the test with a message, never a hang and never a sleep that hopes it is enough.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from tests.conftest import RunningServer
from tidings.protocol.sse import SSEMessage, SSEParser

TIMEOUT = 5.0  # seconds any single expected thing may take before the test fails


# --- waiting ------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], Any], what: str, timeout: float = TIMEOUT, step: float = 0.005
) -> Any:
    """Check ``condition`` until it is truthy and return it; fail naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def waiter_count(server: RunningServer, channel: str) -> int:
    app = server.node
    assert app is not None
    return int(server.call(lambda: len(app.hub._waiters.get(channel, ()))))


def subscriber_count(server: RunningServer, channel: str) -> int:
    app = server.node
    assert app is not None
    return int(server.call(lambda: app.hub.subscriber_count(channel)))


def connection_count(server: RunningServer) -> int:
    app = server.node
    assert app is not None
    return int(server.call(lambda: len(app.connections)))


async def within(awaitable: Awaitable[Any], what: str, timeout: float = TIMEOUT) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def background(coroutine: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``coroutine`` beside the test; cancel it if the test ends first."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PublishStandIn:
    """A node's broker with ``publish`` stood in for: the memory broker runs compiled
    (setup.py), so its methods cannot be replaced on the instance. It stores as a broker over
    the network does, only when awaited: ``publish_nowait`` declines, so every publish goes
    through the stand-in. Everything else is the broker's own.
    ``server.node.broker = PublishStandIn(broker, publish)``, on the loop."""

    def __init__(self, broker: Any, publish: Callable[..., Awaitable[Any]]) -> None:
        self.broker = broker
        self.publish = publish

    def publish_nowait(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)


@dataclass
class Record:
    """Events and resets in the order a subscriber saw them, by offset.

    The one rule of docs/protocol.md section 1: an event continues exactly from the previous event
    or from a reset's cursor. A gap anywhere else is a silent skip; a repeat is a duplicate.
    """

    items: list[tuple[str, int]] = field(default_factory=list)

    def event(self, cursor: str) -> None:
        self.items.append(("event", offset(cursor)))

    def reset(self, cursor: str) -> None:
        self.items.append(("reset", offset(cursor)))

    @property
    def position(self) -> int:
        return self.items[-1][1] if self.items else 0

    @property
    def resets(self) -> int:
        return sum(1 for kind, _ in self.items if kind == "reset")

    def check(self) -> int:
        """Assert the rule; return the offset reached."""
        position = 0
        for kind, at in self.items:
            if kind == "event":
                assert at == position + 1, f"event {at} after {position}: {self.items[-30:]}"
            position = at
        return position


# --- publishing ---------------------------------------------------------------------------


def http_client(server: RunningServer) -> httpx.Client:
    """A client for ``server`` that ignores proxy settings and skips loading CA files."""
    return httpx.Client(base_url=server.url, verify=False, trust_env=False, timeout=TIMEOUT)


def async_http_client(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, verify=False, trust_env=False, timeout=TIMEOUT)


def publish(server: RunningServer, channel: str, data: Any, **fields: Any) -> str:
    """Publish one event over HTTP; return its cursor."""
    with http_client(server) as http:
        response = http.post("/api/publish", json={"channel": channel, "data": data, **fields})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def apublish(client: httpx.AsyncClient, channel: str, data: Any, **fields: Any) -> str:
    response = await client.post("/api/publish", json={"channel": channel, "data": data, **fields})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def apublish_batch(client: httpx.AsyncClient, channel: str, values: list[Any]) -> list[str]:
    events = [{"channel": channel, "data": value} for value in values]
    response = await client.post("/api/publish", json={"events": events})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all("id" in result for result in results), results
    return [str(result["id"]) for result in results]


def offset(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


def epoch(cursor: str) -> str:
    return cursor.partition(".")[0]


def query(channels: list[str], **params: Any) -> str:
    pairs: list[tuple[str, Any]] = [("channel", c) for c in channels]
    pairs.extend((k, v) for k, v in params.items() if v is not None)
    return urlencode(pairs)


# --- raw HTTP -----------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return orjson.loads(self.body)

    def error_code(self) -> str:
        body = self.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message"}, body
        assert body["error"]["message"], body
        return str(body["error"]["code"])


REQUEST_LINE = re.compile(rb"(?m)^(GET|POST|OPTIONS|PUT|DELETE|HEAD|PATCH) /")


def under_prefix(prefix: bytes, data: bytes) -> bytes:
    """``data``'s request lines, their targets moved under ``prefix`` (where the node is
    mounted in its host application)."""
    return REQUEST_LINE.sub(rb"\1 " + prefix + rb"/", data) if prefix else data


class RawConnection:
    """One TCP connection written and read by hand, with a deadline on every read."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prefix: bytes = b""
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.prefix = prefix  # where the node is mounted: request targets go under it
        self.dechunker: Dechunker | None = None  # the last head announced a chunked body

    @classmethod
    async def open(cls, server: RunningServer) -> RawConnection:
        reader, writer = await within(
            asyncio.open_connection("127.0.0.1", server.port), "connecting"
        )
        return cls(reader, writer, server.prefix.encode())

    async def send(self, data: bytes) -> None:
        self.writer.write(under_prefix(self.prefix, data))
        await self.writer.drain()

    async def head(self) -> Response:
        """The status line and headers of the next response."""
        status_line = await within(self.reader.readline(), "a status line")
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers = []
        while True:
            line = await within(self.reader.readline(), "a header line")
            assert line.endswith(b"\r\n"), f"connection ended inside the head: {line!r}"
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        response = Response(status, headers, b"")
        chunked = "chunked" in (response.header("Transfer-Encoding") or "").lower()
        self.dechunker = Dechunker() if chunked else None
        return response

    async def body(self, what: str, timeout: float = TIMEOUT) -> bytes:
        """The next bytes of a body read until the server closes (a stream's), dechunked
        where the head announced chunks (as an ASGI server sends a stream); b"" at the end."""
        while True:
            try:
                data = await within(self.reader.read(65536), what, timeout)
            except ConnectionResetError:
                data = b""
            if not data or self.dechunker is None:
                return bytes(data)
            if body := self.dechunker.feed(data):
                return body

    async def body_until_closed(self, timeout: float = TIMEOUT) -> bytes:
        """The rest of a body read until the server closes (fail if it stays open)."""
        parts = []
        while part := await self.body("the server to close", timeout):
            parts.append(part)
        return b"".join(parts)

    async def response(self) -> Response:
        """The next complete response (Content-Length framed; 204 and 304 have no body)."""
        response = await self.head()
        if response.status not in (204, 304):
            length = response.header("Content-Length")
            assert length is not None, f"no Content-Length in {response.headers}"
            response.body = await within(self.reader.readexactly(int(length)), "a body")
        return response

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bytes:
        """Read until the server closes; return what came (fail if it stays open)."""
        try:
            return bytes(await within(self.reader.read(), "the server to close", timeout))
        except ConnectionResetError:
            return b""

    def abort(self) -> None:
        """Drop the connection at once, as a crashed client or a cut network would."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def get(target: str, *headers: str, host: str = "127.0.0.1") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def assert_still_serving(server: RunningServer) -> None:
    """Another client is served normally (after something bad on another connection)."""
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz"))
        response = await connection.response()
        assert response.status == 200
        assert response.json() == {"status": "ok"}


# --- SSE ----------------------------------------------------------------------------------


@dataclass
class SSEStream:
    """An SSE stream read from a raw connection and parsed with the project's parser."""

    connection: RawConnection
    response: Response
    parser: SSEParser
    pending: list[SSEMessage] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        server: RunningServer,
        target: str,
        *headers: str,
        parser: SSEParser | None = None,
    ) -> SSEStream:
        connection = await RawConnection.open(server)
        await connection.send(get(target, *headers))
        response = await connection.head()
        return cls(connection, response, parser or SSEParser())

    async def next(self, timeout: float = TIMEOUT) -> SSEMessage:
        """The next dispatched event of the stream."""
        while not self.pending:
            chunk = await self.connection.body("an SSE event", timeout)
            if not chunk:
                raise AssertionError("the SSE stream ended")
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    async def feed_until(self, condition: Callable[[], bool], what: str) -> None:
        """Read and parse until ``condition()`` holds (for ids, retry and comments)."""
        while not condition():
            chunk = await self.connection.body(what)
            if not chunk:
                raise AssertionError(f"the SSE stream ended before {what}")
            self.pending.extend(self.parser.feed(chunk))

    def abort(self) -> None:
        self.parser.end()
        self.pending.clear()
        self.connection.abort()

    async def close(self) -> None:
        await self.connection.close()


class SSEClient:
    """An SSE response read through httpx and parsed with the project's SSEParser."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self.parser = SSEParser(on_comment=self.comments.append)
        self.raw = b""
        self.pending: list[SSEMessage] = []
        self.start = ""  # the id: of the opening block
        self._chunks = response.aiter_raw()

    async def _read(self, what: str, timeout: float) -> None:
        try:
            chunk = await within(anext(self._chunks), what, timeout)
        except StopAsyncIteration:
            raise AssertionError(f"the SSE stream ended before {what}") from None
        self.raw += chunk
        self.pending.extend(self.parser.feed(chunk))

    async def next(self, timeout: float = TIMEOUT) -> SSEMessage:
        while not self.pending:
            await self._read("an SSE event", timeout)
        return self.pending.pop(0)

    async def take(self, count: int) -> list[SSEMessage]:
        return [await self.next() for _ in range(count)]

    async def feed_until(self, condition: Callable[[], Any], what: str) -> None:
        while not condition():
            await self._read(what, TIMEOUT)

    async def opened(self) -> str:
        """Wait for the opening ``retry:``/``id:`` block; return the starting cursor list."""
        await self.feed_until(lambda: b"\n\n" in self.raw, "the opening block")
        block = self.raw.partition(b"\n\n")[0].decode()
        ids = [line[4:] for line in block.split("\n") if line.startswith("id: ")]
        assert len(ids) == 1, f"the opening block has no single id line: {block!r}"
        self.start = ids[0]
        return self.start


@contextlib.asynccontextmanager
async def sse_stream(
    client: httpx.AsyncClient, target: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SSEClient]:
    """An open SSE stream whose opening block has arrived (the server follows the channels)."""
    async with client.stream("GET", target, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        stream = SSEClient(response)
        await stream.opened()
        yield stream


# --- WebSocket frames by hand ---------------------------------------------------------------


def ws_handshake(target: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return get(
        target,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    )


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def client_json(message: dict[str, Any]) -> bytes:
    return client_frame(orjson.dumps(message))


class FrameReader:
    """Server frames (unmasked) parsed out of a byte stream.

    The server's heartbeat pings are left out unless ``pings``: one may come at any moment,
    as soon as a step after the upgrade, between the frames a test waits for.
    """

    def __init__(self, pings: bool = False) -> None:
        self.buffer = b""
        self.pings = pings

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= 2:
            opcode = self.buffer[0] & 0x0F
            length = self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    break
                length = struct.unpack("!H", self.buffer[2:4])[0]
                start = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    break
                length = struct.unpack("!Q", self.buffer[2:10])[0]
                start = 10
            if len(self.buffer) < start + length:
                break
            if opcode != 0x9 or self.pings:
                frames.append((opcode, self.buffer[start : start + length]))
            self.buffer = self.buffer[start + length :]
        return frames


def close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0])


# --- a socket that never reads ----------------------------------------------------------------


def stalled_socket(server: RunningServer, request: bytes) -> socket.socket:
    """A connection with a tiny receive buffer that sends ``request`` and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(under_prefix(server.prefix.encode(), request))
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read a blocking socket up to the end of a response head: the head, and whatever bytes
    of the body came with it (a reader that goes on must start from those)."""
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(4096)
        assert data, f"the connection ended inside the head: {received!r}"
        received += data
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def is_chunked(head: bytes) -> bool:
    """Whether a response head announces a chunked body (as an ASGI server sends a stream)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


class Dechunker:
    """A chunked body (RFC 9112 section 7.1) decoded as it arrives, in pieces of any size."""

    def __init__(self) -> None:
        self.buffer = b""
        self.left = -1  # bytes of the current chunk's data still to come; -1: a size line
        self.crlf = 0  # bytes of the CRLF after the current chunk's data still to come
        self.done = False  # the last chunk (size 0) came

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data`` (and in what was held back before it)."""
        self.buffer += data
        body: list[bytes] = []
        while not self.done:
            if self.left < 0:
                line, found, rest = self.buffer.partition(b"\r\n")
                if not found:
                    break
                size = int(line.partition(b";")[0], 16)
                self.buffer = rest
                self.done = size == 0
                self.left, self.crlf = size, 2
            part = self.buffer[: self.left]
            body.append(part)
            self.buffer = self.buffer[len(part) :]
            self.left -= len(part)
            skipped = min(self.crlf, len(self.buffer)) if self.left == 0 else 0
            self.buffer = self.buffer[skipped:]
            self.crlf -= skipped
            if self.left or self.crlf:
                break
            self.left = -1
        return b"".join(body)
