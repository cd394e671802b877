"""A TCP proxy in front of the real server that checks connection tokens as docs/protocol.md 3 says.

Tokens are opaque strings the gate issues (``issue()``), each valid for ``lifetime`` seconds.
A request without a valid one (``Authorization: Bearer`` or ``?token=``) is answered ``401``
with the Tidings error body, a WebSocket upgrade included (before the upgrade); a request
naming a ``forbidden`` channel is ``403``. A WebSocket whose token expires is closed with
``4001`` (between two frames, so the client reads a clean close) and an SSE stream whose token
expires ends; a held poll is answered, and the next one is a ``401``. Every presented token is
recorded with where it came from, so tests check what each transport sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.client.proxy import Listener, _closing, _race

CLOSE_TOKEN_EXPIRED = 4001


@dataclass(frozen=True)
class Presented:
    path: str
    token: str | None
    where: str  # "header", "query" or "none"


def _answer(status: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _close_frame(code: int, reason: bytes) -> bytes:
    payload = struct.pack("!H", code) + reason
    return bytes([0x88, len(payload)]) + payload


def _presented(head: bytes, path: str, query: dict[str, list[str]]) -> Presented:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "authorization" and value.strip().startswith("Bearer "):
            return Presented(path, value.strip()[len("Bearer ") :], "header")
    if "token" in query:
        return Presented(path, query["token"][0], "query")
    return Presented(path, None, "none")


class TokenGate(Listener):
    def __init__(self, upstream_port: int, lifetime: float, forbidden: frozenset[str]) -> None:
        super().__init__(upstream_port)
        self.lifetime = lifetime
        self.forbidden = forbidden
        self.presented: list[Presented] = []
        self.refused: list[Presented] = []
        self.expired_streams = 0
        self._expiry: dict[str, float] = {}
        self._numbers = itertools.count(1)

    def issue(self) -> str:
        token = f"tok-{next(self._numbers)}"
        self._expiry[token] = asyncio.get_running_loop().time() + self.lifetime
        return token

    def _valid(self, token: str | None) -> bool:
        expiry = self._expiry.get(token or "")
        return expiry is not None and asyncio.get_running_loop().time() < expiry

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = urlsplit(head.split(b" ", 2)[1].decode("latin-1"))
        query = parse_qs(target.query)
        presented = _presented(head, target.path, query)
        self.presented.append(presented)
        refusal = self._refusal(presented, query)
        if refusal is not None:
            self.refused.append(presented)
            writer.write(refusal)
            await writer.drain()
            return
        upgrade = b"upgrade: websocket" in head.lower()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.add(up_writer)
        try:
            up_writer.write(head if upgrade else _closing(head))
            expiry = self._expiry[presented.token or ""]
            streaming = upgrade or target.path == "/sse"
            downstream = _frames(up_reader, writer) if upgrade else _bytes(up_reader, writer)
            pumps = [_bytes(reader, up_writer), downstream]
            if streaming:
                pumps.append(self._expire(expiry, writer, upgrade))
            await _race(*pumps)
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    def _refusal(self, presented: Presented, query: dict[str, list[str]]) -> bytes | None:
        if not self._valid(presented.token):
            return _answer("401 Unauthorized", "unauthorized", "the token is missing or expired")
        if self.forbidden.intersection(query.get("channel", [])):
            return _answer("403 Forbidden", "forbidden", "the token does not allow this channel")
        return None

    async def _expire(self, expiry: float, writer: asyncio.StreamWriter, websocket: bool) -> None:
        """At the token's expiry: close the WebSocket with 4001, or end the SSE stream."""
        await asyncio.sleep(max(0.0, expiry - asyncio.get_running_loop().time()))
        self.expired_streams += 1
        if websocket:
            writer.write(_close_frame(CLOSE_TOKEN_EXPIRED, b"token expired"))
        writer.close()  # a clean end, after what was written
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _bytes(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()


async def _frames(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """The ``101`` head, then whole server frames only, so a close can go between two."""
    sink.write(await source.readuntil(b"\r\n\r\n"))
    while True:
        start = await source.readexactly(2)
        length = start[1] & 0x7F
        extended = b""
        if length == 126:
            extended = await source.readexactly(2)
            length = struct.unpack("!H", extended)[0]
        elif length == 127:
            extended = await source.readexactly(8)
            length = struct.unpack("!Q", extended)[0]
        sink.write(start + extended + await source.readexactly(length))
        await sink.drain()


@contextlib.asynccontextmanager
async def token_gate(
    upstream_port: int, lifetime: float = 1.0, forbidden: frozenset[str] = frozenset()
) -> AsyncIterator[TokenGate]:
    running = TokenGate(upstream_port, lifetime, forbidden)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
