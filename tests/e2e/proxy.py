"""A small fault-injecting TCP proxy on 127.0.0.1 that the browser tests control.

It stands between the browser and a real ``tidings serve`` and can play the network
trouble that the client's fallback ladder is for: a proxy that refuses WebSocket upgrades,
one that buffers streamed responses (no byte of an event stream reaches the client), and
a cut of every open connection at once.

The proxy only reads the first request head of a connection and then pipes bytes, so a
browser that keeps connections alive can carry later requests (an event stream among them)
past the faults. ``one_request_per_connection`` closes that gap: each forwarded request asks
the server to close after answering (``Connection: close``), so every request, and every
response, is the first of its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

import uvloop

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 65536
REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the upstream port, with switchable faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refuse_websocket = False
        self.buffer_streams = False
        self.one_request_per_connection = False
        self.port = 0
        self.refused_upgrades = 0
        self.buffered_streams = 0
        self.request_heads: list[bytes] = []  # the first request head of each connection
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = uvloop.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        self.port = self._run(self._listen())
        return self

    def stop(self) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def cut_all(self) -> int:
        """Abort every open connection in both directions; return how many were cut."""
        return self._run(self._cut())

    def _run(self, coroutine):  # type: ignore[no-untyped-def]
        future: Future[object] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _cut(self) -> int:
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        self._writers.clear()
        return len(writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(HEAD_END)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.transport.abort()
            return
        self.request_heads.append(head)
        if self.refuse_websocket and b"upgrade: websocket" in head.lower():
            self.refused_upgrades += 1
            writer.write(REFUSAL)
            await _close_quietly(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        up_writer.write(_closing(head) if self.one_request_per_connection else head)
        await asyncio.gather(
            _pipe(reader, up_writer),
            self._downstream(up_reader, writer),
            return_exceptions=True,
        )

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward the answer; in buffering mode an event stream is held until it ends."""
        first = await reader.read(MAX_HEAD)
        streaming = b"text/event-stream" in first.split(HEAD_END, 1)[0].lower()
        buffer = self.buffer_streams and streaming
        if buffer:
            self.buffered_streams += 1
            held = [first]
            while chunk := await reader.read(65536):
                held.append(chunk)
            writer.write(b"".join(held))
            await _close_quietly(writer)
            return
        writer.write(first)
        await _pipe(reader, writer)


def _closing(head: bytes) -> bytes:
    """``head`` with ``Connection: close`` (an upgrade request is left as it is)."""
    lines = head[: -len(HEAD_END)].split(b"\r\n")
    if any(line.lower().startswith(b"upgrade:") for line in lines[1:]):
        return head
    kept = [line for line in lines if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close"]) + HEAD_END


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        await _close_quietly(writer)


async def _close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        await writer.wait_closed()
