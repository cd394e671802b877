"""The node's numbers as one value: sums over workers, what a dead worker leaves, the wire."""

from __future__ import annotations

import os
import time

import pytest

from tidings.hub.tally import LAG_BUCKETS_MS
from tidings.server.core import figures as figures_module
from tidings.server.core.figures import Figures
from tidings.server.core.peers import Peers

BUCKETS = len(LAG_BUCKETS_MS) + 1


def worker(**values: object) -> Figures:
    return Figures(**{"workers": 1, "ready": 1, **values})  # type: ignore[arg-type]


def test_counters_and_gauges_add_up_over_workers() -> None:
    a = worker(
        connections={"sse": 3, "websocket": 1},
        followers={"news": 3},
        deliveries={"sse": 30},
        lag_counts=(1,) + (0,) * (BUCKETS - 1),
        lag_sum_ms=0.5,
        heartbeat_delay_counts=(4,) + (0,) * (BUCKETS - 1),
        heartbeat_delay_sum_ms=2.0,
        refusals={"unauthorized": 1},
        broker_up=True,
        broker_rtt=0.001,
        cpu_seconds=1.5,
        started_at=200.0,
    )
    b = worker(
        connections={"sse": 2},
        followers={"news": 2, "sport": 1},
        deliveries={"sse": 20, "websocket": 5},
        lag_counts=(0, 2) + (0,) * (BUCKETS - 2),
        lag_sum_ms=3.0,
        heartbeat_delay_counts=(1,) + (0,) * (BUCKETS - 2) + (1,),
        heartbeat_delay_sum_ms=20000.5,
        refusals={"unauthorized": 2, "rate_limited": 1},
        broker_up=True,
        broker_rtt=0.004,
        cpu_seconds=0.5,
        started_at=100.0,
    )
    total = a + b
    assert total.workers == 2 and total.ready == 2
    assert total.connections == {"sse": 5, "websocket": 1}
    assert total.followers == {"news": 5, "sport": 1}
    assert total.deliveries == {"sse": 50, "websocket": 5}
    assert total.delivered == 55
    assert total.lag_counts[:2] == (1, 2) and total.lag_sum_ms == 3.5
    assert total.heartbeat_delay_counts == (5,) + (0,) * (BUCKETS - 2) + (1,)
    assert total.heartbeat_delay_sum_ms == 20002.5
    assert total.refusals == {"unauthorized": 3, "rate_limited": 1}
    assert total.broker_rtt == 0.004  # the slowest worker's
    assert total.cpu_seconds == 2.0
    assert total.started_at == 100.0  # the oldest


@pytest.mark.parametrize(
    ("a", "b", "up"),
    [(True, True, True), (True, False, False), (None, True, True), (None, None, None)],
)
def test_the_broker_is_up_only_if_it_is_up_for_every_worker(
    a: bool | None, b: bool | None, up: bool | None
) -> None:
    assert (worker(broker_up=a) + worker(broker_up=b)).broker_up is up


def test_a_dead_worker_leaves_its_counters_and_takes_its_gauges() -> None:
    dead = worker(
        connections={"sse": 4},
        subscriptions=4,
        followers={"news": 4},
        published=7,
        deliveries={"sse": 28},
        cpu_seconds=3.0,
        resident_bytes=50_000_000,
        open_fds=30,
        broker_up=False,
    )
    left = dead.retired()
    assert left.published == 7 and left.deliveries == {"sse": 28} and left.cpu_seconds == 3.0
    assert left.workers == 0 and left.ready == 0
    assert left.connections == {} and left.subscriptions == 0 and left.followers == {}
    assert left.resident_bytes == 0 and left.open_fds == 0 and left.broker_up is None
    # a restarted worker starts from zero: the node's totals still never go back
    restarted = worker(deliveries={"sse": 2})
    assert (left + restarted).deliveries == {"sse": 30}


def test_figures_and_peers_cross_the_pipe_unchanged() -> None:
    figures = worker(
        deliveries={"sse": 3},
        lag_counts=(0, 1) + (0,) * (BUCKETS - 2),
        heartbeat_delay_counts=(2,) + (0,) * (BUCKETS - 1),
        broker_rtt=0.25,
    )
    assert Figures.from_json(figures.to_json()) == figures
    peers = Peers(rest=figures, not_ready="worker 2 is draining", workers=2, restarts=1)
    assert Peers.from_json(peers.to_json()) == peers


@pytest.mark.parametrize(
    "line",
    [
        b"[]",
        b'{"lag_counts": [1, 2]}',
        b'{"heartbeat_delay_counts": [1]}',
        b'{"unknown": 1}',
        b"not json",
    ],
)
def test_a_garbled_line_is_refused(line: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        Figures.from_json(line)


def test_open_files_are_counted_every_30_s_and_cpu_and_memory_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # listing /proc/self/fd costs in proportion to the files: not every second at 18,000
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    readings = figures_module.ProcessReadings()
    first = readings.now()
    if "process_open_fds" not in first:
        pytest.skip("no /proc here: prometheus_client reads no process figures")
    opened = [open(os.devnull) for _ in range(20)]  # noqa: SIM115 - closed below
    try:
        sum(range(200_000))  # some CPU time
        cached = readings.now()
        assert cached["process_open_fds"] == first["process_open_fds"]
        assert cached["process_cpu_seconds_total"] >= first["process_cpu_seconds_total"]
        assert cached["process_resident_memory_bytes"] > 0
        now[0] += figures_module.FILES_SECONDS
        fresh = readings.now()
        assert fresh["process_open_fds"] >= first["process_open_fds"] + 20
    finally:
        for file in opened:
            file.close()
