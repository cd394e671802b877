"""``GET /ws``: the WebSocket transport (PROTOCOL.md section 6).

The ``websockets`` sans-I/O ``ServerProtocol`` does the handshake, reads client frames,
answers pings and runs the closing handshake. Event frames are server frames (never masked),
so they are built once per event and written straight to the transport.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from tidings.brokers.base import HistoryPage
from tidings.exceptions import (
    BrokerUnavailable,
    InvalidField,
    RequestError,
    TooLarge,
    TooManyChannels,
    WebSocketOnlyError,
)
from tidings.hub.follow import PAGE_SIZE, Tail
from tidings.protocol import ws
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.fragments import Fragments, check_utf8
from tidings.protocol.http import build_error
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.server.auth import check_publish, check_subscribe, subscriber
from tidings.server.http import HttpConnection
from tidings.server.limits import count_refusal
from tidings.server.logs import stream_opened, websocket_ending
from tidings.server.request import Request
from tidings.server.stream import StreamConnection

if TYPE_CHECKING:
    from tidings.server.app import App

log = logging.getLogger("tidings.ws")
quiet = logging.getLogger("tidings.ws.protocol")
quiet.setLevel(logging.WARNING)

PING_FRAME = b"\x89\x00"
CLOSE_LINGER_SECONDS = 5.0
TOKEN_EXPIRED = "token expired: fetch a new token and reconnect"
DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
# Close codes the connection fails with when the peer breaks RFC 6455, counted as refusals.
FAILURE_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "ws_protocol_error",
    CloseCode.INVALID_DATA: "ws_invalid_utf8",
    CloseCode.MESSAGE_TOO_BIG: "too_large",
}


class FrameProtocol(ServerProtocol):
    """The ``websockets`` server protocol, letting a close frame end a fragmented message.

    RFC 6455 section 5.4 allows control frames between the fragments of a message; a close
    there is a normal closing handshake that leaves the message unfinished (Autobahn case
    7.1.5), where ``websockets`` fails the connection with 1002.
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None  # the unfinished message is dropped, not an error
        super().recv_frame(frame)


