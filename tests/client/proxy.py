"""A TCP proxy in front of the real server that misbehaves the way middleboxes do.

- ``refuse_upgrades``: answers a WebSocket upgrade with ``403`` and no Tidings error body,
  as a corporate proxy that does not speak WebSocket does.
- ``buffer_sse``: holds the whole response of ``GET /sse`` until the server ends it, as a
  buffering reverse proxy (``proxy_buffering on``) does: the stream opens but nothing arrives.
- ``freeze()``: from now on, the connections already open pass no more bytes either way and
  stay open, as a dead network path (a NAT that forgot the flow) does. New ones work.
  ``mute()`` does it to what the server sends only: requests arrive, answers are lost.
- ``cut()``: abort every open connection both ways at once, as a network failure does.

Each request gets a connection of its own (``Connection: close`` is put in), so the first
request line decides how a connection is treated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(eq=False)
class Pipe:
    frozen: bool = False  # no bytes either way
    muted: bool = False  # no bytes from the server to the client


class Listener:
    """A local TCP listener in front of the server: one task per accepted connection, all
    ended by ``stop``. Subclasses say what a connection does in ``_serve``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # every connection ends, and its task with it
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Proxy(Listener):
    def __init__(
        self, upstream_port: int, *, refuse_upgrades: bool = False, buffer_sse: bool = False
    ) -> None:
        super().__init__(upstream_port)
        self.refuse_upgrades = refuse_upgrades
        self.buffer_sse = buffer_sse
        self.requests: list[str] = []  # request lines, in arrival order
        self._pipes: set[Pipe] = set()

    def count(self, fragment: str) -> int:
        return sum(1 for line in self.requests if fragment in line)

    def freeze(self) -> int:
        """Black-hole every open connection; return how many there were."""
        for pipe in self._pipes:
            pipe.frozen = True
        return len(self._pipes)

    def cut(self) -> int:
        """Abort every open connection (client and server side); return how many pipes."""
        pipes = len(self._pipes)
        for writer in list(self._writers):
            writer.transport.abort()
        return pipes

    def mute(self) -> int:
        """Drop what the server sends on every open connection (requests still get through)."""
        for pipe in self._pipes:
            pipe.muted = True
        return len(self._pipes)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(request_line)
        upgrade = b"upgrade: websocket" in head.lower()
        if upgrade and self.refuse_upgrades:
            writer.write(REFUSAL)
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipe = Pipe()
        self._writers.add(up_writer)
        try:
            self._pipes.add(pipe)
            up_writer.write(head if upgrade else _closing(head))
            buffered = self.buffer_sse and " /sse" in request_line
            await _race(
                _pump(reader, up_writer, pipe, hold=False, downstream=False),
                _pump(up_reader, writer, pipe, hold=buffered, downstream=True),
            )
            while pipe.frozen and await reader.read(65536):
                pass  # a dead path does not tell the client that the server hung up
        finally:
            self._pipes.discard(pipe)
            self._writers.discard(up_writer)
            up_writer.transport.abort()


def _closing(head: bytes) -> bytes:
    """The request head with ``Connection: close`` instead of whatever it said."""
    lines = [
        line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


async def _pump(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    pipe: Pipe,
    hold: bool,
    downstream: bool,
) -> None:
    held: list[bytes] = []
    while data := await source.read(65536):
        if pipe.frozen or (downstream and pipe.muted):
            continue  # the bytes vanish, the connection stays open
        if hold:
            held.append(data)
            continue
        sink.write(data)
        await sink.drain()
    if held and not pipe.frozen:
        sink.write(b"".join(held))
        await sink.drain()


async def _race(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run both directions; when one ends, the connection is over."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxy(upstream_port: int, **behaviour: bool) -> AsyncIterator[Proxy]:
    running = Proxy(upstream_port, **behaviour)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
