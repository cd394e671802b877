"""``GET /ws``: the WebSocket transport's messages (docs/protocol.md section 6).

A session reads whole text messages and answers with frames built by
:mod:`tidings.protocol.ws`: event frames are server frames (never masked), built once per
event and written to every subscriber as they are. A session whose edge negotiated
permessage-deflate gets the event's compressed frame, also built once per event; its other
messages (answers, errors, presence) go uncompressed, which RFC 7692 allows message by
message: they are small, built for one connection, and compressing each would cost a
compressor per message for a few bytes saved. Reading frames, the handshake and the
closing handshake belong to the edge, which subclasses :class:`WebSocketSession` and
provides :meth:`WebSocketSession.send_close`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from tidings.brokers.base import HistoryPage
from tidings.exceptions import (
    BrokerUnavailable,
    InvalidField,
    RequestError,
    TooLarge,
    TooManyChannels,
    Unavailable,
    WebSocketOnlyError,
)
from tidings.hub.follow import PAGE_SIZE
from tidings.hub.tail import Tail
from tidings.protocol import ws
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.server.core.access import (
    check_publish,
    check_subscribe,
    needs_hook,
    subscriber,
)
from tidings.server.core.exchange import Exchange
from tidings.server.core.hooked import ask_then, call_for
from tidings.server.core.hooks import HookCall, identity_of
from tidings.server.core.limits import count_refusal
from tidings.server.core.logs import stream_opened
from tidings.server.core.request import Request
from tidings.server.core.transports.stream import StreamConnection

if TYPE_CHECKING:
    from tidings.server.core.node import Node

log = logging.getLogger("tidings.ws")

PING_FRAME = b"\x89\x00"
CLOSE_LINGER_SECONDS = 5.0
TOKEN_EXPIRED = "token expired: fetch a new token and reconnect"


# compiled (setup.py), yet open to interpreted subclasses:
# the ASGI edge's socket (asgi/websocket.py) subclasses it
@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketSession(StreamConnection):
    """One WebSocket's subscriptions, requests and answers, whatever carries its frames."""

    __slots__ = ("accepting", "deflate", "forwarded", "last_seen", "publishing", "restarting")
    kind = "websocket"

    def __init__(self, node: Node, identity: Identity = ANONYMOUS, deflate: bool = False) -> None:
        super().__init__(node, identity)
        # permessage-deflate negotiated (the edge's handshake): events go out compressed
        self.deflate = deflate
        self.accepting = True  # open: neither side has started the closing handshake
        self.publishing = 0  # publishes awaiting the broker: a drain waits for their answers
        self.restarting = False
        self.last_seen = node.hub.loop.time()
        self.forwarded: tuple[tuple[str, str], ...] = ()  # the headers the hooks see

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code`` (the edge's framing)."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; drop the connection if the peer never finishes it."""
        if self.accepting:
            self.accepting = False
            self.send_close(code, reason)
        self.hub.timers.add(self, CLOSE_LINGER_SECONDS)
        for channel in list(self.tails):
            self.unfollow(channel)

    def refuse_binary(self) -> None:
        self.node.stats.refused("ws_binary")
        self.close(ws.CLOSE_UNSUPPORTED, "binary frames are not supported: send JSON text")

    def on_message(self, payload: bytes) -> None:
        """A whole text message from the client (UTF-8 already checked)."""
        self.last_seen = self.hub.loop.time()
        self._on_text(payload)

    def _on_text(self, payload: bytes) -> None:
        try:
            message = ws.parse_client_message(payload)
        except ws.MessageError as error:
            self._error(error.ref, error.error)
            return
        try:
            self._dispatch(message)
        except RequestError as refused:  # not `error`: compiled, a name keeps its first type
            self._error(getattr(message, "ref", None), refused)

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
        count_refusal(self.node.stats, error)
        self.send(ws.error_frame(ref, error.code, error.message))

    # requests

    def _subscribe(self, message: ws.Subscribe) -> None:
        if needs_hook(self.node.settings, self.identity, message.channel):
            self._ask("subscribe", message, self._subscribe)
            return
        if self.node.tokens is not None:
            check_subscribe(self.node.settings, self.identity, message.channel)
        if message.channel in self.tails:
            raise WebSocketOnlyError(
                "already_subscribed", f"already subscribed to {message.channel!r}"
            )
        if len(self.tails) >= self.node.settings.server.max_channels_per_connection:
            raise TooManyChannels(
                f"at most {self.node.settings.server.max_channels_per_connection} channels"
                " per connection"
            )
        tail = Tail(message.channel, message.since or Cursor("", 0))
        tail.backlog = []
        self.follow(tail)
        rewind = self._rewind(message)
        if rewind:
            page = self.node.broker.recent_nowait(message.channel, rewind)
        else:
            page = self.node.broker.history_nowait(message.channel, message.since, PAGE_SIZE)
        if page is None:
            self.hub.spawn(self._subscribe_async(message, tail))
        else:
            self._start(message, tail, page)

    def _rewind(self, message: ws.Subscribe) -> int:
        """Past events to start with: none with ``since``, at most ``server.max_rewind``."""
        if message.since is not None:
            return 0
        return min(message.rewind, self.node.settings.server.max_rewind)

    async def _subscribe_async(self, message: ws.Subscribe, tail: Tail) -> None:
        reads, rewind = self.hub.reads, self._rewind(message)
        try:
            if rewind:
                page = await reads.recent(message.channel, rewind)
            else:
                page = await reads.history(message.channel, message.since, PAGE_SIZE)
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            self.unfollow(message.channel)
            self.send(ws.error_frame(message.ref, error.code, error.message))
            return
        if self.tails.get(message.channel) is tail:
            self._start(message, tail, page)

    def _start(self, message: ws.Subscribe, tail: Tail, page: HistoryPage) -> None:
        if message.since is not None:
            recovered = page.reset is None
            self.send(ws.subscribed_frame(message.ref, message.channel, message.since, recovered))
            self.catch_up(tail, page)
        elif self._rewind(message):
            tail.move_to(page.before())  # the rewound events follow ``subscribed``
            self.send(ws.subscribed_frame(message.ref, message.channel, tail.cursor, None))
            self.catch_up(tail, page)
        else:
            tail.move_to(page.cursor)
            self.send(ws.subscribed_frame(message.ref, message.channel, page.cursor, None))
            self.catch_up(tail)
        self.present(message.channel)

    def _unsubscribe(self, message: ws.Unsubscribe) -> None:
        if message.channel not in self.tails:
            raise WebSocketOnlyError("not_subscribed", f"not subscribed to {message.channel!r}")
        self.unfollow(message.channel)
        self.send(ws.unsubscribed_frame(message.ref, message.channel))

    def _publish(self, message: ws.Publish) -> None:
        if self.node.hooks.needs_publish(self.node.settings, self.identity, message.channel):
            self._ask("publish", message, self._publish)
            return
        check_publish(self.node.tokens, self.node.settings, self.identity, message.channel)
        self.node.limits.check_publish(self.address, self.hub.loop.time())
        limit = self.node.settings.server.max_message_bytes
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
            event = await self.node.broker.publish(
                message.channel, message.event, message.data, message.idempotency_key
            )
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            self.send(ws.error_frame(message.ref, error.code, error.message))
        else:
            self.node.stats.published += 1
            self.send(ws.published_frame(message.ref, message.channel, event.id))
        finally:
            self.publishing -= 1
            if self.restarting and not self.publishing:
                self._restart()

    def _ask(self, action: str, message: Any, then: Callable[[Any], None]) -> None:
        """Ask the application's hook about ``message``'s channel, then go on with ``then``."""
        channels = (message.channel,)
        call = HookCall(action, channels, self.kind, self.address, self.forwarded)
        self.hub.spawn(self._asked(call, message, then))

    async def _asked(self, call: HookCall, message: Any, then: Callable[[Any], None]) -> None:
        try:
            allow = await self.node.hooks.ask(call)
            if self.closed:
                return
            self.identity = identity_of(allow, call.channels, self.identity, call.action)
            then(message)
        except RequestError as error:
            self._error(message.ref, error)
        except Unavailable as error:
            self.node.stats.refused("hook_unavailable")
            self.send(ws.error_frame(message.ref, error.code, error.message))

    def _presence(self, message: ws.PresenceQuery) -> None:
        channel = message.channel
        if not self.hub.presence.enabled(channel):
            self.node.stats.refused("presence_disabled")
            raise WebSocketOnlyError(
                "presence_disabled", f"presence is not enabled for channel {channel!r}"
            )
        check_subscribe(self.node.settings, self.identity, channel)  # private presence too
        self.hub.spawn(self._presence_async(message))

    async def _presence_async(self, message: ws.PresenceQuery) -> None:
        try:
            entries = await self.hub.presence.clients(message.channel)
        except BrokerUnavailable as error:
            self.send(ws.error_frame(message.ref, error.code, error.message))
            return
        self.send(ws.presence_frame(message.ref, message.channel, entries))

    def present(self, channel: str) -> None:
        """Present, and told of others' joins and leaves (docs/protocol.md section 6)."""
        self.hub.presence.join(channel, self, self.identity, self)

    # writing

    def send(self, frame: bytes) -> None:
        if self.accepting and not self.closed:
            self.transport.write(frame)

    def write_event(self, tail: Tail, event: Event) -> None:
        if self.accepting and not self.closed:
            frame = ws.deflated_event_frame(event) if self.deflate else ws.event_frame(event)
            self.transport.write(frame)
            self.hub.tally.wrote("websocket", 1, len(frame))

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        # one shared frame run, one write, one count; in step, the connection joins the
        # channel's cohort, and the hub writes it the next batch's frames directly
        if self.accepting and not self.closed:
            if self.deflate:
                self.transport.write(batch.joined("ws-deflate", ws.deflated_event_frame))
                self.hub.tally.ws_deflate += 1
                self.hub.join_cohort(batch, "ws-deflate", ws.deflated_event_frame, self, tail)
            else:
                self.transport.write(batch.joined("ws", ws.event_frame))
                self.hub.tally.ws += 1
                self.hub.join_cohort(batch, "ws", ws.event_frame, self, tail)

    def write_shared(self, data: bytes) -> bool:
        """The hot path of WebSocket fan-out: a cohort member's frames, one write."""
        if self.accepting and not self.closed:
            self.transport.write(data)
            return True
        return False

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        self.node.stats.resets += 1
        self.send(ws.reset_frame(reset))

    def heartbeat(self, now: float) -> None:
        """Ping; a peer silent for a heartbeat plus the ping timeout is dead."""
        server = self.node.settings.server
        if now - self.last_seen > server.heartbeat_seconds + server.ws_ping_timeout_seconds:
            self.ended = "heartbeat timeout"
            self.transport.abort()
        elif self.accepting:
            self.transport.write(PING_FRAME)

    def expire(self) -> None:
        """An open connection's token ran out (4001); a closing one lingered too long."""
        if self.accepting:
            self.close(ws.CLOSE_TOKEN, TOKEN_EXPIRED)
        else:
            self.transport.abort()

    def too_slow(self) -> None:
        self.close(ws.CLOSE_TOO_SLOW, "too slow: reconnect and resume from your last cursor")

    def disconnect(self, reconnect: bool) -> None:
        """Close with 4002 (reconnect) or 4003 (the token is refused: do not reconnect)."""
        if not self.accepting:
            return
        self.ended = "disconnected by the server"
        if reconnect:
            self.close(ws.CLOSE_DISCONNECTED, "disconnected by the server: reconnect and resume")
        else:
            self.close(ws.CLOSE_REVOKED, "disconnected by the server: do not reconnect")

    def end_subscription(self, channel: str) -> bool:
        """``{"op": "unsubscribed", "ref": null, "channel": ..., "reason": "server"}``."""
        if not self.accepting or channel not in self.tails:
            return False
        self.unfollow(channel)
        self.send(ws.server_unsubscribed_frame(channel))
        return True

    def drain(self, retry_ms: int) -> None:
        """Close with 1012, once every publish in flight has its answer (an event stored
        whose ``published`` was lost would make the client publish it again)."""
        self.restarting = True
        if not self.publishing:
            self._restart()

    def _restart(self) -> None:
        self.close(ws.CLOSE_RESTART, "server restarting: reconnect after a short delay")


def handle_websocket(node: Node, exchange: Exchange, request: Request) -> None:
    if not request.upgrade or (request.header(b"upgrade") or "").lower() != "websocket":
        raise InvalidField("GET /ws needs a WebSocket upgrade (Upgrade: websocket)")
    node.check_origin(request)
    if not request.hooked:  # a bad or expired token is a 401 here, before the upgrade
        subscriber(node.tokens, node.settings, request, request.query().one("token"), ())
        if node.hooks.has("connect"):
            call = call_for(node, request, "connect", (), "websocket")
            ask_then(node, exchange, request, call, handle_websocket)
            return
    session = exchange.accept_websocket(request.identity)
    if isinstance(session, WebSocketSession) and node.hooks_on:
        session.forwarded = node.hooks.forwarded_of(request.headers)


def websocket_opened(session: WebSocketSession) -> None:
    """The handshake is done and the session reads: count it, watch its token, log it."""
    session.watch_token()
    session.node.stats.opened("websocket")
    stream_opened(session, session.kind)