class WebSocketConnection(StreamConnection):
    __slots__ = ("fragments", "last_seen", "protocol", "publishing", "restarting")
    kind = "websocket"

    def __init__(
        self,
        app: App,
        transport: asyncio.Transport,
        protocol: FrameProtocol,
        identity: Identity = ANONYMOUS,
    ) -> None:
        super().__init__(app, transport, identity)
        self.protocol = protocol
        self.fragments: Fragments | None = None
        self.publishing = 0  # publishes awaiting the broker: a drain waits for their answers
        self.restarting = False
        self.last_seen = app.hub.loop.time()

    # reading

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.hub.loop.time()
        failed = self.protocol.parser_exc
        self.protocol.receive_data(data)
        if self.protocol.parser_exc is not failed:
            self._count_failure()
        for frame in self.protocol.events_received():
            # frames read before a close or a failure in the same data are not acted on
            if (
                isinstance(frame, Frame)
                and frame.opcode in DATA_OPCODES
                and self.protocol.state is State.OPEN
            ):
                self._on_data(frame)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        # the close frame the server sent says why, even if the peer then went silent
        self.ended = websocket_ending(self.protocol) or self.ended
        super().connection_lost(exc)

    def _on_data(self, frame: Frame) -> None:
        """Text messages are read whole; a binary one is refused at its first frame."""
        if frame.opcode is Opcode.BINARY:
            self.app.stats.refused("ws_binary")
            self.close(ws.CLOSE_UNSUPPORTED, "binary frames are not supported: send JSON text")
            return
        payload = self._assemble(frame)
        if payload is not None:
            self._on_text(payload)

    def _assemble(self, frame: Frame) -> bytes | None:
        """The whole message once its last frame is in; ``None`` until then or if it failed."""
        data = bytes(frame.data)
        try:
            if self.fragments is None:
                if frame.fin:
                    if frame.opcode is Opcode.TEXT:
                        check_utf8(data)
                    return data
                self.fragments = Fragments(frame.opcode is Opcode.TEXT)
            self.fragments.add(data, frame.fin)
        except UnicodeDecodeError as error:
            self.fragments = None
            self.protocol.fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {error.start}")
            self._count_failure()
            return None
        if not frame.fin:
            return None
        payload = self.fragments.join()
        self.fragments = None
        return payload

    def _count_failure(self) -> None:
        """Count a connection failed for what the peer sent, by the close code it got."""
        sent = self.protocol.close_sent
        if sent is not None and sent.code in FAILURE_REASONS:
            self.app.stats.refused(FAILURE_REASONS[sent.code])

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def _flush(self) -> None:
        """Write what the protocol wants sent; a close it started ends the transport."""
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif not self.transport.is_closing():
                self.transport.close()
        if self.protocol.state is State.CLOSED and not self.transport.is_closing():
            self.transport.close()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; drop the connection if the peer never finishes it."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        self.hub.timers.add(self, CLOSE_LINGER_SECONDS)
        for channel in list(self.tails):
            self.unfollow(channel)

    def _on_text(self, payload: bytes) -> None:
        try:
            message = ws.parse_client_message(payload)
        except ws.MessageError as error:
            self._error(error.ref, error.error)
            return
        try:
            self._dispatch(message)
        except RequestError as error:
            self._error(getattr(message, "ref", None), error)

    def _dispatch(self, message: ws.ClientMessage) -> None:
        if isinstance(message, ws.Subscribe):
            self._subscribe(message)
        elif isinstance(message, ws.Unsubscribe):
            self._unsubscribe(message)
        elif isinstance(message, ws.Publish):
            self._publish(message)
        elif isinstance(message, ws.PresenceQuery):
            self._presence(message)
        else:
            self.send(ws.pong_frame(message.ref))

    def _error(self, ref: ws.Ref, error: RequestError) -> None:
        count_refusal(self.app.stats, error)
        self.send(ws.error_frame(ref, error.code, error.message))

    # requests

    def _subscribe(self, message: ws.Subscribe) -> None:
        if self.app.tokens is not None:
            check_subscribe(self.app.settings, self.identity, message.channel)
        if message.channel in self.tails:
            raise WebSocketOnlyError(
                "already_subscribed", f"already subscribed to {message.channel!r}"
            )
        if len(self.tails) >= self.app.settings.server.max_channels_per_connection:
            raise TooManyChannels(
                f"at most {self.app.settings.server.max_channels_per_connection} channels"
                " per connection"
            )
        tail = Tail(message.channel, message.since or Cursor("", 0))
        tail.backlog = []
        self.follow(tail)
        page = self.app.broker.history_nowait(message.channel, message.since, PAGE_SIZE)
        if page is None:
            self.hub.spawn(self._subscribe_async(message, tail))
        else:
            self._start(message, tail, page)

    async def _subscribe_async(self, message: ws.Subscribe, tail: Tail) -> None:
        try:
            page = await self.app.broker.history(message.channel, message.since, PAGE_SIZE)
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            self.unfollow(message.channel)
            self.send(ws.error_frame(message.ref, error.code, error.message))
            return
        if self.tails.get(message.channel) is tail:
            self._start(message, tail, page)

    def _start(self, message: ws.Subscribe, tail: Tail, page: HistoryPage) -> None:
        if message.since is None:
            tail.move_to(page.cursor)
            self.send(ws.subscribed_frame(message.ref, message.channel, page.cursor, None))
        else:
            recovered = page.reset is None
            self.send(ws.subscribed_frame(message.ref, message.channel, message.since, recovered))
        self.catch_up(tail, page if message.since is not None else None)
        self.present(message.channel)

    def _unsubscribe(self, message: ws.Unsubscribe) -> None:
        if message.channel not in self.tails:
            raise WebSocketOnlyError("not_subscribed", f"not subscribed to {message.channel!r}")
        self.unfollow(message.channel)
        self.send(ws.unsubscribed_frame(message.ref, message.channel))

    def _publish(self, message: ws.Publish) -> None:
        check_publish(self.app.tokens, self.app.settings, self.identity, message.channel)
        self.app.limits.check_publish(self.address, self.hub.loop.time())
        limit = self.app.settings.server.max_message_bytes
        if len(message.data) > limit:
            raise TooLarge(f"data is {len(message.data)} bytes; at most {limit} allowed")
        if self.restarting:
            message_text = "the server is restarting: publish again once reconnected"
            self.send(ws.error_frame(message.ref, "unavailable", message_text))
            return
        self.publishing += 1
        self.hub.spawn(self._publish_async(message))

    async def _publish_async(self, message: ws.Publish) -> None:
        try:
            event = await self.app.broker.publish(
                message.channel, message.event, message.data, message.idempotency_key
            )
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            self.send(ws.error_frame(message.ref, error.code, error.message))
        else:
            self.app.stats.published += 1
            self.send(ws.published_frame(message.ref, message.channel, event.id))
        finally:
            self.publishing -= 1
            if self.restarting and not self.publishing:
                self._restart()

    def _presence(self, message: ws.PresenceQuery) -> None:
        channel = message.channel
        if not self.hub.presence.enabled(channel):
            self.app.stats.refused("presence_disabled")
            raise WebSocketOnlyError(
                "presence_disabled", f"presence is not enabled for channel {channel!r}"
            )
        check_subscribe(self.app.settings, self.identity, channel)  # private presence too
        self.hub.spawn(self._presence_async(message))

    async def _presence_async(self, message: ws.PresenceQuery) -> None:
        try:
            entries = await self.hub.presence.clients(message.channel)
        except BrokerUnavailable as error:
            self.send(ws.error_frame(message.ref, error.code, error.message))
            return
        self.send(ws.presence_frame(message.ref, message.channel, entries))

    def present(self, channel: str) -> None:
        """Present, and told of others' joins and leaves (PROTOCOL.md section 6)."""
        self.hub.presence.join(channel, self, self.identity, self)

    # writing

    def send(self, frame: bytes) -> None:
        if self.protocol.state is State.OPEN and not self.closed:
            self.transport.write(frame)

    def write_event(self, tail: Tail, event: Event) -> None:
        if self.protocol.state is State.OPEN and not self.closed:
            frame = ws.event_frame(event)
            self.transport.write(frame)
            self.hub.tally.wrote("websocket", 1, len(frame))

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        # the hot path of WebSocket fan-out: one shared frame run, one write, one count
        if not self.closed and self.protocol.state is State.OPEN:
            self.transport.write(batch.joined("ws", ws.event_frame))
            self.hub.tally.ws += 1

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        self.app.stats.resets += 1
        self.send(ws.reset_frame(reset))

    def heartbeat(self, now: float) -> None:
        """Ping; a peer silent for a heartbeat plus the ping timeout is dead."""
        server = self.app.settings.server
        if now - self.last_seen > server.heartbeat_seconds + server.ws_ping_timeout_seconds:
            self.ended = "heartbeat timeout"
            self.transport.abort()
        elif self.protocol.state is State.OPEN:
            self.transport.write(PING_FRAME)

    def expire(self) -> None:
        """An open connection's token ran out (4001); a closing one lingered too long."""
        if self.protocol.state is State.OPEN:
            self.close(ws.CLOSE_TOKEN, TOKEN_EXPIRED)
        else:
            self.transport.abort()

    def too_slow(self) -> None:
        self.close(ws.CLOSE_TOO_SLOW, "too slow: reconnect and resume from your last cursor")

    def drain(self, retry_ms: int) -> None:
        """Close with 1012, once every publish in flight has its answer (an event stored
        whose ``published`` was lost would make the client publish it again)."""
        self.restarting = True
        if not self.publishing:
            self._restart()

    def _restart(self) -> None:
        self.close(ws.CLOSE_RESTART, "server restarting: reconnect after a short delay")


