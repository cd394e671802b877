"""``GET /poll``: short and long polling (docs/protocol.md section 5).

A long poll that finds nothing new registers one waiter on its channels and a deadline in
the hub's timer wheel; no task is created. When an event continues a caught-up
single-channel poll exactly, the whole HTTP response is built once per event and the same
bytes answer every such waiter.

A single-channel poll with ``since`` reads history once and is answered from there. Its
answer depends only on what it asked and what history holds, so the node keeps answers by
question (``node.poll_answers``): the polls that are behind by the same events, and the
short polls that find nothing new at the same cursor (``304`` or an empty ``200``), all get
one built response. Answers whose headers depend on the request (restricted CORS origins)
are built for each request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidings.brokers.base import HistoryPage
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.cursor import Cursor, format_cursor_list
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.identity import Identity
from tidings.protocol.poll import etag, poll_body
from tidings.protocol.query import PollRequest, parse_poll
from tidings.server.core.access import subscriber
from tidings.server.core.exchange import Exchange
from tidings.server.core.hooked import ask_then, call_for
from tidings.server.core.request import Request, keep_for_target
from tidings.server.core.response import Response

if TYPE_CHECKING:
    from tidings.server.core.node import Node


@dataclass(slots=True)
class Gathered:
    events: list[Event]
    cursors: list[Cursor]
    resets: list[Reset]


# Parsed polls kept (``keep_for_target``): the keys take 8 MB at most (a target may be as long
# as ``server.max_header_bytes``), and a poll of a longer target (many channels and their
# cursors) is parsed every time.
PARSED_POLLS_KEPT = 4096
PARSED_TARGET_BYTES = 2048


def parsed_poll(node: Node, request: Request) -> PollRequest:
    """Parse a poll's query once per distinct request line.

    Caught-up long pollers of a channel all ask for the same ``since``: under fan-out most
    requests repeat one of a few targets, and their parse is the request's largest cost.
    """
    cache = node.parsed_polls
    poll = cache.get(request.target)
    if poll is None:
        server = node.settings.server
        poll = parse_poll(
            request.query(),
            server.max_channels_per_connection,
            server.max_poll_seconds,
            server.max_rewind,
        )
        keep_for_target(cache, request.target, poll, PARSED_POLLS_KEPT, PARSED_TARGET_BYTES)
    return poll


def handle_poll(node: Node, exchange: Exchange, request: Request) -> None:
    if node.limits.poll is not None and not request.hooked:  # counted once, before a hook
        node.limits.check_poll(request.peer, node.loop.time())
    poll = node.parsed_polls.get(request.target) or parsed_poll(node, request)
    channels = poll.subscription.channels
    hooked = subscriber(node.tokens, node.settings, request, poll.token, channels, node.hooks_on)
    if hooked:
        transport = "long_poll" if poll.timeout > 0 else "poll"
        call = call_for(node, request, "subscribe", hooked, transport)
        ask_then(node, exchange, request, call, handle_poll)
        return
    since = poll.subscription.since
    if since is not None and len(since) == 1:
        page = node.broker.history_nowait(channels[0], since[0], poll.limit)
        if page is not None and page.reset is None:
            if page.events:
                transport = "long_poll" if poll.timeout > 0 else "poll"
                _answer_page(node, exchange, channels[0], since[0], page, transport)
            elif poll.timeout > 0:
                LongPoll(node, exchange, poll, [page.cursor]).wait(poll.timeout)  # caught up
            elif page.cursor is since[0] and poll.since_text is not None:
                # the cursor the poll sent: its text and ETag were made with the parse
                _answer_nothing_new(node, exchange, request, poll.since_text, poll.since_etag)
            else:
                text = page.cursor.text()
                _answer_nothing_new(node, exchange, request, text, etag(text))
            return
    gathered = _gather_nowait(node, poll, since)
    if gathered is None:
        node.hub.spawn(_poll_async(node, exchange, request, poll, since))
    else:
        _answer_or_wait(node, exchange, request, poll, since, gathered)


def _gather_nowait(
    node: Node, poll: PollRequest, since: Sequence[Cursor] | None
) -> Gathered | None:
    rewind = poll.subscription.rewind
    if since is None and rewind:
        recent = [node.broker.recent_nowait(c, rewind) for c in poll.subscription.channels]
        if any(page is None for page in recent):
            return None
        return _rewound([page for page in recent if page is not None], poll.limit)
    pages = []
    remaining = poll.limit
    for index, channel in enumerate(poll.subscription.channels):
        page = node.broker.history_nowait(channel, since[index] if since else None, remaining)
        if page is None:
            return None
        remaining -= len(page.events)
        pages.append(page)
    return _combine(pages)


async def _gather(node: Node, poll: PollRequest, since: Sequence[Cursor] | None) -> Gathered:
    rewind = poll.subscription.rewind
    if since is None and rewind:
        channels = poll.subscription.channels
        return _rewound([await node.hub.reads.recent(c, rewind) for c in channels], poll.limit)
    pages = []
    remaining = poll.limit
    for index, channel in enumerate(poll.subscription.channels):
        page = await node.hub.reads.history(channel, since[index] if since else None, remaining)
        remaining -= len(page.events)
        pages.append(page)
    return _combine(pages)


async def _gather_settled(
    node: Node, poll: PollRequest, since: Sequence[Cursor] | None
) -> Gathered:
    """Read history until no event reached this node during the read.

    An event delivered while the read was in flight woke no waiter (none was registered
    yet) and may or may not be in the answer: reading again settles it, so a poll never
    waits out its timeout with an event already here.
    """
    channels = poll.subscription.channels
    heads = node.hub.heads
    for _ in range(MAX_SETTLE_READS):
        before = [heads.get(channel) for channel in channels]
        gathered = await _gather(node, poll, since)
        if gathered.events or before == [heads.get(channel) for channel in channels]:
            break
    return gathered


MAX_SETTLE_READS = 5


def _rewound(recent: list[HistoryPage], limit: int) -> Gathered:
    """A poll without ``since`` that rewinds: each channel's last events, oldest first, up
    to ``limit`` in all; a channel cut short continues from its last event returned."""
    pages = []
    remaining = limit
    for page in recent:
        events = page.events[: max(remaining, 0)]
        remaining -= len(events)
        pages.append(HistoryPage(events, events[-1].cursor if events else page.before()))
    return _combine(pages)


def _combine(pages: list[HistoryPage]) -> Gathered:
    gathered = Gathered([], [], [])
    for page in pages:
        gathered.events.extend(page.events)
        gathered.cursors.append(page.cursor)
        if page.reset is not None:
            gathered.resets.append(page.reset)
    return gathered


async def _poll_async(
    node: Node,
    exchange: Exchange,
    request: Request,
    poll: PollRequest,
    since: Sequence[Cursor] | None,
) -> None:
    try:
        gathered = await _gather_settled(node, poll, since)
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    if not exchange.closed:
        _answer_or_wait(node, exchange, request, poll, since, gathered)


def _answer_or_wait(
    node: Node,
    exchange: Exchange,
    request: Request,
    poll: PollRequest,
    since: Sequence[Cursor] | None,
    gathered: Gathered,
) -> None:
    if gathered.resets:
        node.stats.resets += len(gathered.resets)
    if gathered.events or gathered.resets:
        _answer(node, exchange, gathered, "long_poll" if poll.timeout > 0 else "poll")
    elif poll.timeout <= 0:
        cursor_list = format_cursor_list(gathered.cursors)
        resumed_etag = None if since is None else etag(cursor_list)
        _answer_nothing_new(node, exchange, request, cursor_list, resumed_etag)
    else:
        LongPoll(node, exchange, poll, gathered.cursors).wait(poll.timeout)


def _headers(node: Node, request: Request | None, cursor_list: str) -> list[tuple[bytes, bytes]]:
    encoded = cursor_list.encode("ascii")
    return [
        (b"Tidings-Cursor", encoded),
        (b"ETag", etag(cursor_list)),
        *node.cors_pairs(request),
    ]


def _answer(node: Node, exchange: Exchange, gathered: Gathered, transport: str) -> None:
    if exchange.closed:
        return
    cursor_list = format_cursor_list(gathered.cursors)
    body = poll_body(gathered.events, cursor_list, gathered.resets)
    headers = _headers(node, exchange.current, cursor_list)
    written = exchange.respond(200, body, headers)
    node.hub.tally.wrote(transport, len(gathered.events), written)


def _answer_page(
    node: Node, exchange: Exchange, channel: str, since: Cursor, page: HistoryPage, transport: str
) -> None:
    """Answer the events of one channel after ``since``: one built answer per question."""
    if node.cors_varies:
        _answer(node, exchange, Gathered(list(page.events), [page.cursor], []), transport)
        return
    if exchange.closed:
        return
    answers = node.poll_answers
    key = (channel, since.epoch, since.offset, page.cursor.offset)
    response = answers.get(key)
    if response is None:
        cursor_list = page.cursor.text()
        body = poll_body(page.events, cursor_list)
        response = answers.keep(key, Response(200, body, _headers(node, None, cursor_list)))
    written = exchange.answer(response)
    node.hub.tally.wrote(transport, len(page.events), written)


def _answer_nothing_new(
    node: Node,
    exchange: Exchange,
    request: Request,
    cursor_list: str,
    resumed_etag: bytes | None,
) -> None:
    """A poll that found nothing new: ``304`` when it resumed (``resumed_etag`` is then its
    answer's ETag) and sent that ETag in ``If-None-Match``, else ``200`` without events."""
    status = 200
    if resumed_etag is not None and request.raw_header(b"if-none-match") == resumed_etag:
        status = 304
    if node.cors_varies:
        headers = _headers(node, request, cursor_list)
        exchange.respond(status, poll_body((), cursor_list) if status == 200 else b"", headers)
        return
    key = (status, cursor_list)
    response = node.poll_answers.get(key)
    if response is None:
        body = poll_body((), cursor_list) if status == 200 else b""
        headers = _headers(node, None, cursor_list)
        response = node.poll_answers.keep(key, Response(status, body, headers))
    exchange.answer(response)


def shared_response(node: Node, batch: Batch) -> Response:
    """The answer to every caught-up single-channel long poll woken by ``batch``."""
    response: Response | None = batch.answers.get("poll")
    if response is None:
        cursor = batch.last.id
        response = Response(200, poll_body(batch.events, cursor), _headers(node, None, cursor))
        batch.answers["poll"] = response
        batch.wire["poll"] = response.http11(True)  # what each shared answer writes
    return response


class LongPoll:
    """One held poll: a waiter on each channel and one entry in the timer wheel."""

    __slots__ = ("cursors", "done", "exchange", "node", "poll", "shareable")

    def __init__(
        self, node: Node, exchange: Exchange, poll: PollRequest, cursors: list[Cursor]
    ) -> None:
        self.node = node
        self.exchange = exchange
        self.poll = poll
        self.cursors = cursors
        self.done = False
        # a caught-up single-channel keep-alive poll whose headers do not depend on the
        # request can be answered with an event's shared response
        self.shareable = False

    def wait(self, timeout: float) -> None:
        """Hold the poll; never past its token's exp, so the next poll meets the 401."""
        request = self.exchange.current
        assert request is not None
        expires_at = request.identity.expires_at
        if expires_at is not None:
            timeout = min(timeout, expires_at - time.time())
        self.shareable = len(self.cursors) == 1 and request.keep_alive and not self.node.cors_varies
        hub = self.node.hub
        for channel in self.poll.subscription.channels:
            hub.wait(channel, self)
        self.exchange.hold(self, timeout)

    def cancel(self) -> None:
        """The client went away, or the poll is answered: forget every registration."""
        self.done = True
        self.exchange.release()
        for channel in self.poll.subscription.channels:
            self.node.hub.unwait(channel, self)

    def wake(self, batch: Batch) -> None:
        if self.done:
            return
        self.done = True
        exchange = self.exchange
        exchange.release()
        channels = self.poll.subscription.channels
        if len(channels) > 1:  # the hub already forgot this poll on the batch's channel
            for channel in channels:
                self.node.hub.unwait(channel, self)
        if self.shareable and len(batch.events) <= self.poll.limit:
            cursor, first = self.cursors[0], batch.events[0]
            if first.offset == cursor.offset + 1 and first.epoch == cursor.epoch:
                exchange.answer(shared_response(self.node, batch))
                self.node.hub.tally.poll += 1  # folded by the hub with the batch's bytes
                return
        gathered = _gather_nowait(self.node, self.poll, self.cursors)
        if gathered is None:
            self.node.hub.spawn(
                _poll_async(self.node, exchange, self._request(), self.poll, self.cursors)
            )
        else:
            self._answer_or_wait_again(gathered)

    def recheck(self) -> None:
        if self.done:
            return
        self.cancel()
        gathered = _gather_nowait(self.node, self.poll, self.cursors)
        if gathered is None:
            request = self._request()
            self.node.hub.spawn(
                _poll_async(self.node, self.exchange, request, self.poll, self.cursors)
            )
        else:
            self._answer_or_wait_again(gathered)

    def _request(self) -> Request:
        assert self.exchange.current is not None
        return self.exchange.current

    def _answer_or_wait_again(self, gathered: Gathered) -> None:
        if gathered.events or gathered.resets:
            _answer(self.node, self.exchange, gathered, "long_poll")
        else:
            LongPoll(self.node, self.exchange, self.poll, gathered.cursors).wait(self.poll.timeout)

    def expire(self) -> None:
        """Time is up with nothing new (or the server disconnects the user): 204, with the
        cursor to poll from next."""
        if self.done:
            return
        self.cancel()
        cursor_list = format_cursor_list(self.cursors)
        self.exchange.respond(204, b"", _headers(self.node, self.exchange.current, cursor_list))

    @property
    def identity(self) -> Identity:
        return self._request().identity

    @property
    def channels(self) -> tuple[str, ...]:
        return self.poll.subscription.channels

    def end_subscription(self, channel: str) -> None:
        """The server ended ``channel`` (POST /api/unsubscribe): answer at once, naming it in
        ``unsubscribed``; the client polls on without it."""
        if self.done:
            return
        self.cancel()
        cursor_list = format_cursor_list(self.cursors)
        body = poll_body((), cursor_list, unsubscribed=(channel,))
        self.exchange.respond(200, body, _headers(self.node, self.exchange.current, cursor_list))
