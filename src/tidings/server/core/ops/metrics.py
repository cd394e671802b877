"""``GET /metrics``: the node's numbers in the Prometheus text format (docs/protocol.md section 7).

Nothing on the delivery path calls the metrics library. The node keeps plain integers
(``Node.stats``, the hub's ``Tally``) and a custom collector reads them, with the hub's channel
map and the connection set, only when Prometheus scrapes. Each node has its own registry, so
several servers in one process never share a number.

The endpoint is protected like the publish API (an API key, or loopback when none is
configured): its numbers name channels' activity and the node's load, which outsiders have
no business reading, and the scrape is work an anonymous flood could make the node do.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from tidings.server.core.request import Request

if TYPE_CHECKING:
    from tidings.server.core.node import Node

OPEN_KINDS = ("websocket", "sse", "long_poll", "admin")


def open_connections(node: Node) -> dict[str, int]:
    """Connections open now, by technique (a long poll counts while it is held)."""
    counts = dict.fromkeys(OPEN_KINDS, 0)
    for connection in node.connections:
        kind = connection.kind
        if kind in counts:
            counts[kind] += 1
    return counts


class NodeCollector:
    """Reads the node's counters at scrape time and reports them as metric families."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        yield from self._connections()
        yield from self._traffic()
        yield self._lag()
        yield from self._refusals_and_broker()
        yield from self._health()

    def _health(self) -> Iterable[Metric]:
        """What went wrong without stopping the node: nothing may end quietly."""
        failures = CounterMetricFamily(
            "tidings_unexpected_errors",
            "Errors a background loop, timer job or connection raised unexpectedly; "
            "logged, and the work went on",
            labels=["where"],
        )
        for where, count in sorted(self.node.hub.supervisor.failures.items()):
            failures.add_metric([where], count)
        yield failures
        yield GaugeMetricFamily(
            "tidings_presence_pending",
            "Presence changes waiting for the broker",
            value=self.node.hub.presence.pending,
        )

    def _connections(self) -> Iterable[Metric]:
        node = self.node
        open_now = GaugeMetricFamily(
            "tidings_connections", "Connections open now, by technique", labels=["transport"]
        )
        for kind, count in open_connections(node).items():
            open_now.add_metric([kind], count)
        yield open_now
        opened = CounterMetricFamily(
            "tidings_connections_opened", "Streams opened, by technique", labels=["transport"]
        )
        for kind, count in sorted(node.stats.opened_by_transport.items()):
            opened.add_metric([kind], count)
        yield opened
        yield GaugeMetricFamily(
            "tidings_subscriptions",
            "Channel followers over every SSE stream and WebSocket",
            value=node.hub.subscription_count(),
        )

    def _traffic(self) -> Iterable[Metric]:
        stats, tally = self.node.stats, self.node.hub.tally
        yield CounterMetricFamily(
            "tidings_publishes", "Events published through this node", value=stats.published
        )
        deliveries = CounterMetricFamily(
            "tidings_deliveries", "Events written to subscribers", labels=["transport"]
        )
        written = CounterMetricFamily(
            "tidings_written_bytes", "Bytes written carrying events", labels=["transport"]
        )
        for transport in TRANSPORTS:
            deliveries.add_metric([transport], tally.deliveries[transport])
            written.add_metric([transport], tally.written_bytes[transport])
        yield deliveries
        yield written
        yield CounterMetricFamily(
            "tidings_resets", "Resets sent (history could not cover a cursor)", value=stats.resets
        )
        yield CounterMetricFamily(
            "tidings_slow_consumer_closes",
            "Connections closed because they could not keep up",
            value=stats.slow_consumers,
        )

    def _lag(self) -> Metric:
        lag = self.node.hub.tally.lag
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*LAG_BUCKETS_MS, float("inf")), lag.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound / 1000), cumulative))
        return HistogramMetricFamily(
            "tidings_delivery_lag_seconds",
            "Publish to write, once per event per subscriber written with shared bytes",
            buckets=buckets,
            sum_value=lag.sum_ms / 1000,
        )

    def _refusals_and_broker(self) -> Iterable[Metric]:
        stats, tally = self.node.stats, self.node.hub.tally
        refusals = CounterMetricFamily(
            "tidings_refusals", "Requests and connections refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        yield CounterMetricFamily(
            "tidings_broker_errors",
            "Broker operations that failed (answered 503, or retried later)",
            value=tally.broker_errors,
        )
        if tally.broker_up is not None:
            yield GaugeMetricFamily(
                "tidings_broker_up", "1 if the last broker check succeeded", value=tally.broker_up
            )
        if tally.broker_rtt is not None:
            yield GaugeMetricFamily(
                "tidings_broker_rtt_seconds",
                "Round trip of the last successful broker check",
                value=tally.broker_rtt,
            )


def metrics_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)  # CPU, memory and open files of this process
    return registry


def handle_metrics(
    registry: CollectorRegistry, node: Node, exchange: Exchange, request: Request
) -> None:
    authorize_api(node.settings.server.api_keys, request)
    body = generate_latest(registry)
    # the classic text format (0.0.4) every Prometheus version reads; our names need no escaping
    content_type = CONTENT_TYPE_PLAIN_0_0_4.encode()
    exchange.respond(200, body, [(b"Cache-Control", b"no-store")], content_type)
