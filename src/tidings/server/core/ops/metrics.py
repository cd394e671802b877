"""``GET /metrics``: the node's numbers in the Prometheus text format (docs/protocol.md section 7).

Nothing on the delivery path calls the metrics library. The node keeps plain integers
(``Node.stats``, the hub's ``Tally``) and a custom collector reads them, with the hub's channel
map and the connection set, only when Prometheus scrapes. Each node has its own registry, so
several servers in one process never share a number. A node of several workers
(``server.workers``) answers with the sum of its workers' figures (``core/figures.py``),
whichever worker takes the scrape, and adds ``tidings_workers`` and
``tidings_worker_restarts``; its ``process_*`` numbers are then summed over the workers.

The endpoint is protected like the publish API (an API key, or loopback when none is
configured): its numbers name channels' activity and the node's load, which outsiders have
no business reading, and the scrape is work an anonymous flood could make the node do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from tidings.hub.tally import LAG_BUCKETS_MS, TRANSPORTS
from tidings.server.core.access import authorize_api
from tidings.server.core.exchange import Exchange
from tidings.server.core.figures import Figures, figures_of
from tidings.server.core.peers import PeersView
from tidings.server.core.request import Request

if TYPE_CHECKING:
    from tidings.server.core.node import Node


class NodeCollector:
    """Reads the node's figures at scrape time and reports them as metric families."""

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        figures = self.figures()
        yield from _connections(figures)
        yield from _traffic(figures)
        yield from _lag(figures)
        yield from _refusals_and_broker(figures)
        yield from _health(figures)


class WorkersCollector:
    """With ``server.workers``: the workers, and the processes' numbers summed over them."""

    def __init__(self, node: Node, peers: PeersView) -> None:
        self.node = node
        self.peers = peers

    def collect(self) -> Iterable[Metric]:
        latest = self.peers.latest
        figures = self.peers.whole(self.node)
        yield GaugeMetricFamily(
            "tidings_workers", "Worker processes serving this node now", value=latest.workers
        )
        yield CounterMetricFamily(
            "tidings_worker_restarts",
            "Workers started again after they died",
            value=latest.restarts,
        )
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "CPU time of the workers, those that died included, in seconds",
            value=figures.cpu_seconds,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory of the running workers, summed",
            value=figures.resident_bytes,
        )
        yield GaugeMetricFamily(
            "process_open_fds", "Open files of the running workers, summed", value=figures.open_fds
        )
        if figures.started_at is not None:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start of the oldest running worker, since the epoch",
                value=figures.started_at,
            )


def _connections(figures: Figures) -> Iterable[Metric]:
    open_now = GaugeMetricFamily(
        "tidings_connections", "Connections open now, by technique", labels=["transport"]
    )
    for kind, count in figures.connections.items():
        open_now.add_metric([kind], count)
    yield open_now
    opened = CounterMetricFamily(
        "tidings_connections_opened", "Streams opened, by technique", labels=["transport"]
    )
    for kind, count in sorted(figures.opened.items()):
        opened.add_metric([kind], count)
    yield opened
    yield GaugeMetricFamily(
        "tidings_subscriptions",
        "Channel followers over every SSE stream and WebSocket",
        value=figures.subscriptions,
    )


def _traffic(figures: Figures) -> Iterable[Metric]:
    yield CounterMetricFamily(
        "tidings_publishes", "Events published through this node", value=figures.published
    )
    deliveries = CounterMetricFamily(
        "tidings_deliveries", "Events written to subscribers", labels=["transport"]
    )
    written = CounterMetricFamily(
        "tidings_written_bytes", "Bytes written carrying events", labels=["transport"]
    )
    for transport in TRANSPORTS:
        deliveries.add_metric([transport], figures.deliveries.get(transport, 0))
        written.add_metric([transport], figures.written_bytes.get(transport, 0))
    yield deliveries
    yield written
    yield CounterMetricFamily(
        "tidings_resets", "Resets sent (history could not cover a cursor)", value=figures.resets
    )
    yield CounterMetricFamily(
        "tidings_slow_consumer_closes",
        "Connections closed because they could not keep up",
        value=figures.slow_consumers,
    )


def _lag(figures: Figures) -> Iterable[Metric]:
    yield _histogram(
        "tidings_delivery_lag_seconds",
        "Publish to write, once per event per subscriber written with shared bytes",
        figures.lag_counts,
        figures.lag_sum_ms,
    )
    yield _histogram(
        "tidings_heartbeat_delay_seconds",
        "How long after its turn each stream's heartbeat was written, once per heartbeat",
        figures.heartbeat_delay_counts,
        figures.heartbeat_delay_sum_ms,
    )


def _histogram(name: str, documentation: str, counts: tuple[int, ...], sum_ms: float) -> Metric:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*LAG_BUCKETS_MS, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound / 1000), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum_ms / 1000)


def _refusals_and_broker(figures: Figures) -> Iterable[Metric]:
    refusals = CounterMetricFamily(
        "tidings_refusals", "Requests and connections refused, by reason", labels=["reason"]
    )
    for reason, count in sorted(figures.refusals.items()):
        refusals.add_metric([reason], count)
    yield refusals
    yield CounterMetricFamily(
        "tidings_broker_errors",
        "Broker operations that failed (answered 503, or retried later)",
        value=figures.broker_errors,
    )
    if figures.broker_up is not None:
        yield GaugeMetricFamily(
            "tidings_broker_up",
            "1 if the last broker check succeeded (on every worker)",
            value=figures.broker_up,
        )
    if figures.broker_rtt is not None:
        yield GaugeMetricFamily(
            "tidings_broker_rtt_seconds",
            "Round trip of the last successful broker check (the slowest worker's)",
            value=figures.broker_rtt,
        )


def metrics_registry(node: Node, peers: PeersView | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if peers is None:
        registry.register(NodeCollector(partial(figures_of, node)))
        ProcessCollector(registry=registry)  # CPU, memory and open files of this process
    else:
        registry.register(NodeCollector(partial(peers.whole, node)))
        registry.register(WorkersCollector(node, peers))
    return registry


def handle_metrics(
    registry: CollectorRegistry, node: Node, exchange: Exchange, request: Request
) -> None:
    authorize_api(node.settings.server.api_keys, request)
    body = generate_latest(registry)
    # the classic text format (0.0.4) every Prometheus version reads; our names need no escaping
    content_type = CONTENT_TYPE_PLAIN_0_0_4.encode()
    exchange.respond(200, body, [(b"Cache-Control", b"no-store")], content_type)


def _health(figures: Figures) -> Iterable[Metric]:
    """What went wrong without stopping the node: nothing may end quietly."""
    failures = CounterMetricFamily(
        "tidings_unexpected_errors",
        "Errors a background loop, timer job or connection raised unexpectedly; "
        "logged, and the work went on",
        labels=["where"],
    )
    for where, count in sorted(figures.unexpected_errors.items()):
        failures.add_metric([where], count)
    yield failures
    yield GaugeMetricFamily(
        "tidings_presence_pending",
        "Presence changes waiting for the broker",
        value=figures.presence_pending,
    )
