"""The broker's primary dies under two ``tidings serve`` nodes: a Redis Cluster shard's primary,
a Sentinel group's primary, or the leader of a NATS cluster's stream.

While publishes run and subscribers follow on every technique on both nodes, the primary of
the channel is SIGKILLed; once the deployment has promoted another, the killed process is
started again (as an orchestrator would) and comes back as a replica. Publishes in between
are refused with 503 and ``Retry-After``, then succeed; every subscriber ends with every
offset, in order, with no reset; and nothing acknowledged is missing from history.

Redis runs with ``server.redis_wait_replicas = 1`` here: without it, an acknowledged write
may be lost in a failover, which test_redis_write_loss.py measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import tidings
from tests.client.support import FAST, collect
from tests.cluster.support import Node, offset, publish, wait_until
from tests.deployments import wait_until as wait_for_state
from tests.deployments import with_prefix
from tidings import ClientEvent
from tidings.brokers import Broker, broker_for
from tidings.config import load_settings
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event

pytestmark = pytest.mark.timeout(120)

DEPLOYMENTS = {"redis+cluster": "redis_cluster", "redis+sentinel": "redis_sentinel"}
DEPLOYMENTS["nats-cluster"] = "nats_cluster"
NODE_ENV = {
    "redis+cluster": {"TIDINGS_SERVER_REDIS_WAIT_REPLICAS": "1"},
    "redis+sentinel": {"TIDINGS_SERVER_REDIS_WAIT_REPLICAS": "1"},
    "nats-cluster": {},
}
TRANSPORTS = ("websocket", "sse", "long_poll", "poll")
MAX_ATTEMPTS = 3000  # publishes in one test, at most
PACE = 0.02  # seconds between publishes: a steady stream, not a flood


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a measured figure in the test run's output (the README quotes them)."""
    with capsys.disabled():
        print(f"\n{line}")


@dataclass
class Attempt:
    at: float
    status: int  # 0: no answer (a timeout or a dropped connection)
    cursor: str = ""
    retry_after: str | None = None


@dataclass
class Publisher:
    """Publishes on one channel through the nodes in turn, recording every answer."""

    http: httpx.AsyncClient
    nodes: list[Node]
    channel: str
    attempts: list[Attempt] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        for n in range(MAX_ATTEMPTS):
            if self.stopping:
                return
            node = self.nodes[n % len(self.nodes)]
            try:
                answer = await self.http.post(
                    f"{node.url}/api/publish", json={"channel": self.channel, "data": n}
                )
            except httpx.HTTPError:
                self.attempts.append(Attempt(time.monotonic(), 0))
                continue
            cursor = answer.json().get("id", "") if answer.status_code == 200 else ""
            retry_after = answer.headers.get("retry-after")
            self.attempts.append(Attempt(time.monotonic(), answer.status_code, cursor, retry_after))
            await asyncio.sleep(PACE)  # pacing between publishes, not a wait for an event

    def of(self, status: int) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.status == status]

    def succeeding(self, count: int) -> bool:
        """The last ``count`` publishes were all acknowledged."""
        last = self.attempts[-count:]
        return len(last) == count and all(attempt.status == 200 for attempt in last)

    def ok_since(self, moment: float) -> int:
        return sum(1 for a in self.attempts if a.status == 200 and a.at > moment)


async def readiness(http: httpx.AsyncClient, node: Node, seen: list[int]) -> None:
    """Record /readyz answers of ``node`` until cancelled (bounded in count)."""
    for _ in range(5000):
        try:
            seen.append((await http.get(f"{node.url}/readyz", timeout=3)).status_code)
        except httpx.HTTPError:
            seen.append(0)
        await asyncio.sleep(0.05)  # a probe's period


async def promotion(target: Any, killed: Any, channel: str, prefix: str) -> None:
    """Wait until the deployment names another primary (or leader); its logs if it does not."""
    try:
        await wait_until(
            lambda: target.failed_over(killed, channel, prefix), "a promotion", 30, 0.1
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{target.logs()}") from None


async def poll_as_a_client(
    http: httpx.AsyncClient, node: Node, channel: str, since: str
) -> dict[str, Any]:
    """A short poll as a client makes it: a ``503`` is asked again after its Retry-After."""
    for _ in range(10):
        answer = await http.get(f"{node.url}/poll", params={"channel": channel, "since": since})
        if answer.status_code != 503:
            break
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
    assert answer.status_code == 200, (answer.status_code, answer.headers, answer.text)
    page: dict[str, Any] = answer.json()
    return page


@contextlib.asynccontextmanager
async def started_nodes(url: str, env: dict[str, str]) -> AsyncIterator[list[Node]]:
    nodes = [Node(url, env) for _ in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(node.wait_listening) for node in nodes))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
