"""The ``floor`` target of bench/shortpoll.py: the least a Python server can do per poll.

One process, uvloop's event loop, httptools parsing every request on keep-alive connections,
and a fixed answer written back: ``304 Not Modified`` when the request carries
``If-None-Match``, else a fixed ``200``: the bytes of Tidings' answers to a caught-up poll. No
routing, no channel, no cursor: what any Python server on uvloop + httptools pays before it
does any work of its own. Standard library plus uvloop and httptools (Tidings' own
dependencies).

Usage: python floor_server.py PORT   (listens on 127.0.0.1; SIGTERM or SIGINT stops it)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import httptools
import uvloop

# The same headers as Tidings' answers to a caught-up short poll, so only the work differs.
CURSOR = b"jP28yEAX.1"
HEADERS = (
    b'Tidings-Cursor: %s\r\nETag: "%s"\r\nAccess-Control-Allow-Origin: *\r\n'
    b"Access-Control-Expose-Headers: Tidings-Cursor, ETag\r\n" % (CURSOR, CURSOR)
)
BODY_200 = b'{"events":[],"cursor":"%s"}' % CURSOR
ANSWER_200 = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
    % (len(BODY_200), HEADERS, BODY_200)
)
ANSWER_304 = b"HTTP/1.1 304 Not Modified\r\n%s\r\n" % HEADERS


class FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.conditional = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"if-none-match":
            self.conditional = True

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(ANSWER_304 if self.conditional else ANSWER_200)
        self.conditional = False


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        raise SystemExit("usage: floor_server.py PORT")
    uvloop.run(serve(int(sys.argv[1])))
