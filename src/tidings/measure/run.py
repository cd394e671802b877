"""One bench run: the four techniques in turn, the same load on each, measured.

For each technique the run opens ``subscribers`` clients forced to it (``tidings.connect``,
one client and so one connection each) on a fresh channel, through the counting relay; then
publishes ``rate`` events a second for ``seconds`` with ``POST /api/publish`` straight to the
server, each carrying the monotonic time it was sent; then waits (bounded) for the last ones to
arrive. Techniques run one after another so that the server's CPU time in each window is
that technique's alone.

What each number is:

- latency: from just before the publish request to the subscriber handing the event out;
  the publisher and the subscribers share this process and its clock.
- requests and bytes per event: the relay's counts over the publishing window and the wait
  after it (the connections' opening requests are not in it), divided by the events
  delivered: what one subscriber pays for one event.
- server CPU per event: the server's CPU time over the same window divided by the events
  delivered (one delivery to one subscriber).
- memory per connection: measured first, in a phase of its own (see :func:`_memory`): the
  server's RSS growth while a group of subscribers opens and settles (a long poll held),
  divided by their number. Allocators and page granularity make it a rough figure; more
  subscribers make it steadier.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from tidings.client import TRANSPORTS, Backoff, Client, ClientEvent, Subscription, connect
from tidings.client.publish import bearer, post_publish
from tidings.exceptions import ClientError
from tidings.measure.process import ServerProcesses
from tidings.measure.relay import Relay, Tally

__all__ = ["BenchPlan", "Measured", "Progress", "run_bench"]

OPEN_SECONDS = 30.0  # every subscriber of a technique must be following by then
DRAIN_SECONDS = 5.0  # after the last publish, beyond one short-poll interval
# The requests a subscriber has made once it is in its steady state: the handshake or stream
# request; the opening poll and the held one; the opening poll (then idle until its interval).
STEADY_REQUESTS = {"websocket": 1, "sse": 1, "long_poll": 2, "poll": 1}

Progress = Callable[[str, float], None]  # (what is happening, fraction of the run done)


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """The load: ``rate`` events a second for ``seconds``, to ``subscribers`` per technique."""

    url: str
    rate: float = 10.0
    seconds: float = 10.0
    subscribers: int = 50
    poll_interval: float = 2.0
    api_key: str | None = None
    server: ServerProcesses | None = None
    techniques: tuple[str, ...] = TRANSPORTS

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1000:
            raise ClientError("--rate must be more than 0 and at most 1000 events a second")
        if not 0 < self.seconds <= 3600:
            raise ClientError("--seconds must be more than 0 and at most 3600")
        if not 1 <= self.subscribers <= 5000:
            raise ClientError("--subscribers must be from 1 to 5000")
        if self.poll_interval <= 0:
            raise ClientError("--poll-interval must be more than 0")
        unknown = set(self.techniques) - set(TRANSPORTS)
        if unknown or not self.techniques:
            raise ClientError(f"techniques are among {TRANSPORTS}, not {sorted(unknown)}")

    @property
    def events(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass(frozen=True, slots=True)
class Measured:
    """One technique's numbers (None: not measured, e.g. CPU of a remote server)."""

    technique: str
    published: int
    delivered: int
    expected: int
    latency_p50: float | None
    latency_p99: float | None
    requests_per_event: float | None
    bytes_down_per_event: float | None
    bytes_up_per_event: float | None
    cpu_per_event: float | None  # seconds
    memory_per_connection: float | None  # bytes
    publish_seconds: float  # how long publishing took (the plan's seconds, unless it lagged)

    def with_memory(self, memory_per_connection: float | None) -> Measured:
        return dataclasses.replace(self, memory_per_connection=memory_per_connection)


