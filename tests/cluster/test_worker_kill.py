"""``kill -9`` of one worker of ``tidings serve --workers 2`` in the middle of a stream.

Its SSE subscribers reconnect to the same port, land on the other worker (or the restarted
one) with ``Last-Event-ID``, and end with exactly the published offsets; the supervisor
starts the worker again, and the node's counters do not go back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.cluster.support import offset, publish, wait_until, wait_until_async
from tests.cluster.test_workers import spread_subscribers
from tests.cluster.workers import WorkersNode, metric, scrape

pytestmark = pytest.mark.timeout(90)

BEFORE = 15
AFTER = 45  # well under the 100 events of history a reconnecting subscriber resumes from


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[WorkersNode]:
    started = WorkersNode(redis_url)
    try:
        await asyncio.to_thread(started.wait_listening)
        yield started
    finally:
        await asyncio.to_thread(started.stop)


async def publish_retrying(http: httpx.AsyncClient, url: str, channel: str, n: int) -> str:
    """Publish event ``n``; the worker that took it may die, so retry with the same key."""
    deadline = time.monotonic() + 20
    while True:
        try:
            answer = await http.post(
                f"{url}/api/publish",
                json={"channel": channel, "data": n, "idempotency_key": f"{channel}-{n}"},
            )
            if answer.status_code == 200:
                return str(answer.json()["id"])
            assert answer.status_code == 503, answer.text  # a draining or starting worker
        except httpx.TransportError:
            pass  # its connection went down with the worker: the next one reaches another
        assert time.monotonic() < deadline, f"event {n} could not be published"
        await asyncio.sleep(0.05)


async def test_kill_9_of_a_worker_loses_no_event_for_its_clients(
    node: WorkersNode, http: httpx.AsyncClient
) -> None:
    channel = "kill9-" + uuid.uuid4().hex[:8]
    first = await publish(http, node, channel, 0)
    subscribers, held = await spread_subscribers(node, channel, first, each=3)
    pids = list(held)
    try:
        for n in range(1, BEFORE + 1):
            await publish_retrying(http, node.url, channel, n)
        await wait_until(
            lambda: all(len(s.offsets) >= BEFORE for s in subscribers), "the first events"
        )
        delivered_before = BEFORE * len(subscribers)

        async def counted_before() -> bool:
            text, _ = await scrape(node.port, pids)
            return metric(text, 'tidings_deliveries_total{transport="sse"}') == delivered_before

        await wait_until_async(counted_before, "the node's count of the first events", 15)

        victim = max(pids, key=lambda pid: len(held[pid]))
        orphans = held[victim]
        number = next(n for n, pid in node.worker_pids().items() if pid == victim)

        async def publish_rest() -> list[str]:
            ids = []
            for n in range(BEFORE + 1, BEFORE + AFTER + 1):
                ids.append(await publish_retrying(http, node.url, channel, n))
                await asyncio.sleep(0.01)  # a stream of events, not one burst
            return ids

        publishing = asyncio.create_task(publish_rest())
        await wait_until(
            lambda: all(len(s.offsets) >= BEFORE + 5 for s in subscribers), "mid-stream"
        )
        os.kill(victim, signal.SIGKILL)
        ids = await publishing
        assert sorted(offset(cursor) for cursor in ids) == list(
            range(BEFORE + 2, BEFORE + AFTER + 2)
        )

        total = BEFORE + AFTER
        await wait_until(
            lambda: all(len(s.offsets) >= total for s in subscribers), "every event after the kill"
        )
        for subscriber in subscribers:
            assert subscriber.offsets == list(range(2, total + 2)), subscriber.errors[-3:]
            assert subscriber.resets == []
        assert all(s.connects >= 2 for s in orphans)  # they did lose their worker

        await asyncio.to_thread(node.wait_for_log, f"worker {number} restarted", 30)
        assert "was killed by SIGKILL" in node.logs()
        restarted = await asyncio.to_thread(
            node.wait_serving, lambda pids: victim not in pids.values(), "the new worker serving"
        )
        fresh = list(restarted.values())
        assert victim not in fresh and len(fresh) == 2

        async def whole_again() -> bool:
            text, _ = await scrape(node.port, fresh)
            return (
                metric(text, "tidings_workers") == 2
                and metric(text, "tidings_worker_restarts_total") == 1
            )

        await wait_until_async(whole_again, "the node counting its restarted worker", 15)
        text, _ = await scrape(node.port, fresh)
        # what the dead worker delivered stays in the node's totals (supervisor tests: exactly)
        assert metric(text, 'tidings_deliveries_total{transport="sse"}') >= delivered_before
        answer = await http.get(f"{node.url}/readyz")
        assert answer.status_code == 200, answer.text
    finally:
        await asyncio.gather(*(s.stop() for s in subscribers))