def handle_websocket(app: App, connection: HttpConnection, request: Request) -> None:
    if not request.upgrade or (request.header(b"upgrade") or "").lower() != "websocket":
        raise InvalidField("GET /ws needs a WebSocket upgrade (Upgrade: websocket)")
    app.check_origin(request)
    identity = ANONYMOUS
    if app.tokens is not None:  # a bad or expired token is a 401 here, before the upgrade
        identity = subscriber(app.tokens, app.settings, request, request.query().one("token"), ())
    response = ServerProtocol(logger=quiet).accept(_handshake_request(request))
    if response.status_code != 101:
        reason = (response.body or b"invalid WebSocket handshake").decode("utf-8", "replace")
        connection.send(build_error(400, "invalid_field", reason.strip(), keep_alive=False), False)
        return
    # A second protocol object, created already OPEN, reads the frames: the handshake's
    # parser would keep the whole request alive for the life of the connection.
    protocol = FrameProtocol(
        state=State.OPEN, max_size=app.settings.server.max_message_bytes + 4096, logger=quiet
    )
    transport = connection.transport
    assert transport is not None
    kind = WebSocketConnection
    if app.settings.server.test_echo:
        # imported here: echo.py builds on this module, and only test runs ever load it
        from tidings.server.echo import EchoConnection

        kind = EchoConnection
    socket = kind(app, transport, protocol, identity)
    connection.hand_over(socket)
    transport.write(response.serialize())
    socket.watch_token()
    app.stats.opened("websocket")
    stream_opened(socket, socket.kind)
    if request.leftover:
        socket.data_received(request.leftover)


def _handshake_request(request: Request) -> WsRequest:
    headers = Headers(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
    )
    return WsRequest(request.target.decode("latin-1"), headers)