class _Receipts:
    """Latencies of every delivery of one technique, and a wake-up when all are in."""

    def __init__(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.expected = expected
        self.complete = asyncio.Event()

    def add(self, event: ClientEvent) -> None:
        sent = event.data.get("sent") if isinstance(event.data, dict) else None
        if isinstance(sent, float):
            self.latencies.append(time.monotonic() - sent)
        if len(self.latencies) >= self.expected:
            self.complete.set()


async def run_bench(plan: BenchPlan, progress: Progress) -> list[Measured]:
    """Measure the server's memory per connection, then every technique of ``plan`` in turn."""
    parts = urlsplit(plan.url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ClientError(
            f"the bench counts bytes through a plain TCP relay: give an http:// URL, "
            f"not {plan.url!r}"
        )
    relay = Relay(parts.hostname, parts.port or 80)
    await relay.start()
    parts_done = len(plan.techniques) + 1  # the memory phase, then one part per technique
    try:
        memory: dict[str, float] = {}
        if plan.server is not None:
            memory = await _memory(plan, plan.server, relay, _part(progress, 0, parts_done, ""))
        async with httpx.AsyncClient(timeout=10.0) as publisher:
            results = []
            for index, technique in enumerate(plan.techniques, start=1):
                step = _part(progress, index, parts_done, f"{technique}: ")
                measured = await _measure(plan, technique, relay, publisher, step)
                results.append(measured.with_memory(memory.get(technique)))
            progress("done", 1.0)
            return results
    finally:
        await relay.stop()


def _part(progress: Progress, index: int, parts: int, prefix: str) -> Progress:
    """Report one part of the run as its share of the whole."""

    def step(what: str, done: float) -> None:
        progress(prefix + what, (index + done) / parts)

    return step


@contextlib.asynccontextmanager
async def _subscribers(
    plan: BenchPlan, technique: str, count: int, relay: Relay, receipts: _Receipts
) -> AsyncIterator[str]:
    """``count`` clients forced to ``technique``, following a fresh channel (yielded), reading."""
    channel = f"bench-{technique}-{secrets.token_hex(4)}"
    clients = [_client(plan, technique, relay) for _ in range(count)]
    readers: list[asyncio.Task[None]] = []
    try:
        subscriptions = [client.subscribe(channel) for client in clients]
        async with asyncio.timeout(OPEN_SECONDS):
            await asyncio.gather(*(subscription.open() for subscription in subscriptions))
        readers = [asyncio.create_task(_read(s, receipts)) for s in subscriptions]
        yield channel
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)


async def _memory(
    plan: BenchPlan, server: ServerProcesses, relay: Relay, progress: Progress
) -> dict[str, float]:
    """The server's RSS growth per connection, each technique's on top of the others'.

    Every group stays open until all are measured, so no group lands in memory that an
    earlier one freed; one subscriber of each technique is opened first, so that what the
    server allocates once (a module's first use, a channel's state) is not counted.
    """
    idle = _Receipts(0)
    per_connection: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        progress("memory: warming up", 0.0)
        for technique in plan.techniques:
            await stack.enter_async_context(_subscribers(plan, technique, 1, relay, idle))
        for index, technique in enumerate(plan.techniques):
            share = index / len(plan.techniques)
            progress(f"memory: {plan.subscribers} {technique} subscribers", share)
            before = server.rss_bytes()
            requests = relay.tally.requests + plan.subscribers * STEADY_REQUESTS[technique]
            await stack.enter_async_context(
                _subscribers(plan, technique, plan.subscribers, relay, idle)
            )
            await relay.requests_reach(requests, OPEN_SECONDS)
            per_connection[technique] = (server.rss_bytes() - before) / plan.subscribers
    return per_connection


async def _measure(
    plan: BenchPlan,
    technique: str,
    relay: Relay,
    publisher: httpx.AsyncClient,
    progress: Progress,
) -> Measured:
    progress(f"opening {plan.subscribers} subscribers", 0.0)
    receipts = _Receipts(plan.events * plan.subscribers)
    async with _subscribers(plan, technique, plan.subscribers, relay, receipts) as channel:
        counted_from = relay.tally.copy()
        cpu_before = plan.server.cpu_seconds() if plan.server else None
        started = time.monotonic()
        published = await _publish(plan, channel, publisher, progress)
        publish_seconds = time.monotonic() - started
        progress("waiting for the last deliveries", 1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(plan.poll_interval + DRAIN_SECONDS):
                await receipts.complete.wait()
        cpu = None
        if plan.server is not None and cpu_before is not None:
            cpu = plan.server.cpu_seconds() - cpu_before
        counted = relay.tally.since(counted_from)
    return _result(technique, published, publish_seconds, receipts, counted, cpu, plan)


def _client(plan: BenchPlan, technique: str, relay: Relay) -> Client:
    url = f"http://127.0.0.1:{relay.port}"
    return connect(
        url,
        transport=technique,
        poll_interval=plan.poll_interval,
        backoff=Backoff(initial=0.05, maximum=1.0),
        open_timeout=OPEN_SECONDS,
    )


async def _read(subscription: Subscription, receipts: _Receipts) -> None:
    async for item in subscription:
        if isinstance(item, ClientEvent):
            receipts.add(item)


async def _publish(
    plan: BenchPlan, channel: str, publisher: httpx.AsyncClient, progress: Progress
) -> int:
    """Publish ``plan.events`` on a fixed schedule; how many were stored."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    headers = bearer(plan.api_key)
    published = 0
    for number in range(plan.events):
        delay = start + number / plan.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule: one event every 1/rate seconds
        body = {"channel": channel, "data": {"n": number, "sent": time.monotonic()}}
        await post_publish(publisher, plan.url, body, headers)
        published += 1
        progress(f"{published}/{plan.events} published", published / plan.events)
    return published


def _result(
    technique: str,
    published: int,
    publish_seconds: float,
    receipts: _Receipts,
    counted: Tally,
    cpu: float | None,
    plan: BenchPlan,
) -> Measured:
    delivered = len(receipts.latencies)
    per = 1 / delivered if delivered else None
    latencies = sorted(receipts.latencies)
    return Measured(
        technique=technique,
        published=published,
        delivered=delivered,
        expected=published * plan.subscribers,
        latency_p50=statistics.median(latencies) if latencies else None,
        latency_p99=_percentile(latencies, 0.99),
        requests_per_event=counted.requests * per if per else None,
        bytes_down_per_event=counted.received * per if per else None,
        bytes_up_per_event=counted.sent * per if per else None,
        cpu_per_event=cpu * per if per and cpu is not None else None,
        memory_per_connection=None,
        publish_seconds=publish_seconds,
    )


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