async def test_a_failover_loses_no_acknowledged_event(
    deployment: str,
    request: pytest.FixtureRequest,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target: Any = request.getfixturevalue(DEPLOYMENTS[deployment])
    await asyncio.to_thread(wait_whole, target)
    url = with_prefix(target.url)
    prefix = parse_qs(urlsplit(url).query)["prefix"][-1]
    channel = "failover-" + uuid.uuid4().hex[:8]
    async with (
        started_nodes(url, NODE_ENV[deployment]) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        first = await publish(http, nodes[0], channel, "first")
        followers = []
        for node in nodes:
            for transport in TRANSPORTS:
                client = await stack.enter_async_context(
                    tidings.connect(node.url, transport=transport, **FAST)
                )
                seen = await stack.enter_async_context(
                    collect(client.subscribe(channel, since=first))
                )
                followers.append((node.port, transport, seen))
        ready: dict[int, list[int]] = {node.port: [] for node in nodes}
        probes = [asyncio.create_task(readiness(http, node, ready[node.port])) for node in nodes]
        publisher = Publisher(http, nodes, channel)
        publishing = asyncio.create_task(publisher.run())
        try:
            await wait_until(lambda: publisher.ok_since(0) >= 10, "10 publishes before the kill")
            killed = await asyncio.to_thread(target.kill_primary, channel, prefix)
            killed_at = time.monotonic()
            await promotion(target, killed, channel, prefix)
            promoted_at = time.monotonic()
            await asyncio.to_thread(target.rejoin, killed)
            rejoined_at = time.monotonic()
            await wait_until(lambda: publisher.succeeding(20), "20 publishes in a row", 30)
            # Readiness comes back once each node's fan-out link is rebuilt, which its backoff
            # may put a little after publishes succeed.
            await wait_until(
                lambda: all(r and r[-1] == 200 for r in ready.values()), "/readyz 200", 15
            )
            ready_at = time.monotonic()
        finally:
            publisher.stopping = True
            await asyncio.wait_for(publishing, 30)
            for probe in probes:
                probe.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

        refused = publisher.of(503)
        acked = [offset(first)] + [offset(a.cursor) for a in publisher.of(200)]
        unanswered = publisher.of(0)
        others = [a for a in publisher.attempts if a.status not in (0, 200, 503)]
        assert not others, [(a.status, a.at) for a in others]
        assert refused, "no publish was refused during the failover"
        assert all(a.retry_after for a in refused)
        assert len(unanswered) <= 3, "publishes that got no answer at all"
        assert acked == sorted(set(acked)), "acknowledged offsets are not increasing"
        assert [a.status for a in publisher.attempts[-20:]] == [200] * 20
        last = max(acked)

        # Every follower on every technique: every offset, in order, none twice, no reset.
        for port, transport, seen in followers:
            await seen.wait_for(
                lambda items: any(
                    getattr(item, "id", None) and offset(item.id) >= last for item in items
                ),
                f"offset {last} on {transport}",
                30,
            )
            offsets = [offset(event.id) for event in seen.events]
            others = [item for item in seen.items if not isinstance(item, ClientEvent)]
            assert others == [], (port, transport, others, offsets)
            assert offsets == list(range(offset(first) + 1, last + 1)), (port, transport, offsets)
            assert set(acked[1:]) <= set(offsets)
        page = await poll_as_a_client(http, nodes[1], channel, first)
        assert page["cursor"].partition(".")[0] == first.partition(".")[0], "a new epoch"
        if deployment.startswith("redis"):
            # The fan-out link to the dead primary was down: readiness said so on each node.
            for port, statuses in ready.items():
                assert 503 in statuses, (port, statuses)

        first_refused, last_refused = refused[0].at, refused[-1].at
        back = next(a.at for a in publisher.attempts if a.at > last_refused and a.status == 200)
        report(
            capsys,
            f"[{deployment}] promoted {promoted_at - killed_at:.1f} s after the kill; "
            f"killed process back as a replica {rejoined_at - killed_at:.1f} s after; "
            f"{len(refused)} publishes refused with 503 over "
            f"{last_refused - first_refused:.1f} s; publishes succeed again "
            f"{back - killed_at:.1f} s after the kill; {len(unanswered)} unanswered; "
            f"{len(acked)} acknowledged, none lost; /readyz 200 on both nodes again "
            f"{ready_at - killed_at:.1f} s after the kill",
        )


# Acknowledged writes lost in a Redis failover, with and without WAIT.

CONCURRENT = 16  # publishers at once, so that some writes are always in flight at the kill
COST_SAMPLES = 300  # sequential publishes timed while the deployment is healthy
BIG_HISTORY = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "100000"}


@dataclass
class Load:
    """Publishers hammering one channel through one broker; what was acknowledged, when."""

    broker: Broker
    channel: str
    acked: list[tuple[float, float, Event]] = field(default_factory=list)  # began, answered
    refused: list[float] = field(default_factory=list)
    stopping: bool = False
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    async def run(self) -> None:
        for _ in range(5000):
            if self.stopping:
                return
            data = b"%d" % next(self._numbers)
            began = time.monotonic()
            try:
                event = await self.broker.publish(self.channel, "m", data)
            except BrokerUnavailable:
                self.refused.append(time.monotonic())
                await asyncio.sleep(0.01)  # pacing while the shard is down, not a wait
                continue
            self.acked.append((began, time.monotonic(), event))

    def acked_since(self, moment: float) -> int:
        return sum(1 for _, at, _ in self.acked if at > moment)


def wait_whole(target: Any) -> None:
    wait_for_state(target.whole, "a replica online for every primary")


async def timed_publishes(broker: Broker, channel: str) -> list[float]:
    """Milliseconds per publish, one at a time."""
    spent = []
    for n in range(COST_SAMPLES):
        began = time.perf_counter()
        await broker.publish(channel, "m", b"cost %d" % n)
        spent.append((time.perf_counter() - began) * 1000)
    return sorted(spent)


async def held_by_history(broker: Broker, channel: str, epoch: str) -> set[tuple[int, bytes]]:
    page = await broker.history(channel, Cursor(epoch, 0), 1_000_000)
    if page.reset is not None:
        return set()  # the whole epoch is gone: everything acknowledged in it is lost
    return {(event.offset, bytes(event.data)) for event in page.events}


@pytest.mark.parametrize("wait_replicas", [0, 1])
@pytest.mark.parametrize("deployment", ["redis+cluster", "redis+sentinel"])
async def test_acknowledged_writes_lost_in_a_redis_failover(
    deployment: str,
    wait_replicas: int,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target: Any = request.getfixturevalue(DEPLOYMENTS[deployment])
    url = with_prefix(target.url)
    prefix = parse_qs(urlsplit(url).query)["prefix"][-1]
    environ = {**BIG_HISTORY, "TIDINGS_SERVER_REDIS_WAIT_REPLICAS": str(wait_replicas)}
    await asyncio.to_thread(wait_whole, target)  # a replica per primary, as WAIT needs
    broker = broker_for(url, load_settings(environ=environ))
    channel = "loss-" + uuid.uuid4().hex[:8]
    try:
        cost = await timed_publishes(broker, channel)
        load = Load(broker, channel)
        publishers = [asyncio.create_task(load.run()) for _ in range(CONCURRENT)]
        try:
            await wait_until(lambda: len(load.acked) >= 200, "200 publishes under load")
            killed = await asyncio.to_thread(target.kill_primary, channel, prefix)
            killed_at = time.monotonic()
            await promotion(target, killed, channel, prefix)
            promoted_at = time.monotonic()
            if not wait_replicas:
                await wait_until(lambda: load.acked_since(killed_at) >= 50, "acks on the new")
            await asyncio.to_thread(target.rejoin, killed)
            rejoined_at = time.monotonic()
            await wait_until(lambda: load.acked_since(rejoined_at) >= 50, "acks once rejoined")
        finally:
            load.stopping = True
            await asyncio.wait_for(asyncio.gather(*publishers), 30)

        epoch = load.acked[0][2].epoch
        held = await held_by_history(broker, channel, epoch)
        lost = [(at, e) for _, at, e in load.acked if (e.offset, bytes(e.data)) not in held]
        # Answers already on their way when the primary died may be read after the kill:
        # publishes succeed again with the first one sent after it.
        back = min(at for began, at, _ in load.acked if began > killed_at)
        report(
            capsys,
            f"[{deployment}] redis_wait_replicas={wait_replicas}: publish p50 "
            f"{statistics.median(cost):.2f} ms, p99 {cost[int(len(cost) * 0.99)]:.2f} ms "
            f"(healthy, one at a time); {len(load.acked)} acknowledged by {CONCURRENT} "
            f"concurrent publishers, {len(lost)} of them lost in the failover; promoted "
            f"{promoted_at - killed_at:.1f} s after the kill, the killed process back as a "
            f"replica {rejoined_at - killed_at:.1f} s after; publishes succeed again "
            f"{back - killed_at:.1f} s after the kill",
        )
        if wait_replicas:
            assert lost == [], "a write a replica confirmed was lost"
        # Without WAIT only the replication lag's worth can go: what was acknowledged in the
        # last moment before the kill, never older writes.
        assert all(killed_at - at < 1.0 for at, _ in lost), [killed_at - at for at, _ in lost]
    finally:
        await broker.close()
