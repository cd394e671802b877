"""``GET /admin`` and its live feed ``GET /admin/stream`` (``server.admin``).

Once a second, while at least one admin page watches, the node builds a snapshot of its own
numbers and delivers it through the hub, like any event, on a node-local channel to SSE
streams that followed it with the API key. The channel never reaches the broker: each node's
numbers are its own. Its name is not a valid channel name, so no subscriber can ask for it
on ``/sse``, ``/ws`` or ``/poll``. Nobody watching, the timer job returns at once and the
hub stops counting arrivals per channel: the feed costs nothing.

On a node of several workers (``server.workers``) the numbers are the whole node's
(``core/figures.py``): the worker that serves the page adds the other workers' latest figures
to its own. The busiest channels by followers are the node's (each worker sends its top
fifty); the channels by events per second are counted where the page is served, so they are
the channels that worker follows: every worker receives every event of the channels it
follows, so their rates are the node's.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tidings.exceptions import NotFound
from tidings.hub.hub import LOCAL_PREFIX
from tidings.hub.tail import Tail
from tidings.hub.tally import quantile
from tidings.protocol import sse
from tidings.protocol.cursor import Cursor, new_epoch
from tidings.protocol.event import Batch, Event
from tidings.protocol.identity import ANONYMOUS
from tidings.server.core.access import authorize_api
from tidings.server.core.exchange import Exchange
from tidings.server.core.figures import Figures
from tidings.server.core.ops.static import StaticFiles
from tidings.server.core.request import Request
from tidings.server.core.transports.sse import SSEStream, event_bytes, stream_head

if TYPE_CHECKING:
    from tidings.server.core.node import Node

ADMIN_CHANNEL = LOCAL_PREFIX + "admin"  # no subscriber can name it: only /admin/stream
SNAPSHOT_SECONDS = 1.0
LAG_WINDOW_SNAPSHOTS = 10  # p50 and p99 cover about the last ten seconds
TOP_CHANNELS = 10


class AdminStream(SSEStream):
    """An admin page's feed: node-local, never caught up from history, never counted."""

    __slots__ = ()

    kind: ClassVar[str] = "admin"

    def follow(self, tail: Tail) -> None:
        self.tails[tail.channel] = tail
        self.hub.attach_local(tail.channel, self)

    def policy(self) -> str:
        return "disconnect"  # a page that cannot keep up reconnects and gets the next one

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        # not in the delivery counters: watching the numbers must not move them
        if not self.closed:
            self.transport.write(b"".join(event_bytes(e, False) for e in batch.events))

    def deliver(self, event: Event) -> None:
        """A snapshot after a gap: newer numbers replace what was missed."""
        tail = self.tails.get(event.channel)
        if tail is not None and not self.closed and event.offset > tail.offset:
            tail.offset = event.offset
            self.transport.write(event_bytes(event, False))

    def catch_up(self, tail: Tail, first: object = None) -> None:
        tail.backlog = None  # there is no history of snapshots to read


class AdminFeed:
    """Builds and delivers the snapshot every second while someone watches."""

    def __init__(self, node: Node, figures: Callable[[], Figures]) -> None:
        self.node = node
        self.figures = figures  # the node's numbers: this worker's, or every worker's
        self.epoch = new_epoch()
        self.offset = 0
        self._previous: tuple[float, int, int] | None = None  # time, publishes, deliveries
        self._lag_window: deque[tuple[int, ...]] = deque(maxlen=LAG_WINDOW_SNAPSHOTS + 1)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.offset)

    def tick(self) -> None:
        hub = self.node.hub
        if not hub.subscriber_count(ADMIN_CHANNEL):
            if hub.arrivals is not None:  # the last page closed: stop counting
                hub.arrivals = None
                self._previous = None
                self._lag_window.clear()
            return
        if hub.arrivals is None:
            hub.arrivals = {}
        self.offset += 1
        data = orjson.dumps(self.snapshot())
        hub.deliver(
            Event(ADMIN_CHANNEL, self.epoch, self.offset, "snapshot", data, int(time.time() * 1000))
        )

    def snapshot(self) -> dict[str, Any]:
        node = self.node
        figures = self.figures()
        now = node.loop.time()
        deliveries = figures.delivered
        elapsed = now - self._previous[0] if self._previous else 0.0
        arrivals, node.hub.arrivals = node.hub.arrivals or {}, {}
        snapshot = {
            "workers": figures.workers,
            "connections": dict(figures.connections),
            "subscriptions": figures.subscriptions,
            "publishes": {
                "total": figures.published,
                "per_second": self._rate(1, figures.published),
            },
            "deliveries": {
                "total": deliveries,
                "per_second": self._rate(2, deliveries),
                "by_transport": dict(figures.deliveries),
            },
            "lag_ms": self._lag(figures.lag_counts),
            "refusals": dict(figures.refusals),
            "resets": figures.resets,
            "slow_consumer_closes": figures.slow_consumers,
            "broker": {
                "up": figures.broker_up,
                "rtt_ms": None if figures.broker_rtt is None else figures.broker_rtt * 1000,
                "errors": figures.broker_errors,
            },
            "channels": self._channels(figures.followers, arrivals, elapsed),
        }
        self._previous = (now, figures.published, deliveries)
        return snapshot

    def _rate(self, index: int, total: int) -> float | None:
        if self._previous is None:
            return None
        elapsed = self.node.loop.time() - self._previous[0]
        return (total - self._previous[index]) / elapsed if elapsed > 0 else None

    def _lag(self, counts: tuple[int, ...]) -> dict[str, Any]:
        self._lag_window.append(counts)
        newest, oldest = self._lag_window[-1], self._lag_window[0]
        recent = [a - b for a, b in zip(newest, oldest, strict=True)]
        return {"p50": quantile(recent, 0.5), "p99": quantile(recent, 0.99), "count": sum(recent)}

    def _channels(
        self, followers: Mapping[str, int], arrivals: dict[str, int], elapsed: float
    ) -> dict[str, Any]:
        arrivals.pop(ADMIN_CHANNEL, None)
        busiest = heapq.nlargest(TOP_CHANNELS, followers.items(), key=lambda item: item[1])
        fastest = heapq.nlargest(TOP_CHANNELS, arrivals.items(), key=lambda item: item[1])
        return {
            "by_followers": [{"channel": c, "followers": n} for c, n in busiest],
            "by_rate": [
                {"channel": c, "per_second": n / elapsed if elapsed > 0 else None}
                for c, n in fastest
            ],
        }


def handle_admin(files: StaticFiles, node: Node, exchange: Exchange, request: Request) -> None:
    """The page itself carries no numbers: it asks for the key and opens the feed."""
    _require_admin(node)
    files.serve(exchange, request, "admin.html")


def handle_admin_stream(feed: AdminFeed, node: Node, exchange: Exchange, request: Request) -> None:
    _require_admin(node)
    authorize_api(node.settings.server.api_keys, request)
    stream = AdminStream(node, envelope=False, identity=ANONYMOUS)
    transport = exchange.start_stream(stream, stream_head(node, request))
    cursor = feed.cursor
    transport.write(sse.encode_stream_open(node.settings.server.sse_retry_ms, str(cursor)))
    node.stats.opened("admin")
    tail = Tail(ADMIN_CHANNEL, cursor)
    stream.order.append(tail)
    stream.follow(tail)


def _require_admin(node: Node) -> None:
    if not node.settings.server.admin:
        raise NotFound("the admin page is off on this server (server.admin = false)")
