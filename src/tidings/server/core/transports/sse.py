"""``GET /sse``: Server-Sent Events (docs/protocol.md section 4).

A single-channel stream without envelope writes, for each event, bytes built once and shared
by every such subscriber (``id:`` is the event's own cursor). A multi-channel stream's
``id:`` is its own cursor list, so it writes that line itself before the shared body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from tidings.brokers.base import HistoryPage
from tidings.exceptions import BrokerUnavailable
from tidings.hub.tail import Tail
from tidings.protocol import sse
from tidings.protocol.cursor import Cursor, format_cursor_list
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.identity import Identity
from tidings.protocol.query import Subscription, parse_flag, parse_subscription
from tidings.server.core.access import subscriber
from tidings.server.core.exchange import Exchange
from tidings.server.core.hooked import ask_then, call_for
from tidings.server.core.logs import stream_opened
from tidings.server.core.request import Request
from tidings.server.core.response import Headers, Response
from tidings.server.core.transports.stream import StreamConnection

if TYPE_CHECKING:
    from tidings.server.core.node import Node

SSE_HEADERS: Headers = [
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
PING = sse.encode_comment("ping")
CLOSE_LINGER_SECONDS = 5.0


def event_bytes(event: Event, envelope: bool) -> bytes:
    """``id:`` + body of a single-channel stream, encoded once per event and format."""
    key = "sse-envelope" if envelope else "sse"
    encoded = event.wire.get(key)
    if encoded is None:
        encoded = sse.encode_id_line(event.id) + body_bytes(event, envelope)
        event.wire[key] = encoded
    return encoded


def _event_plain_bytes(event: Event) -> bytes:
    return event_bytes(event, False)


def _event_envelope_bytes(event: Event) -> bytes:
    return event_bytes(event, True)


def body_bytes(event: Event, envelope: bool) -> bytes:
    key = "sse-body-envelope" if envelope else "sse-body"
    encoded = event.wire.get(key)
    if encoded is None:
        encoded = sse.encode_event_body(event.event, event.as_json() if envelope else event.data)
        event.wire[key] = encoded
    return encoded


def stream_head(node: Node, request: Request) -> Response:
    """The status and headers an event stream opens with."""
    return Response(200, headers=[*SSE_HEADERS, *node.cors_pairs(request)], content_type=None)


# compiled (setup.py), yet open to interpreted subclasses:
# the admin feed (ops/admin.py) subclasses it
@mypyc_attr(allow_interpreted_subclasses=True)
class SSEStream(StreamConnection):
    __slots__ = ("envelope", "order")
    kind = "sse"

    def __init__(self, node: Node, envelope: bool, identity: Identity) -> None:
        super().__init__(node, identity)
        self.envelope = envelope
        self.order: list[Tail] = []

    def data_received(self, data: bytes) -> None:
        """An event-stream client sends nothing after its request; ignore what it does."""

    def cursor_list(self) -> str:
        return format_cursor_list([tail.cursor for tail in self.order])

    def write_event(self, tail: Tail, event: Event) -> None:
        if self.closed:
            return
        if len(self.order) == 1:
            data = event_bytes(event, self.envelope)
        else:
            data = sse.encode_id_line(self.cursor_list()) + body_bytes(event, self.envelope)
        self.transport.write(data)
        self.hub.tally.wrote("sse", 1, len(data))

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        if len(self.order) > 1:
            super().write_batch(tail, batch)
        elif not self.closed:
            # shared bytes: the hub folds the write count into deliveries, bytes and lag; in
            # step, the stream joins the channel's cohort (the hub writes it directly)
            if self.envelope:
                self.transport.write(batch.joined("sse-envelope", _event_envelope_bytes))
                self.hub.tally.sse_envelope += 1
                self.hub.join_cohort(batch, "sse-envelope", _event_envelope_bytes, self, tail)
            else:
                self.transport.write(batch.joined("sse", _event_plain_bytes))
                self.hub.tally.sse += 1
                self.hub.join_cohort(batch, "sse", _event_plain_bytes, self, tail)

    def write_shared(self, data: bytes) -> bool:
        """A cohort member's events (a single-channel stream), one write."""
        if self.closed:
            return False
        self.transport.write(data)
        return True

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        if not self.closed:
            self.node.stats.resets += 1
            self.transport.write(
                sse.encode_reset(reset.channel, str(reset.cursor), reset.reason, self.cursor_list())
            )

    def heartbeat(self, now: float) -> None:
        if not self.lagging and not self.closed:
            self.transport.write(PING)

    def too_slow(self) -> None:
        """Drop the stream at once: the browser resumes from the last ``id:`` it parsed."""
        self.transport.abort()

    def expire(self) -> None:
        """The token's lifetime ended: end the stream with ``retry: 0``.

        The client's next request, with the same token, is refused with 401: it fetches a
        new token and resumes from its last ``id:``. Nothing is wrong with the server, so it
        need not wait the stream's opening ``retry:`` first, during which its events could
        leave history. A stream that does not finish closing within the linger is dropped.
        """
        if self.closed:
            self.transport.abort()
            return
        self.closed = True
        self.ended = "token expired"
        self.transport.write(sse.encode_retry(0) + b"\n")
        self.transport.close()
        self.hub.timers.add(self, CLOSE_LINGER_SECONDS)

    def disconnect(self, reconnect: bool) -> None:
        """``event: tidings.disconnect`` and the end of the stream: with ``reconnect``, a
        ``retry: 0`` (come back at once, from the last ``id:``); without, the token is
        refused from now on, and a browser's own reconnect meets a 401, which ends it."""
        if self.closed:
            return
        self.ended = "disconnected by the server"
        for channel in list(self.tails):
            self.unfollow(channel)  # nothing after the disconnect
        ending = sse.encode_disconnect(reconnect)
        if reconnect:
            ending += sse.encode_retry(0) + b"\n"
        self.transport.write(ending)
        self.transport.close()

    def end_subscription(self, channel: str) -> bool:
        """``event: tidings.unsubscribed``; the stream ends with its last channel. Its
        ``id:`` lists keep the ended channel's last cursor, so that they still match the
        request's channels."""
        if self.closed or channel not in self.tails:
            return False
        self.unfollow(channel)
        self.transport.write(sse.encode_unsubscribed(channel))
        if not self.tails:
            self.ended = "unsubscribed by the server"
            self.transport.close()
        return True

    def drain(self, retry_ms: int) -> None:
        """Ask the client to come back after ``retry_ms`` and end the stream."""
        if not self.closed:
            self.ended = "drain"
            for channel in list(self.tails):
                self.unfollow(channel)  # nothing after the retry: the client resumes elsewhere
            self.transport.write(sse.encode_retry(retry_ms) + b"\n")
            self.transport.close()


