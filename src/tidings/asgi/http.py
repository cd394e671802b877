"""The ASGI edge for HTTP: one exchange per request, and the writer of an event stream.

A request is read whole (its body bounded by the route's limit), dispatched to the same
routes as the standalone server, and its answer sent as ASGI messages. A long poll is held
with the node's timer wheel; a task waits for ``http.disconnect`` so that a client that
leaves releases its poll at once. An SSE stream's bytes go through a :class:`QueueSink`.
"""

from __future__ import annotations

import asyncio
import logging

from tidings.asgi.sink import QueueSink
from tidings.asgi.types import Receive, Scope, Send
from tidings.exceptions import TooLarge
from tidings.protocol.http import error_body
from tidings.protocol.identity import Identity
from tidings.server.core.exchange import Exchange, Held, Session, Sink
from tidings.server.core.limits import CONNECTION_RETRY_SECONDS, Limits, forwarded_for
from tidings.server.core.node import Node
from tidings.server.core.request import Request
from tidings.server.core.response import Headers, Response
from tidings.server.core.routes import Routes

log = logging.getLogger("tidings.asgi")


class AsgiExchange(Exchange):
    """One HTTP request over ASGI, answered through the core's :class:`Exchange` calls."""

    __slots__ = (
        "_done",
        "_held",
        "address",
        "client",
        "node",
        "response",
        "stream",
    )

    def __init__(
        self, node: Node, request: Request, address: str, client: tuple[str, int] | None = None
    ) -> None:
        self.node = node
        self.client = client  # the ASGI scope's (host, port)
        self.current: Request | None = request
        # the client's: counted by the per-address limit while the request lasts (where that
        # limit is on), and named in the log lines of the stream it may become
        self.address = address
        self.closed = False
        self.response: Response | None = None
        self.stream: tuple[Session, Response, QueueSink] | None = None
        self._held: Held | None = None
        self._done = asyncio.Event()

    @property
    def kind(self) -> str:
        return "http" if self._held is None else "long_poll"

    def admit(self, request: Request) -> None:
        """Counted as the request arrived (``admission``): nothing more to do."""

    def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Headers | None = None,
        content_type: bytes | None = b"application/json",
    ) -> int:
        return self.answer(Response(status, body, headers or [], content_type))

    def answer(self, response: Response) -> int:
        if self.closed or self._done.is_set():
            return 0
        request = self.current
        if self.node.draining and request is not None and scope_http11(request):
            # as on the standalone edge: a proxy must not reuse a draining node's connection
            response = Response(
                response.status, response.body, [*response.headers, CLOSE], response.content_type
            )
        self.response = response
        self._done.set()
        return len(response.body)

    def hold(self, held: Held, timeout: float) -> None:
        self._held = held
        if self.node.draining:
            held.expire()  # nothing will come from this node: re-poll elsewhere now
            return
        self.node.hub.timers.add(self, timeout)

    def release(self) -> None:
        self._held = None
        self.node.hub.timers.discard(self)

    def expire(self) -> None:
        """The held poll's time is up."""
        if self._held is not None:
            self._held.expire()

    def drain(self, retry_ms: int) -> None:
        """The node drains: a held long poll is answered now, as its timeout would."""
        if self._held is not None:
            self._held.expire()

    def start_stream(self, session: Session, head: Response) -> Sink:
        sink = QueueSink(session, self.node.settings.server.write_buffer_limit, self.client)
        session.address, self.address = self.address, ""
        session.transport = sink
        self.stream = (session, head, sink)
        self.node.connections.discard(self)
        self._done.set()
        return sink

    def accept_websocket(self, identity: Identity) -> Session | None:
        body = error_body("invalid_field", "GET /ws needs a WebSocket upgrade")
        self.respond(400, body)
        return None

    def client_left(self) -> None:
        self.closed = True
        if self._held is not None:
            self._held.cancel()
        self._done.set()

    async def answered(self) -> None:
        await self._done.wait()


CLOSE = (b"Connection", b"close")


def scope_http11(request: Request) -> bool:
    return request.http_version == "1.1"


