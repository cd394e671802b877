"""The numbers ``/metrics``, ``/readyz`` and ``/admin`` show, as one value that adds up.

A node served by several worker processes (``server.workers``) shows the sum of its workers:
each worker reads its own ``Figures`` from its node once a second and sends them to the
supervisor, which hands every worker the sum of the others (``Peers``). A request answered
by any worker then shows its live figures plus the others' latest.

Counters (publishes, deliveries, bytes, lag, refusals, CPU time...) only grow; gauges
(connections, subscriptions, followers per channel, memory, the broker's state) describe
now. When a worker dies its counters are kept as ``retired()`` figures, so that the node's
totals never go back, and its gauges are dropped with it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.process_collector import ProcessCollector

from tidings.hub.tally import LAG_BUCKETS_MS

if TYPE_CHECKING:
    from tidings.server.core.node import Node

OPEN_KINDS = ("websocket", "sse", "long_poll", "admin")
# Followers per channel are sent for this many of a worker's busiest channels: the node's
# top ten are exact as long as each of them is among every worker's top fifty.
SENT_CHANNELS = 50
# bucket counts of LAG_BUCKETS_MS (and +Inf), summed over workers bucket by bucket
HISTOGRAMS = ("lag_counts", "heartbeat_delay_counts")
GAUGES = frozenset(
    {
        "workers",
        "ready",
        "connections",
        "subscriptions",
        "followers",
        "broker_up",
        "broker_rtt",
        "resident_bytes",
        "open_fds",
        "presence_pending",
    }
)


@dataclass(frozen=True, slots=True)
class Figures:
    """One worker's numbers, or the sum of several (``a + b``)."""

    workers: int = 0  # processes added up here
    ready: int = 0  # of them, those that are not draining
    connections: Mapping[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    followers: Mapping[str, int] = field(default_factory=dict)
    opened: Mapping[str, int] = field(default_factory=dict)
    published: int = 0
    deliveries: Mapping[str, int] = field(default_factory=dict)
    written_bytes: Mapping[str, int] = field(default_factory=dict)
    lag_counts: tuple[int, ...] = (0,) * (len(LAG_BUCKETS_MS) + 1)
    lag_sum_ms: float = 0.0
    heartbeat_delay_counts: tuple[int, ...] = (0,) * (len(LAG_BUCKETS_MS) + 1)
    heartbeat_delay_sum_ms: float = 0.0
    resets: int = 0
    slow_consumers: int = 0
    refusals: Mapping[str, int] = field(default_factory=dict)
    broker_errors: int = 0
    unexpected_errors: Mapping[str, int] = field(default_factory=dict)  # by where it arose
    presence_pending: int = 0
    broker_up: bool | None = None  # None until a check; False if any worker's failed
    broker_rtt: float | None = None  # seconds; the slowest worker's last check
    cpu_seconds: float = 0.0
    resident_bytes: int = 0
    open_fds: int = 0
    started_at: float | None = None  # the oldest process, seconds since the epoch

    def __post_init__(self) -> None:
        for name in HISTOGRAMS:
            if len(getattr(self, name)) != len(LAG_BUCKETS_MS) + 1:
                raise ValueError(f"{name} needs {len(LAG_BUCKETS_MS) + 1} buckets")

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            workers=self.workers + other.workers,
            ready=self.ready + other.ready,
            connections=_add(self.connections, other.connections),
            subscriptions=self.subscriptions + other.subscriptions,
            followers=_add(self.followers, other.followers),
            opened=_add(self.opened, other.opened),
            published=self.published + other.published,
            deliveries=_add(self.deliveries, other.deliveries),
            written_bytes=_add(self.written_bytes, other.written_bytes),
            lag_counts=_add_counts(self.lag_counts, other.lag_counts),
            lag_sum_ms=self.lag_sum_ms + other.lag_sum_ms,
            heartbeat_delay_counts=_add_counts(
                self.heartbeat_delay_counts, other.heartbeat_delay_counts
            ),
            heartbeat_delay_sum_ms=self.heartbeat_delay_sum_ms + other.heartbeat_delay_sum_ms,
            resets=self.resets + other.resets,
            slow_consumers=self.slow_consumers + other.slow_consumers,
            refusals=_add(self.refusals, other.refusals),
            broker_errors=self.broker_errors + other.broker_errors,
            unexpected_errors=_add(self.unexpected_errors, other.unexpected_errors),
            presence_pending=self.presence_pending + other.presence_pending,
            broker_up=_all_up(self.broker_up, other.broker_up),
            broker_rtt=_largest(self.broker_rtt, other.broker_rtt),
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            resident_bytes=self.resident_bytes + other.resident_bytes,
            open_fds=self.open_fds + other.open_fds,
            started_at=_smallest(self.started_at, other.started_at),
        )

    def retired(self) -> Figures:
        """What a dead worker leaves to its node: its counters, none of its gauges."""
        return Figures(
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in GAUGES}
        )

    @property
    def delivered(self) -> int:
        return sum(self.deliveries.values())

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Figures:
        """Figures another worker sent; raises ValueError (or TypeError) if they are not."""
        values: Any = orjson.loads(data)
        if not isinstance(values, dict):
            raise ValueError("figures must be a JSON object")
        for name in HISTOGRAMS:
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _add_counts(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    total = dict(a)
    for key, value in b.items():
        total[key] = total.get(key, 0) + value
    return total


def _all_up(a: bool | None, b: bool | None) -> bool | None:
    if a is None or b is None:
        return b if a is None else a
    return a and b


def _largest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _smallest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def open_connections(node: Node) -> dict[str, int]:
    """Connections open now, by technique (a long poll counts while it is held)."""
    counts = dict.fromkeys(OPEN_KINDS, 0)
    for connection in node.connections:
        kind = connection.kind
        if kind in counts:
            counts[kind] += 1
    return counts


def figures_of(node: Node, process: bool = False) -> Figures:
    """This node's own figures now; with ``process``, its CPU time, memory and files too."""
    stats, tally = node.stats, node.hub.tally
    followers = node.hub.followers()
    if len(followers) > SENT_CHANNELS:
        busiest = sorted(followers.items(), key=lambda item: item[1], reverse=True)
        followers = dict(busiest[:SENT_CHANNELS])
    figures = Figures(
        workers=1,
        ready=0 if node.draining else 1,
        connections=open_connections(node),
        subscriptions=node.hub.subscription_count(),
        followers=followers,
        opened=dict(stats.opened_by_transport),
        published=stats.published,
        deliveries=dict(tally.deliveries),
        written_bytes=dict(tally.written_bytes),
        lag_counts=tally.lag.snapshot(),
        lag_sum_ms=tally.lag.sum_ms,
        heartbeat_delay_counts=tally.heartbeat_delay.snapshot(),
        heartbeat_delay_sum_ms=tally.heartbeat_delay.sum_ms,
        resets=stats.resets,
        slow_consumers=stats.slow_consumers,
        refusals=dict(stats.refusals),
        broker_errors=tally.broker_errors,
        unexpected_errors=dict(node.hub.supervisor.failures),
        presence_pending=node.hub.presence.pending,
        broker_up=tally.broker_up,
        broker_rtt=tally.broker_rtt,
    )
    return _with_process(figures) if process else figures


FILES_SECONDS = 30.0


class ProcessReadings:
    """This process's CPU time and memory, read afresh each time; its open files and start
    time, as prometheus_client reads them, at most every ``FILES_SECONDS``.

    Counting open files lists ``/proc/self/fd``, and that costs in proportion to them:
    25 ms at 18,000 connections. Read every second on every worker, it would take more than
    a core of a node holding a million.
    """

    def __init__(self) -> None:
        self._samples: dict[str, float] = {}
        self._read_at = -math.inf

    def now(self) -> dict[str, float]:
        at = time.monotonic()
        if at - self._read_at >= FILES_SECONDS:
            self._read_at = at
            self._samples = {
                sample.name: sample.value
                for family in ProcessCollector(registry=None).collect()
                for sample in family.samples
            }
            return self._samples
        samples = dict(self._samples)
        samples["process_cpu_seconds_total"] = time.process_time()
        resident = _resident_bytes()
        if resident is not None:
            samples["process_resident_memory_bytes"] = resident
        return samples


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROCESS = ProcessReadings()


def _with_process(figures: Figures) -> Figures:
    """Add this process's own numbers."""
    samples = _PROCESS.now()
    return replace(
        figures,
        cpu_seconds=samples.get("process_cpu_seconds_total", 0.0),
        resident_bytes=int(samples.get("process_resident_memory_bytes", 0)),
        open_fds=int(samples.get("process_open_fds", 0)),
        started_at=samples.get("process_start_time_seconds"),
    )