def handle_sse(node: Node, exchange: Exchange, request: Request) -> None:
    node.check_origin(request)
    query = request.query()
    server = node.settings.server
    subscription = parse_subscription(
        query,
        server.max_channels_per_connection,
        request.header(b"last-event-id"),
        server.max_rewind,
    )
    envelope = parse_flag(query, "envelope")
    hooked = subscriber(
        node.tokens,
        node.settings,
        request,
        query.one("token"),
        subscription.channels,
        node.hooks_on,
    )
    if hooked:
        call = call_for(node, request, "subscribe", hooked, "sse")
        ask_then(node, exchange, request, call, handle_sse)
        return
    if subscription.since is not None:
        _open(node, exchange, subscription, envelope, subscription.since)
        return
    pages = _starts_nowait(node, subscription)
    if pages is None:
        node.hub.spawn(_open_async(node, exchange, subscription, envelope))
    else:
        _open_from(node, exchange, subscription, envelope, pages)


def _starts_nowait(node: Node, subscription: Subscription) -> list[HistoryPage] | None:
    """Each channel's current cursor (and its last ``rewind`` events), where the broker
    holds them locally."""
    pages = []
    for channel in subscription.channels:
        if subscription.rewind:
            page = node.broker.recent_nowait(channel, subscription.rewind)
        else:
            page = node.broker.history_nowait(channel, None, 0)
        if page is None:
            return None
        pages.append(page)
    return pages


async def _open_async(
    node: Node, exchange: Exchange, subscription: Subscription, envelope: bool
) -> None:
    reads, rewind = node.hub.reads, subscription.rewind
    try:
        pages = [
            await (reads.recent(c, rewind) if rewind else reads.history(c, None, 0))
            for c in subscription.channels
        ]
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    if not exchange.closed:
        _open_from(node, exchange, subscription, envelope, pages)


def _open_from(
    node: Node,
    exchange: Exchange,
    subscription: Subscription,
    envelope: bool,
    pages: Sequence[HistoryPage],
) -> None:
    """From now (each page a head), or rewound: from before each page's events, which are
    then written first."""
    if subscription.rewind:
        _open(node, exchange, subscription, envelope, [p.before() for p in pages], pages)
    else:
        _open(node, exchange, subscription, envelope, [p.cursor for p in pages])


def _open(
    node: Node,
    exchange: Exchange,
    subscription: Subscription,
    envelope: bool,
    start: Sequence[Cursor],
    rewound: Sequence[HistoryPage] = (),
) -> None:
    """Start the stream at the requested cursors (or now, or rewound), then catch each
    channel up: from history after its cursor, or from the events a rewind read."""
    request = exchange.current
    assert request is not None
    stream = SSEStream(node, envelope, request.identity)
    transport = exchange.start_stream(stream, stream_head(node, request))
    transport.write(
        sse.encode_stream_open(node.settings.server.sse_retry_ms, format_cursor_list(start))
    )
    stream.watch_token()
    node.stats.opened("sse")
    catching_up = bool(subscription.since) or bool(rewound)
    for index, (channel, cursor) in enumerate(zip(subscription.channels, start, strict=True)):
        tail = Tail(channel, cursor, index)
        stream.order.append(tail)
        tail.backlog = [] if catching_up else None
        stream.follow(tail)
        stream.present(channel)
    stream_opened(stream, stream.kind)
    if subscription.since:
        for tail in stream.order:
            stream.catch_up(tail)
    for tail, page in zip(stream.order, rewound, strict=False):
        stream.catch_up(tail, page)
