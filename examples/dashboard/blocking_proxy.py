"""A stand-in for the proxy of a strict corporate network, between the browser and the app.

It refuses WebSocket upgrades (``403``) and buffers every response before passing it on, as
a proxy that inspects content does: a normal answer arrives whole, an event stream, which
never ends, never arrives at all. Each request gets a connection of its own upstream
(``Connection: close``), so a kept-alive browser connection cannot slip a later request past
these rules. It is an illustration, not a proxy to deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

HEAD_END = b"\r\n\r\n"
REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def start(port: int, upstream_port: int) -> asyncio.Server:
    """Listen on 127.0.0.1:``port`` (0: a free one), forwarding to ``upstream_port``."""
    return await asyncio.start_server(partial(relay, upstream_port), "127.0.0.1", port)


async def relay(
    upstream_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(HEAD_END)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    if b"\r\nupgrade: websocket" in head.lower():
        writer.write(REFUSAL)
        await close(writer)
        return
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        writer.close()
        return
    up_writer.write(closing(head))
    # The request body (if any) goes up as it comes; the browser closing its side (giving up
    # on a stream that shows nothing) closes the upstream connection too.
    await asyncio.gather(pipe(reader, up_writer), buffered(up_reader, writer))


async def buffered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Pass the whole answer on once it has ended, never a byte before."""
    held = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            held += chunk
    with contextlib.suppress(ConnectionError):
        writer.write(held)
    await close(writer)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    await close(writer)


def closing(head: bytes) -> bytes:
    """The request head, asking the server to close the connection after its answer."""
    lines = head[: -len(HEAD_END)].split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close"]) + HEAD_END


async def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        writer.close()
        await writer.wait_closed()
