"""What the node has written, counted so that the delivery path pays one integer addition.

A subscriber written with a batch's shared bytes adds 1 to the counter of that wire format
(``ws``, ``ws_deflate``, ``sse``, ``sse_envelope``, ``poll``). After the fan-out of each
batch the hub calls ``fold``: every such write carried the same bytes and the same events,
so deliveries, bytes and the publish-to-write lag follow from the counts by multiplication,
once per batch.
Writes of a connection's own bytes (catch-ups from history, multi-channel SSE ids, poll
answers gathered for one request) are off the shared path and counted with ``wrote``.

Everything here is plain integers read by ``/metrics`` and the admin page when they ask.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence

from tidings.protocol.event import Batch

TRANSPORTS = ("websocket", "sse", "long_poll", "poll")
# Upper bounds (inclusive, as Prometheus ``le``) of the lag buckets, in milliseconds.
LAG_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)


class LagHistogram:
    """Delays in milliseconds, each observed with a weight: the publish-to-write lag once
    per event per fan-out weighted by writes, a heartbeat's delay weighted by streams."""

    __slots__ = ("counts", "sum_ms")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS_MS) + 1)  # the last bucket is +Inf
        self.sum_ms = 0.0

    def observe(self, lag_ms: float, weight: int) -> None:
        """A delay below 0 (another node's clock behind, a rounding) counts as 0."""
        lag_ms = max(0.0, lag_ms)
        self.counts[bisect_left(LAG_BUCKETS_MS, lag_ms)] += weight
        self.sum_ms += lag_ms * weight

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.counts)


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (ms) of bucket counts, interpolated inside its bucket like
    Prometheus' ``histogram_quantile``; ``None`` when nothing was observed."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(LAG_BUCKETS_MS):
                return LAG_BUCKETS_MS[-1]  # beyond the last bound: say at least that
            lower = LAG_BUCKETS_MS[index - 1] if index else 0.0
            return lower + (LAG_BUCKETS_MS[index] - lower) * (rank - seen) / count
        seen += count
    return LAG_BUCKETS_MS[-1]


class Tally:
    """Deliveries, bytes and lag by transport, and the broker's health, as plain numbers."""

    __slots__ = (
        "broker_errors",
        "broker_rtt",
        "broker_up",
        "deliveries",
        "heartbeat_delay",
        "lag",
        "poll",
        "sse",
        "sse_envelope",
        "written_bytes",
        "ws",
        "ws_deflate",
    )

    def __init__(self) -> None:
        # writes of the current batch's shared bytes, by wire format (zeroed by fold)
        self.ws = 0
        self.ws_deflate = 0
        self.sse = 0
        self.sse_envelope = 0
        self.poll = 0
        self.deliveries = dict.fromkeys(TRANSPORTS, 0)
        self.written_bytes = dict.fromkeys(TRANSPORTS, 0)
        self.lag = LagHistogram()
        # how late each stream's heartbeat came against its turn in the interval
        self.heartbeat_delay = LagHistogram()
        self.broker_errors = 0
        self.broker_rtt: float | None = None  # seconds, of the last successful check
        self.broker_up: bool | None = None  # None until the first check

    def shared(self, key: str, writes: int) -> None:
        """``writes`` more subscribers were written the current batch's ``key`` bytes."""
        if key == "ws":
            self.ws += writes
        elif key == "ws-deflate":
            self.ws_deflate += writes
        elif key == "sse":
            self.sse += writes
        elif key == "sse-envelope":
            self.sse_envelope += writes
        else:
            raise ValueError(f"no shared writes are counted for {key!r}")

    def wrote(self, transport: str, events: int, size: int) -> None:
        """A connection wrote ``events`` events in ``size`` bytes of its own."""
        self.deliveries[transport] += events
        self.written_bytes[transport] += size

    def fold(self, batch: Batch) -> None:
        """Turn the shared writes of ``batch``'s fan-out into deliveries, bytes and lag."""
        writes = self.ws + self.ws_deflate + self.sse + self.sse_envelope + self.poll
        if not writes:
            return
        wire = batch.wire
        if self.ws:
            self._shared("websocket", self.ws, batch, wire["ws"])
            self.ws = 0
        if self.ws_deflate:
            self._shared("websocket", self.ws_deflate, batch, wire["ws-deflate"])
            self.ws_deflate = 0
        if self.sse:
            self._shared("sse", self.sse, batch, wire["sse"])
            self.sse = 0
        if self.sse_envelope:
            self._shared("sse", self.sse_envelope, batch, wire["sse-envelope"])
            self.sse_envelope = 0
        if self.poll:
            self._shared("long_poll", self.poll, batch, wire["poll"])
            self.poll = 0
        now_ms = time.time() * 1000
        for event in batch.events:
            # clocks of other nodes may run ahead: a negative lag is no lag
            self.lag.observe(now_ms - event.ts, writes)

    def _shared(self, transport: str, writes: int, batch: Batch, data: bytes) -> None:
        self.deliveries[transport] += writes * len(batch.events)
        self.written_bytes[transport] += writes * len(data)
