"""The ASGI edge for WebSockets: whole text messages in, the core's frames out as messages.

ASGI exposes messages, not frames: the server under the mount does the framing, the
pings and the closing handshake. A session writes the frames the core built once into a
:class:`QueueSink`; the writer turns each into the message it carries (``websocket.send``
for text, ``websocket.close`` for a close) and drops our pings, since the ASGI server
keeps the connection alive with its own.
"""

from __future__ import annotations

import asyncio
import contextlib

from tidings.asgi.http import AsgiExchange, admission, client_of, request_from
from tidings.asgi.sink import QueueSink
from tidings.asgi.types import Receive, Scope, Send
from tidings.protocol import ws
from tidings.protocol.identity import Identity
from tidings.server.core.limits import Limits
from tidings.server.core.logs import close_reason
from tidings.server.core.node import Node
from tidings.server.core.request import Request
from tidings.server.core.response import Response
from tidings.server.core.routes import Routes
from tidings.server.core.transports.websocket import WebSocketSession, websocket_opened

MESSAGE_SLACK = 4096  # as on the standalone edge: the JSON envelope around max_message_bytes
DENIAL = "websocket.http.response"  # the ASGI extension for an HTTP answer to a handshake


class AsgiSocket(WebSocketSession):
    __slots__ = ()

    def send_close(self, code: int, reason: str) -> None:
        # the ASGI server answers a client's close itself: this close is the server's own
        self.ended = close_reason(code)
        self.transport.write(ws.encode_close_frame(code, reason))

    def heartbeat(self, now: float) -> None:
        """The ASGI server pings and finds dead peers itself."""

    def receive_text(self, text: str) -> None:
        payload = text.encode()
        limit = self.node.settings.server.max_message_bytes + MESSAGE_SLACK
        if len(payload) > limit:
            self.node.stats.refused("too_large")
            self.close(ws.CLOSE_TOO_BIG, f"message over {limit} bytes")
            return
        self.on_message(payload)


def handshake_request(scope: Scope, limits: Limits | None = None) -> Request:
    """The handshake as the core's request, which looks for ``Upgrade: websocket``.

    Over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441), which has no
    ``Upgrade`` header: hypercorn passes it on as a ``websocket`` scope without one, and
    Chromium opens a WebSocket so when it holds an HTTP/2 connection to the server. The ASGI
    server checked the handshake either way.
    """
    request = request_from(scope, b"", limits)
    if request.header(b"upgrade") is None:
        request.headers.append((b"upgrade", b"websocket"))
    return request


class HandshakeExchange(AsgiExchange):
    """The handshake: the routes either refuse it (an HTTP answer) or accept a session."""

    __slots__ = ("session",)

    def __init__(self, node: Node, request_scope: Scope, address: str) -> None:
        request = handshake_request(request_scope, node.limits)
        super().__init__(node, request, address, client_of(request_scope))
        self.session: AsgiSocket | None = None

    def accept_websocket(self, identity: Identity) -> AsgiSocket:
        self.session = AsgiSocket(self.node, identity)
        self.session.address, self.address = self.address, ""
        limit = self.node.settings.server.write_buffer_limit
        self.session.transport = QueueSink(self.session, limit, self.client)
        self._done.set()
        return self.session


async def serve_websocket(
    node: Node, routes: Routes, scope: Scope, receive: Receive, send: Send
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    peer = request_from(scope, b"", node.limits).peer
    refusal = admission(node, peer)
    if refusal is not None:
        await _deny(scope, send, refusal)
        return
    exchange = HandshakeExchange(node, scope, peer)
    request = exchange.current
    assert request is not None
    routes.dispatch(exchange, request)
    if exchange.session is None and exchange.response is None:
        await exchange.answered()  # a hook decides first (it has its own timeout)
    session = exchange.session
    if session is None:
        node.limits.release(exchange.address)
        await _deny(scope, send, exchange.response or Response(500))
        return
    await send({"type": "websocket.accept"})
    websocket_opened(session)
    await _run(session, receive, send)


async def _deny(scope: Scope, send: Send, response: Response) -> None:
    """Answer the handshake with an HTTP status where the server can, else close it."""
    if DENIAL in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": response.status,
                "headers": response.header_pairs(),
            }
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": ws.CLOSE_POLICY})


async def _run(session: AsgiSocket, receive: Receive, send: Send) -> None:
    sink = session.transport
    assert isinstance(sink, QueueSink)
    writer = asyncio.ensure_future(_write(sink, send))
    error: Exception | None = None
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                break
            if kind != "websocket.receive" or session.closed:
                continue
            if message.get("text") is not None:
                session.receive_text(message["text"])
            elif message.get("bytes") is not None:
                session.refuse_binary()
    except OSError as lost:
        error = lost
    finally:
        sink.lost()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await writer
        session.connection_lost(error)


# What a run of frames carries: (text, None) for a text message, (reason, code) for a close.
Carried = list[tuple[str, int | None]]


class LastRun:
    """The messages of the last run of frames taken apart, kept by the identity of its bytes.

    A fan-out writes the same bytes object to every subscriber of an event, and a writer
    that finds one write queued sends that very object: its thousand writers then decode
    it once, not once each. One slot, replaced whole (safe with several mounts in threads).
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[bytes, Carried] = (b"", [])

    def messages(self, chunk: bytes) -> Carried:
        last = self.last
        if last[0] is chunk:
            return last[1]
        carried: Carried = []
        for opcode, payload in ws.server_frames(chunk):
            if opcode == ws.OPCODE_TEXT:
                carried.append((payload.decode(), None))
            elif opcode == ws.OPCODE_CLOSE:
                carried.append((payload[2:].decode(), int.from_bytes(payload[:2], "big")))
        self.last = (chunk, carried)
        return carried


RUNS = LastRun()


async def _write(sink: QueueSink, send: Send) -> None:
    """Send the session's frames as messages; a close frame ends the conversation."""
    while (chunk := await sink.next_chunk()) is not None:
        for text, close_code in RUNS.messages(chunk):
            if close_code is None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.close", "code": close_code, "reason": text})
                return
        sink.sent()
    if not sink.gone:  # ended without a close frame (aborted): end the connection too
        with contextlib.suppress(OSError):
            await send({"type": "websocket.close", "code": ws.CLOSE_GOING_AWAY})
