"""The ``floor`` target of bench/shortpoll.py and bench/fanout.py: the least a Python server
can do per poll.

One process, uvloop's event loop, httptools parsing every request on keep-alive connections.

- Short polls (the default): a fixed answer written back, ``304 Not Modified`` when the
  request carries ``If-None-Match`` with the one ETag, else a fixed ``200``: the bytes of
  Tidings' answers to a caught-up poll. No routing, no channel, no cursor.
- Long polls (``--long-poll``): ``GET`` with ``since=N`` is answered at once with event N+1
  if the server has it, else held; ``POST`` is a publish: its body becomes event N+1, built
  once into the bytes of a Tidings answer (same headers, same JSON shape) and written to
  every held poll. No channel names, no validation, no history past the last 1,024 events.

What any Python server on uvloop + httptools pays before it does any work of its own.
Standard library plus uvloop and httptools (Tidings' own dependencies).

Usage: python floor_server.py PORT [--long-poll]   (listens on 127.0.0.1; SIGTERM or SIGINT
stops it)
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
ETAG = b'"%s"' % CURSOR


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
        if name.lower() == b"if-none-match" and value == ETAG:
            self.conditional = True

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(ANSWER_304 if self.conditional else ANSWER_200)
        self.conditional = False


EVENTS_KEPT = 1024


class Channel:
    """The one channel of the long-poll floor: its last answers and its held polls."""

    def __init__(self) -> None:
        self.last = 0  # the newest event's number; 0: none yet
        self.answers: dict[int, bytes] = {}  # event number -> the answer that carries it
        self.held: list[LongPollFloor] = []

    def publish(self, data: bytes) -> int:
        self.last += 1
        cursor = b"%d" % self.last
        body = (
            b'{"events":[{"channel":"bench","id":"%s","event":"message","data":%s}],'
            % (
                cursor,
                data,
            )
            + b'"cursor":"%s"}' % cursor
        )
        answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b'Tidings-Cursor: %s\r\nETag: "%s"\r\nAccess-Control-Allow-Origin: *\r\n'
            b"Access-Control-Expose-Headers: Tidings-Cursor, ETag\r\n\r\n%s"
            % (len(body), cursor, cursor, body)
        )
        self.answers[self.last] = answer
        self.answers.pop(self.last - EVENTS_KEPT, None)
        held, self.held = self.held, []
        for poll in held:
            poll.write(answer)
        return self.last


PUBLISHED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
EMPTY_CURSOR = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"


class LongPollFloor(asyncio.Protocol):
    """``--long-poll``: hold each ``GET`` until the event after its ``since`` is published."""

    channel = Channel()

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.channel.held:
            self.channel.held.remove(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            assert self.transport is not None
            self.transport.close()

    def write(self, answer: bytes) -> None:
        assert self.transport is not None
        self.transport.write(answer)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        channel = self.channel
        if self.body:  # a publish: {"channel": ..., "data": ...}; its data is the event's
            data = self.body[self.body.index(b'"data":') + 7 : -1]
            self.body = b""
            reply = b'{"channel":"bench","id":"%d"}' % channel.publish(data)
            self.write(PUBLISHED % len(reply) + reply)
            return
        at = self.url.find(b"since=")
        since = int(self.url[at + 6 :].partition(b"&")[0]) if at >= 0 else channel.last
        answer = channel.answers.get(since + 1)
        if answer is not None:
            self.write(answer)
        elif b"timeout=" in self.url:
            channel.held.append(self)
        else:  # /healthz, or a first poll: the cursor to poll from
            body = b'{"events":[],"cursor":"%d"}' % channel.last
            head = EMPTY_CURSOR % len(body) + b"Tidings-Cursor: %d\r\n\r\n" % channel.last
            self.write(head + body)


async def serve(port: int, long_poll: bool = False) -> None:
    loop = asyncio.get_running_loop()
    factory = LongPollFloor if long_poll else FloorProtocol
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    long_poll = "--long-poll" in arguments
    if long_poll:
        arguments.remove("--long-poll")
    if len(arguments) != 1 or not arguments[0].isdigit():
        raise SystemExit("usage: floor_server.py PORT [--long-poll]")
    uvloop.run(serve(int(arguments[0]), long_poll))
