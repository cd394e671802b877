"""A TCP proxy in front of Redis that can make chosen connections go silent.

``stall(marker)`` makes every open connection whose client greeting (the bytes it sent
first: HELLO, CLIENT SETNAME ...) contains ``marker`` drop whatever Redis sends it, while
both sockets stay open: a half-open link, the failure that only a ping through the link can
reveal. Connections opened later are forwarded normally.

While ``kill_subscribes`` is set, a connection that sends a ``SUBSCRIBE`` is cut at once, as
a middlebox or an ACL that forbids pub/sub would have it: plain commands work, and a pub/sub
link can never come up.
"""

from __future__ import annotations

import asyncio
import contextlib

GREETING_BYTES = 4096


class _Pipe:
    __slots__ = ("client", "greeting", "server", "stalled", "tasks")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.greeting = b""
        self.stalled = False
        self.tasks: list[asyncio.Task[None]] = []


class StallingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: list[_Pipe] = []
        self.kill_subscribes = False
        self.killed = 0

    async def start(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.client.transport.abort()
            pipe.server.transport.abort()
            for task in pipe.tasks:
                task.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def stall(self, marker: bytes) -> int:
        """Silence the open connections that greeted with ``marker``; return how many."""
        chosen = [pipe for pipe in self._pipes if marker in pipe.greeting]
        for pipe in chosen:
            pipe.stalled = True
        return len(chosen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipe = _Pipe(writer, up_writer)
        self._pipes.append(pipe)
        loop = asyncio.get_running_loop()
        pipe.tasks = [
            loop.create_task(self._upstream(pipe, reader)),
            loop.create_task(self._downstream(pipe, up_reader)),
        ]

    async def _upstream(self, pipe: _Pipe, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if self.kill_subscribes and b"SUBSCRIBE" in chunk:
                    self.killed += 1
                    pipe.client.transport.abort()
                    break
                if len(pipe.greeting) < GREETING_BYTES:
                    pipe.greeting += chunk[: GREETING_BYTES - len(pipe.greeting)]
                pipe.server.write(chunk)
                await pipe.server.drain()
        pipe.server.transport.abort()

    async def _downstream(self, pipe: _Pipe, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if not pipe.stalled:
                    pipe.client.write(chunk)
                    await pipe.client.drain()
        pipe.client.transport.abort()
