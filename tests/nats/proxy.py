"""A TCP proxy in front of nats-server that keeps chosen subscriptions from coming up.

It reads what the client sends, operation by operation (the NATS client protocol: a line,
and for ``PUB``/``HPUB`` a payload of the size the line states). A ``SUB`` whose subject
starts with ``subjects`` is treated as ``mode`` says:

- ``"pass"``: forwarded, as everything else always is;
- ``"cut"``: the connection is cut at once, as a middlebox that forbids it would;
- ``"drop"``: swallowed, so the server never hears of it and the connection stays up, as a
  subscription the server does not honour (a permission the account lacks) behaves.

What the server sends is passed through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "cut", "drop"]


class SubscriptionProxy:
    def __init__(self, upstream_port: int, subjects: str) -> None:
        self.upstream_port = upstream_port
        self.subjects = subjects.encode()
        self.mode: Mode = "pass"
        self.refused = 0  # SUBs cut or dropped
        self._refusal = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def refusal(self, timeout: float = 10.0) -> None:
        """Wait until a subscription has been refused since the last wait."""
        await asyncio.wait_for(self._refusal.wait(), timeout)
        self._refusal.clear()

    async def start(self) -> SubscriptionProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._upstream(reader, up_writer, writer)),
            loop.create_task(_downstream(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
            for end in (writer, up_writer):
                end.transport.abort()
                self._writers.discard(end)

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        server: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                line = await reader.readuntil(b"\r\n")
                words = line.split()
                op = words[0].upper() if words else b""
                if op in (b"PUB", b"HPUB"):
                    line += await reader.readexactly(int(words[-1]) + 2)
                elif op == b"SUB" and words[1].startswith(self.subjects) and self.mode != "pass":
                    self.refused += 1
                    self._refusal.set()
                    if self.mode == "cut":
                        client.transport.abort()
                        return
                    continue
                server.write(line)
                await server.drain()


async def _downstream(reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            client.write(chunk)
            await client.drain()
