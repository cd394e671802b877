"""A counting TCP relay: what the bench's subscribers send and receive, byte for byte.

The subscribers connect to the relay (on ``127.0.0.1:0``) instead of the server, so every
byte a client reads from its socket is a byte the relay wrote to it: status lines, headers,
chunk framing, WebSocket frames and pings included, as they cross the wire. No client code
is touched to count. The relay also counts HTTP requests: the heads (up to the blank line)
a connection carries until it upgrades to WebSocket. The subscribers send only GET requests,
which have no body, so a blank line ends exactly one request.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from tidings.exceptions import ClientError

__all__ = ["Relay", "Tally"]

HEAD_END = b"\r\n\r\n"
CHUNK = 65536


@dataclass(slots=True)
class Tally:
    """Running totals over every relayed connection."""

    received: int = 0  # bytes the clients read (server to client)
    sent: int = 0  # bytes the clients wrote (client to server)
    requests: int = 0  # HTTP requests, WebSocket handshakes included
    connections: int = 0

    def since(self, earlier: Tally) -> Tally:
        return Tally(
            self.received - earlier.received,
            self.sent - earlier.sent,
            self.requests - earlier.requests,
            self.connections - earlier.connections,
        )

    def copy(self) -> Tally:
        return Tally(self.received, self.sent, self.requests, self.connections)


class Relay:
    """Listens on 127.0.0.1, relays each connection to ``host:port`` and counts."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.upstream_port = port
        self.tally = Tally()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counted = asyncio.Event()  # set whenever a request is counted

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def requests_reach(self, total: int, timeout: float) -> None:
        """Wait until ``total`` requests have been relayed since the start."""
        try:
            async with asyncio.timeout(timeout):
                while self.tally.requests < total:
                    self._counted.clear()
                    await self._counted.wait()
        except TimeoutError:
            raise ClientError(
                f"{self.tally.requests} requests reached the server in {timeout:g} s, "
                f"not the {total} expected"
            ) from None

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.tally.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            self._forget(task, writer)
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.ensure_future(self._upstream(reader, up_writer)),
            asyncio.ensure_future(self._downstream(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._writers.discard(up_writer)
            up_writer.transport.abort()
            self._forget(task, writer)

    def _forget(self, task: asyncio.Task[Any], writer: asyncio.StreamWriter) -> None:
        self._tasks.discard(task)
        self._writers.discard(writer)
        writer.transport.abort()

    async def _upstream(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Client to server: count bytes, and request heads until the connection upgrades."""
        tail = b""  # the end of the last chunk, so a blank line split in two is still seen
        upgraded = False
        with contextlib.suppress(OSError):
            while data := await source.read(CHUNK):
                self.tally.sent += len(data)
                if not upgraded:
                    seen = tail + data
                    heads = seen.count(HEAD_END)
                    if heads:
                        self.tally.requests += heads
                        self._counted.set()
                    upgraded = b"upgrade: websocket" in seen.lower()
                    tail = seen[-(len(HEAD_END) - 1) :]
                sink.write(data)
                await sink.drain()

    async def _downstream(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(CHUNK):
                self.tally.received += len(data)
                sink.write(data)
                await sink.drain()
