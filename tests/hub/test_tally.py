"""What the node counts (hub/tally.py): shared writes folded into deliveries, bytes and lag.

The hub's fan-out drives ``fold`` with a real batch; the sums are checked against what each
subscriber was handed.
"""

from __future__ import annotations

import time

import pytest

from tests.hub.support import Seen
from tidings.hub.hub import Hub
from tidings.hub.tally import LAG_BUCKETS_MS, LagHistogram, Tally, quantile
from tidings.protocol.event import Batch, Event

pytestmark = pytest.mark.timeout(20)


def batch_of(count: int, ts: int, wire: dict[str, bytes]) -> Batch:
    events = tuple(Event("news", "e", n, "m", b"%d" % n, ts) for n in range(1, count + 1))
    return Batch("news", events, dict(wire))


def test_shared_writes_fold_into_deliveries_and_bytes_per_transport() -> None:
    tally = Tally()
    now_ms = int(time.time() * 1000)
    batch = batch_of(3, now_ms, {"ws": b"w" * 10, "sse": b"s" * 20, "sse-envelope": b"e" * 30})
    batch.wire["poll"] = b"p" * 40
    tally.ws, tally.sse, tally.sse_envelope, tally.poll = 2, 1, 4, 5
    tally.fold(batch)
    assert tally.deliveries == {"websocket": 6, "sse": 15, "long_poll": 15, "poll": 0}
    assert tally.written_bytes == {"websocket": 20, "sse": 20 + 120, "long_poll": 200, "poll": 0}
    assert (tally.ws, tally.sse, tally.sse_envelope, tally.poll) == (0, 0, 0, 0)
    assert tally.lag.count == 3 * (2 + 1 + 4 + 5)  # once per event per write


def test_compressed_websocket_writes_count_the_compressed_bytes() -> None:
    tally = Tally()
    batch = batch_of(2, int(time.time() * 1000), {"ws": b"w" * 100, "ws-deflate": b"d" * 40})
    tally.ws, tally.ws_deflate = 1, 3
    tally.fold(batch)
    assert tally.deliveries["websocket"] == 2 * (1 + 3)
    assert tally.written_bytes["websocket"] == 100 + 3 * 40
    assert (tally.ws, tally.ws_deflate) == (0, 0)
    assert tally.lag.count == 2 * 4


def test_a_batch_nobody_was_written_counts_nothing() -> None:
    tally = Tally()
    tally.fold(batch_of(2, 0, {}))
    assert sum(tally.deliveries.values()) == 0
    assert tally.lag.count == 0


def test_own_writes_are_counted_apart() -> None:
    tally = Tally()
    tally.wrote("sse", 3, 300)
    tally.wrote("poll", 1, 50)
    assert tally.deliveries["sse"] == 3 and tally.written_bytes["sse"] == 300
    assert tally.deliveries["poll"] == 1 and tally.written_bytes["poll"] == 50
    assert tally.lag.count == 0


def test_a_lag_from_a_clock_ahead_is_no_lag() -> None:
    tally = Tally()
    ahead = int(time.time() * 1000) + 60_000
    tally.ws = 1
    tally.fold(batch_of(1, ahead, {"ws": b"x"}))
    assert tally.lag.counts[0] == 1 and tally.lag.sum_ms == 0.0


def test_lag_buckets_are_inclusive_upper_bounds_and_weighted() -> None:
    lag = LagHistogram()
    lag.observe(1.0, 2)  # on the bound: in the first bucket
    lag.observe(1.5, 1)
    lag.observe(LAG_BUCKETS_MS[-1] + 1, 3)  # beyond every bound: +Inf
    assert lag.counts[0] == 2 and lag.counts[1] == 1 and lag.counts[-1] == 3
    assert lag.count == 6
    assert lag.sum_ms == pytest.approx(2.0 + 1.5 + 3 * (LAG_BUCKETS_MS[-1] + 1))


def test_quantiles_interpolate_inside_their_bucket() -> None:
    assert quantile([0] * (len(LAG_BUCKETS_MS) + 1), 0.5) is None
    counts = [0] * (len(LAG_BUCKETS_MS) + 1)
    counts[1] = 4  # four observations in (1.0, 2.5]
    assert quantile(counts, 0.5) == pytest.approx(1.0 + 1.5 * 0.5)
    assert quantile(counts, 1.0) == pytest.approx(2.5)
    counts[-1] = 100
    assert quantile(counts, 0.99) == LAG_BUCKETS_MS[-1]  # "at least" the last bound


class Writing(Seen):
    """A WebSocket subscriber as the server's: writes the batch's shared bytes, counts 1."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.bytes = 0

    def deliver_batch(self, batch: Batch) -> None:
        self.bytes += len(batch.joined("ws", lambda event: event.data + b"\n"))
        self.hub.tally.ws += 1
        super().deliver_batch(batch)


async def test_the_hubs_fan_out_folds_every_batch(hub: Hub) -> None:
    writers = [Writing(hub) for _ in range(3)]
    for writer in writers:
        hub.attach("news", writer)
    stored = [await hub.broker.publish("news", "m", b"%d" % n) for n in range(4)]
    for writer in writers:
        await writer.until(lambda w=writer: len(w.events) == len(stored), "every event")
    assert hub.tally.deliveries["websocket"] == 3 * len(stored)
    assert hub.tally.written_bytes["websocket"] == sum(writer.bytes for writer in writers)
    assert hub.tally.lag.count == 3 * len(stored)
    assert hub.tally.ws == 0


def test_shared_counts_writes_by_wire_format_and_refuses_an_unknown_one() -> None:
    tally = Tally()
    for key in ("ws", "ws-deflate", "sse", "sse-envelope"):
        tally.shared(key, 2)
    assert (tally.ws, tally.ws_deflate, tally.sse, tally.sse_envelope) == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="poll"):
        tally.shared("poll", 1)
