"""``GET /sse``: Server-Sent Events (PROTOCOL.md section 4).

A single-channel stream without envelope writes, for each event, bytes built once and shared
by every such subscriber (``id:`` is the event's own cursor). A multi-channel stream's
``id:`` is its own cursor list, so it writes that line itself before the shared body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tidings.exceptions import BrokerUnavailable
from tidings.hub.follow import Tail
from tidings.protocol import sse
from tidings.protocol.cursor import Cursor, format_cursor_list
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.identity import Identity
from tidings.protocol.query import Subscription, parse_flag, parse_subscription
from tidings.server.auth import subscriber
from tidings.server.http import HttpConnection
from tidings.server.logs import stream_opened
from tidings.server.request import Request
from tidings.server.stream import StreamConnection

if TYPE_CHECKING:
    from tidings.server.app import App

SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
)
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


class SSEStream(StreamConnection):
    __slots__ = ("envelope", "order")
    kind = "sse"

    def __init__(
        self, app: App, transport: asyncio.Transport, envelope: bool, identity: Identity
    ) -> None:
        super().__init__(app, transport, identity)
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
            # shared bytes: the hub folds the write count into deliveries, bytes and lag
            if self.envelope:
                self.transport.write(batch.joined("sse-envelope", _event_envelope_bytes))
                self.hub.tally.sse_envelope += 1
            else:
                self.transport.write(batch.joined("sse", _event_plain_bytes))
                self.hub.tally.sse += 1

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        if not self.closed:
            self.app.stats.resets += 1
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

    def drain(self, retry_ms: int) -> None:
        """Ask the client to come back after ``retry_ms`` and end the stream."""
        if not self.closed:
            self.ended = "drain"
            for channel in list(self.tails):
                self.unfollow(channel)  # nothing after the retry: the client resumes elsewhere
            self.transport.write(sse.encode_retry(retry_ms) + b"\n")
            self.transport.close()


def handle_sse(app: App, connection: HttpConnection, request: Request) -> None:
    app.check_origin(request)
    query = request.query()
    subscription = parse_subscription(
        query, app.settings.server.max_channels_per_connection, request.header(b"last-event-id")
    )
    envelope = parse_flag(query, "envelope")
    subscriber(app.tokens, app.settings, request, query.one("token"), subscription.channels)
    if subscription.since is not None:
        _open(app, connection, subscription, envelope, subscription.since)
        return
    heads = _heads_nowait(app, subscription)
    if heads is None:
        app.hub.spawn(_open_async(app, connection, subscription, envelope))
    else:
        _open(app, connection, subscription, envelope, heads)


def _heads_nowait(app: App, subscription: Subscription) -> list[Cursor] | None:
    """Each channel's current cursor, where the broker holds it locally."""
    heads = []
    for channel in subscription.channels:
        page = app.broker.history_nowait(channel, None, 0)
        if page is None:
            return None
        heads.append(page.cursor)
    return heads


async def _open_async(
    app: App, connection: HttpConnection, subscription: Subscription, envelope: bool
) -> None:
    try:
        heads = [(await app.broker.history(c, None, 0)).cursor for c in subscription.channels]
    except BrokerUnavailable as error:
        app.answer_error(connection, error)
        return
    if not connection.closed:
        _open(app, connection, subscription, envelope, heads)


def _open(
    app: App,
    connection: HttpConnection,
    subscription: Subscription,
    envelope: bool,
    start: Sequence[Cursor],
) -> None:
    """Start the stream at the requested cursors (or now), then catch each channel up."""
    opening = SSE_HEADERS + app.cors_headers(connection.current) + b"\r\n"
    opening += sse.encode_stream_open(app.settings.server.sse_retry_ms, format_cursor_list(start))
    transport = connection.transport
    assert transport is not None
    assert connection.current is not None
    stream = SSEStream(app, transport, envelope, connection.current.identity)
    connection.hand_over(stream)
    transport.write(opening)
    stream.watch_token()
    app.stats.opened("sse")
    for index, (channel, cursor) in enumerate(zip(subscription.channels, start, strict=True)):
        tail = Tail(channel, cursor, index)
        stream.order.append(tail)
        tail.backlog = [] if subscription.since else None
        stream.follow(tail)
        stream.present(channel)
    stream_opened(stream, stream.kind)
    if subscription.since:
        for tail in stream.order:
            stream.catch_up(tail)