def request_from(scope: Scope, body: bytes, limits: Limits | None = None) -> Request:
    """The core's request for an ASGI scope, its path relative to where the app is mounted.

    With ``limits``, a peer listed in ``server.trusted_proxies`` speaks for the client its
    ``X-Forwarded-For`` names, as on the standalone edge.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query: bytes = scope.get("query_string", b"")
    target = path.encode("utf-8") + (b"?" + query if query else b"")
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    headers = [(bytes(name), bytes(value)) for name, value in scope.get("headers", [])]
    method = scope.get("method", "GET")
    if limits is not None and limits.is_proxy(peer):
        peer = limits.proxies.client_address(peer, forwarded_for(headers))
    return Request(
        method,
        target,
        headers,
        body,
        False,
        peer,
        upgrade=scope["type"] == "websocket",
        http_version=scope.get("http_version", "1.1"),
    )


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, at most ``limit`` bytes (else TooLarge); None if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def client_of(scope: Scope) -> tuple[str, int] | None:
    client = scope.get("client")
    return (str(client[0]), int(client[1])) if client else None


def admission(node: Node, peer: str) -> Response | None:
    """Connection limits, as the standalone edge applies them at accept."""
    limits = node.limits
    retry = [(b"Retry-After", str(CONNECTION_RETRY_SECONDS).encode())]
    if limits.max_connections and len(node.connections) >= limits.max_connections:
        node.stats.refused("max_connections")
        body = error_body("unavailable", "the server is at its connection limit")
        return Response(503, body, retry)
    if limits.max_per_address and not limits.acquire(peer):
        node.stats.refused("max_connections_per_address")
        message = f"at most {limits.max_per_address} connections from one address"
        return Response(429, error_body("rate_limited", message), retry)
    return None


def start_message(response: Response) -> dict[str, object]:
    return {
        "type": "http.response.start",
        "status": response.status,
        "headers": response.header_pairs(),
    }


async def send_response(send: Send, response: Response) -> None:
    start = start_message(response)
    body = b""
    if response.status not in (204, 304):
        body = response.body
        start["headers"] = [*response.header_pairs(), (b"Content-Length", str(len(body)).encode())]
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def serve_http(
    node: Node, routes: Routes, scope: Scope, receive: Receive, send: Send
) -> None:
    head = request_from(scope, b"")
    limit = routes.body_limit(head.path.encode("utf-8"))
    try:
        declared = head.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"request body is over {limit} bytes")  # refused from its head
        body = await read_body(receive, limit)
    except TooLarge as error:
        node.stats.refused("too_large")
        await send_response(send, Response(413, error_body(error.code, error.message)))
        return
    if body is None:
        return
    request = request_from(scope, body, node.limits)
    refusal = admission(node, request.peer)
    if refusal is not None:
        await send_response(send, refusal)
        return
    exchange = AsgiExchange(node, request, request.peer, client_of(scope))
    node.connections.add(exchange)
    try:
        await _exchange(routes, exchange, request, receive, send)
    finally:
        node.connections.discard(exchange)
        node.limits.release(exchange.address)
        node.hub.timers.discard(exchange)


async def _exchange(
    routes: Routes, exchange: AsgiExchange, request: Request, receive: Receive, send: Send
) -> None:
    routes.dispatch(exchange, request)
    if exchange.response is None and exchange.stream is None:
        watcher = asyncio.ensure_future(_disconnected(receive))
        answered = asyncio.ensure_future(exchange.answered())
        try:
            await asyncio.wait((watcher, answered), return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            if watcher.done():
                exchange.client_left()
            else:
                watcher.cancel()
        if exchange.closed:
            return
    if exchange.stream is not None:
        session, head, sink = exchange.stream
        if scope_http11(request):
            # a stream's end is the end of its connection, as on the standalone edge: a
            # client (and a proxy) must not reuse it, and sees the server close it
            head = Response(head.status, head.body, [*head.headers, CLOSE], head.content_type)
        await run_stream(session, head, sink, receive, send)
    elif exchange.response is not None:
        exchange.closed = True
        await send_response(send, exchange.response)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_stream(
    session: Session, head: Response, sink: QueueSink, receive: Receive, send: Send
) -> None:
    """Send the head, then what the session writes, until either side ends the stream.

    An abort (a slow consumer, a drain's deadline) or the client leaving stops the writer at
    once, even while a ``send`` waits on a client that does not read: the session is then
    gone from the node straight away, as when an asyncio transport is aborted.
    """
    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(lambda _: sink.lost())
    writer = asyncio.ensure_future(_write(head, sink, send))
    ended = asyncio.ensure_future(sink.ended.wait())
    error: BaseException | None = None
    try:
        await asyncio.wait((writer, ended), return_when=asyncio.FIRST_COMPLETED)
        if writer.done() and not writer.cancelled():
            error = writer.exception()
    finally:
        for task in (watcher, writer, ended):
            task.cancel()
        await asyncio.gather(watcher, writer, ended, return_exceptions=True)
        session.connection_lost(error if isinstance(error, Exception) else None)


async def _write(head: Response, sink: QueueSink, send: Send) -> None:
    await send(start_message(head))
    while (chunk := await sink.next_chunk()) is not None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sink.sent()
    if not sink.gone:
        await send({"type": "http.response.body", "body": b""})
