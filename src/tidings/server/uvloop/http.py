"""One HTTP/1.1 connection: httptools parses, routes answer, one request at a time.

Pipelined requests queue behind the one being answered, so answers leave in order. A
request that turns into a stream (SSE) or a WebSocket hands the transport to a smaller
protocol object with ``transport.set_protocol``: the parser is dropped, and an idle stream
holds little more than its transport.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable
from typing import cast

import httptools

from tidings.protocol.http import build_error, is_header, status_line
from tidings.protocol.identity import Identity
from tidings.server.core.exchange import Exchange, Held, Session, Sink
from tidings.server.core.limits import forwarded_for
from tidings.server.core.logs import http_closed, http_opened
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.core.peers import PeersView
from tidings.server.core.request import Request
from tidings.server.core.response import Response
from tidings.server.core.routes import Routes
from tidings.server.core.transports.websocket import websocket_opened
from tidings.server.uvloop.websocket import FrameSocket, handshake

ReadHead = Callable[[bytes, int], tuple[str, bytes, list[tuple[bytes, bytes]], int] | None]
read_head: ReadHead | None
try:  # built with the compiled modules (setup.py); without it httptools reads every head
    from tidings.server.uvloop._heads import read_head
except ImportError:
    read_head = None

log = logging.getLogger("tidings.http")

MAX_PIPELINED = 32
# Linux: drop a connection whose written data stays unacknowledged this long (a peer that
# vanished without a FIN), instead of the kernel's retransmissions for some fifteen minutes.
TCP_USER_TIMEOUT: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)
HEAD_TOO_LARGE = "request line and headers are too large"


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing and answer with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Edge:
    """What every connection of the standalone server shares."""

    def __init__(
        self,
        node: Node,
        files: StaticFiles,
        socket_class: type[FrameSocket] = FrameSocket,
        peers: PeersView | None = None,
    ) -> None:
        self.node = node
        self.routes = Routes(node, files, peers)
        self.max_header_bytes = node.settings.server.max_header_bytes
        self.read_timeout = node.settings.server.read_timeout_seconds
        self.socket_class = socket_class  # what /ws speaks: the protocol, or the test echo

    def protocol_factory(self) -> HttpConnection:
        return HttpConnection(self)


class HttpConnection(Exchange):
    """The standalone edge's connection: uvloop's protocol for it, and the exchange of the
    request it is answering (``current``).

    uvloop takes any object with the protocol's methods; this one is compiled, and its base
    is the core's :class:`Exchange`, so that the handlers' calls on it are native ones.
    """

    __slots__ = (
        "_alarm",
        "_body",
        "_body_limit",
        "_busy",
        "_deadline",
        "_head_bytes",
        "_headers",
        "_in_message",
        "_queue",
        "_reading_paused",
        "_url",
        "address",
        "edge",
        "ended",
        "held",
        "node",
        "opened_at",
        "parser",
        "peer",
        "proxied",
        "transport",
    )

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.node = edge.node
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = None
        self.peer = ""
        self.address = ""  # the client's address, counted by the per-address limit
        self.proxied = False  # the peer is a trusted proxy speaking for others
        self.closed = False
        self.current: Request | None = None
        self.held: Held | None = None
        self.opened_at = 0.0  # set only when connection lines are logged
        self.ended: str | None = None  # why the server ended it; None: the client did
        self._busy = False
        self._deadline = math.inf
        self._alarm = math.inf
        self._in_message = False
        self._reading_paused = False  # this connection paused its transport's reading
        # pipelined requests waiting their turn: a list (56 bytes empty, a deque 760), as
        # MAX_PIPELINED bounds it
        self._queue: list[Request] = []
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] | None = None  # its chunks, once one came
        self._body_limit: int | None = None  # the path's, once a length or a body comes

    # the asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unix"
        limits = self.node.limits
        self.proxied = limits.is_proxy(self.peer)
        refusal = limits.admit(self.peer, self.proxied, len(self.node.connections))
        if refusal is not None:  # answered before any request: nothing is parsed or kept
            self.closed = True
            self.transport.write(refusal)
            self.transport.close()
            return
        self.address = "" if self.proxied else self.peer  # a proxy's clients: per request
        self.transport.set_write_buffer_limits(high=self.node.settings.server.write_buffer_limit)
        if TCP_USER_TIMEOUT is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, self.node.dead_peer_ms)
        self.parser = httptools.HttpRequestParser(self)
        self.node.connections.add(self)
        http_opened(self, self.node.loop.time())
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        http_closed(self, self.node.loop.time(), exc)
        self.node.limits.release(self.address)
        self.node.connections.discard(self)
        self.node.hub.timers.discard(self)
        if self.held is not None:
            self.held.cancel()

    def eof_received(self) -> bool:
        """The client sent FIN: close, as ``asyncio.Protocol`` does by default."""
        return False

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            return
        reader = read_head
        if reader is not None and not self._in_message:
            data = self._read_plain_heads(reader, data)
            if not data or self.parser is None:
                return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as error:
            refusal = error.__context__
            if isinstance(refusal, _Refuse):
                if refusal.code == "too_large":
                    self.node.stats.refused("too_large")
                self.refuse(refusal.status, refusal.code, refusal.message)
            else:
                log.error("error while parsing a request", exc_info=refusal)
                self.refuse(500, "internal", "the server failed to read the request")
        except httptools.HttpParserError as error:
            self.refuse(400, "invalid_field", f"malformed HTTP request: {error}")

    def _read_plain_heads(self, reader: ReadHead, data: bytes) -> bytes:
        """Take the plain request heads at the start of ``data`` (``_heads.read_head``: a GET,
        HEAD or OPTIONS of HTTP/1.1 with no body that keeps the connection, whole); what
        follows is httptools' to read.

        Only heads under half of ``server.max_header_bytes`` are taken: the limit's count
        (the target and each header with four bytes more) stays within 1.2 times a head's
        length, so a head taken here is one that httptools would not refuse as too large.
        """
        start = 0
        most = self.edge.max_header_bytes // 2
        while not self.closed:
            head = reader(data, start)
            if head is None:
                break
            method, target, headers, end = head
            if end - start > most:
                break
            start = end
            self._take(Request(method, target, headers, b"", True, self._client(headers)))
            if start == len(data):
                return b""
        return data[start:] if start else data

    def _await_request(self) -> None:
        """Give the client ``read_timeout_seconds`` to send its next request.

        The deadline is a number checked when the wheel fires, so answering a request and
        waiting for the next costs no timer operation; the wheel holds one entry at most.
        """
        self._set_deadline(self.edge.read_timeout)

    def _set_deadline(self, timeout: float) -> None:
        """Move the deadline; touch the wheel only if its entry would fire too late."""
        now = self.node.loop.time()
        self._deadline = now + timeout
        if self._deadline < self._alarm:
            self._alarm = self._deadline
            self.node.hub.timers.add(self, timeout)

    def expire(self) -> None:
        """The read deadline passed: an idle keep-alive closes, a half-sent request gets 408."""
        self._alarm = math.inf
        remaining = self._deadline - self.node.loop.time()
        if remaining == math.inf or self.closed:
            return  # a request is being answered: no deadline until it is done
        if remaining > 0:
            self._set_deadline(remaining)
            return
        self._deadline = math.inf
        if self.held is not None:
            self.held.expire()
        elif self._in_message:
            self.refuse(408, "invalid_field", "the request was not completely sent in time")
        elif self.transport is not None:
            self.ended = "idle"
            self.transport.close()

    def pause_writing(self) -> None:
        """A reader that lets responses pile up: stop reading its requests until it drains."""
        self._pause_reading()

    def resume_writing(self) -> None:
        if not self._busy:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again, if this connection paused reading: every answer calls it."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = True  # the message's fields were reset as the last one completed

    # The callbacks run for every request: each counts the head inline, without a call.

    def on_url(self, url: bytes) -> None:
        # a URL comes in one piece unless a read split it: no concatenation then
        self._url = self._url + url if self._url else url
        self._head_bytes += len(url)
        if self._head_bytes > self.edge.max_header_bytes:
            raise _Refuse(431, "too_large", HEAD_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.edge.max_header_bytes:
            raise _Refuse(431, "too_large", HEAD_TOO_LARGE)
        if is_header(name, b"content-length"):
            self._declared_length(value)

    def _declared_length(self, value: bytes) -> None:
        """A body declared larger than the path takes is refused before it is read (the
        URL is complete once headers come); the body's own bytes are counted as they come."""
        limit = self._body_limit = self._path_body_limit()
        if value.isdigit() and int(value) > limit:
            raise _Refuse(413, "too_large", f"request body is over {limit} bytes")

    def _path_body_limit(self) -> int:
        return self.edge.routes.body_limit(self._url.partition(b"?")[0])

    def on_body(self, body: bytes) -> None:
        if self._body is None:
            self._body = [body]
        else:
            self._body.append(body)
        limit = self._body_limit
        if limit is None:  # a body with no Content-Length (chunked)
            limit = self._path_body_limit()
        limit -= len(body)
        self._body_limit = limit
        if limit < 0:
            raise _Refuse(413, "too_large", "request body is too large")

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self._in_message = False
        request = Request(
            # llhttp knows only ASCII method names; latin-1 is compiled's fast decoder
            self.parser.get_method().decode("latin-1"),
            self._url,
            self._headers,
            b"" if self._body is None else b"".join(self._body),
            self.parser.should_keep_alive(),
            self._client(self._headers),
            upgrade=self.parser.should_upgrade(),
        )
        self._reset_message()
        self._take(request)

    def _take(self, request: Request) -> None:
        """Answer a complete request now if the connection is idle, else queue it."""
        self._deadline = math.inf  # the wheel entry stays; it ignores a busy connection
        if not self._queue and not self._busy and not request.upgrade and not self.closed:
            self._busy = True  # the connection is idle: answer at once, past the queue
            self.current = request
            self.edge.routes.dispatch(self, request)
            return
        self._queue.append(request)
        if len(self._queue) >= MAX_PIPELINED:
            self._pause_reading()
        if not request.upgrade:
            self._next()

    def _client(self, headers: list[tuple[bytes, bytes]]) -> str:
        """Who sent a request with ``headers``: the peer, or the client a trusted proxy names."""
        if not self.proxied:
            return self.peer
        return self.node.limits.proxies.client_address(self.peer, forwarded_for(headers))

    def admit(self, request: Request) -> None:
        """Count a trusted proxy's connection under the client of ``request``."""
        if self.proxied:
            counted, self.address = self.address, ""
            self.address = self.node.limits.readdress(counted, request.peer)

    @property
    def kind(self) -> str:
        return "http" if self.held is None else "long_poll"

    def hold(self, held: Held, timeout: float) -> None:
        """Keep the current request open until ``held`` answers it or ``timeout`` passes.

        The deadline shares the connection's one wheel entry: holding a long poll costs no
        timer operation.
        """
        self.held = held
        if self.node.drain is not None:
            held.expire()  # nothing will come from this node: re-poll elsewhere now
            return
        self._set_deadline(timeout)

    def release(self) -> None:
        self.held = None
        self._deadline = math.inf

    def _upgrade_requested(self, leftover: bytes) -> None:
        """The parser stopped at an Upgrade request: the rest of the bytes are not HTTP."""
        self.parser = None
        if self._queue:
            self._queue[-1].leftover = leftover
        self._next()

    # answering

    def _next(self) -> None:
        while self._queue and not self._busy and not self.closed:
            self._busy = True
            self.current = self._queue.pop(0)
            self.edge.routes.dispatch(self, self.current)

    def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes | None = b"application/json",
    ) -> int:
        return self.answer(Response(status, body, headers or [], content_type))

    def answer(self, response: Response) -> int:
        current = self.current
        # while the node drains, the last answer says "Connection: close": a proxy must not
        # reuse this connection
        keep_alive = (
            current is not None
            and current.keep_alive
            and (self.node.drain is None or bool(self._queue))
        )
        return self.send(response.http11(keep_alive), keep_alive)

    def send(self, response: bytes, keep_alive: bool = True) -> int:
        """Write a complete response and go on to the next request."""
        if self.closed or self.transport is None:
            return 0
        self.transport.write(response)
        self._busy = False
        self.current = None
        if not keep_alive or self.parser is None:
            self.ended = self.ended or "answered with Connection: close"
            self.transport.close()
            self.closed = True
        elif self._queue:
            self._next()
        elif self.node.drain is not None:
            self.drain(0)
        else:
            self._resume_reading()
            self._set_deadline(self.edge.read_timeout)  # as _await_request, one call less
        return len(response)

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer an error and close: the byte stream can no longer be trusted."""
        if self.closed or self.transport is None:
            return
        self.transport.write(build_error(status, code, message, keep_alive=False))
        self.ended = f"refused: {status} {code}"
        self.transport.close()
        self.closed = True

    def drain(self, retry_ms: int) -> None:
        """The node drains: answer a held long poll now (``204``, as its timeout would), close
        an idle connection; a request being answered finishes and its answer closes."""
        if self.closed or self.transport is None:
            return
        if self.held is not None:
            self.held.expire()
        elif not self._busy and not self._in_message and not self._queue:
            self.ended = "drain"
            self.transport.close()
            self.closed = True

    def start_stream(self, session: Session, head: Response) -> Sink:
        assert self.transport is not None
        self.transport.write(_head(head))
        return self.hand_over(session)

    def accept_websocket(self, identity: Identity) -> FrameSocket | None:
        request = self.current
        assert request is not None
        accepted = handshake(self.node, request)
        if not accepted.opened:
            self.send(accepted.answer, False)
            return None
        session = self.edge.socket_class(self.node, accepted.protocol, identity, accepted.deflate)
        transport = self.hand_over(session)
        transport.write(accepted.answer)
        websocket_opened(session)
        if request.leftover:
            session.data_received(request.leftover)
        return session

    def hand_over(self, protocol: Session) -> asyncio.Transport:
        """Give the transport to a stream or WebSocket protocol; this object is done.

        The stream takes over the client's address and its place in the per-address count.
        """
        assert self.transport is not None
        self.ended = f"upgraded to {protocol.kind}"
        http_closed(self, self.node.loop.time(), None)
        transport = self.transport
        protocol.address, self.address = self.address, ""
        self.closed = True
        self.parser = None
        self._queue.clear()
        self.node.connections.discard(self)
        self.node.hub.timers.discard(self)
        protocol.transport = transport
        transport.set_protocol(protocol)  # type: ignore[arg-type]
        transport.resume_reading()
        return transport


def _head(head: Response) -> bytes:
    """A streamed response's status line and headers: no length, the body follows."""
    lines = [status_line(head.status)]
    lines.extend(name + b": " + value + b"\r\n" for name, value in head.header_pairs())
    lines.append(b"\r\n")
    return b"".join(lines)
