"""``tidings serve --workers 2`` on Redis: one port, two processes, one node.

Subscribers land on both workers (the kernel spreads connections over the ``SO_REUSEPORT``
listeners; which worker holds each is read from ``/proc``), one publish reaches them all,
``/metrics`` shows the node's totals whichever worker answers, and SIGTERM drains both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.support import LeanSSE, offset, publish, wait_until, wait_until_async
from tests.cluster.workers import WorkersNode, metric, scrape, socket_owner
from tests.server.support import sse_stream
from tests.server.test_admin import next_snapshot

pytestmark = pytest.mark.timeout(90)

COUNT = 20
MOST_SUBSCRIBERS = 40  # opened until each worker has a few; 2**-39 that one has none


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[WorkersNode]:
    started = WorkersNode(redis_url)
    try:
        await asyncio.to_thread(started.wait_listening)
        yield started
    finally:
        await asyncio.to_thread(started.stop)


async def spread_subscribers(
    node: WorkersNode, channel: str, since: str, each: int = 3
) -> tuple[list[LeanSSE], dict[int, list[LeanSSE]]]:
    """SSE subscribers on the node's one port until every worker holds ``each`` of them."""
    pids = list(node.worker_pids().values())
    assert len(pids) == 2, node.logs()
    held: dict[int, list[LeanSSE]] = {pid: [] for pid in pids}
    subscribers: list[LeanSSE] = []
    while min(len(found) for found in held.values()) < each:
        assert len(subscribers) < MOST_SUBSCRIBERS, {pid: len(s) for pid, s in held.items()}
        subscriber = LeanSSE([node.url], channel, since)
        subscriber.start()
        subscribers.append(subscriber)
        await wait_until(lambda s=subscriber: s.connected, "a subscriber connected", 10)
        owner = await wait_until(
            lambda s=subscriber: socket_owner(node.port, s.local_port, pids),
            "the worker that holds the subscriber",
            10,
        )
        held[owner].append(subscriber)
    return subscribers, held


async def test_one_publish_reaches_subscribers_on_every_worker_and_metrics_add_up(
    node: WorkersNode, http: httpx.AsyncClient
) -> None:
    channel = "workers-" + uuid.uuid4().hex[:8]
    first = await publish(http, node, channel, 0)
    subscribers, held = await spread_subscribers(node, channel, first)
    try:
        ids = [await publish(http, node, channel, n) for n in range(1, COUNT + 1)]
        assert [offset(cursor) for cursor in ids] == list(range(2, COUNT + 2))
        await wait_until(
            lambda: all(len(s.offsets) >= COUNT for s in subscribers), "every event everywhere"
        )
        for subscriber in subscribers:
            assert subscriber.offsets == list(range(2, COUNT + 2)), subscriber.errors[-3:]
            assert subscriber.resets == []
            assert subscriber.connects == 1

        # Every scrape, on a fresh connection to either worker, shows the node's total.
        total = COUNT * len(subscribers)
        pids = list(held)
        converged: set[int] = set()
        deadline = time.monotonic() + 15
        while converged != set(pids):  # each worker has heard the other's latest figures
            assert time.monotonic() < deadline, f"only {converged} of {pids} showed {total}"
            text, answered = await scrape(node.port, pids)
            if metric(text, 'tidings_deliveries_total{transport="sse"}') == total:
                converged.add(answered or 0)
        answered_by = set()
        for _ in range(12):
            text, answered = await scrape(node.port, pids)
            answered_by.add(answered)
            assert metric(text, 'tidings_deliveries_total{transport="sse"}') == total
            assert metric(text, "tidings_publishes_total") == COUNT + 1
            assert metric(text, 'tidings_connections{transport="sse"}') == len(subscribers)
            assert metric(text, "tidings_workers") == 2
        assert answered_by <= set(pids)

        # The admin page, served by either worker, shows the node too.
        async with (
            httpx.AsyncClient(base_url=node.url, trust_env=False, timeout=10) as client,
            sse_stream(client, "/admin/stream") as feed,
        ):
            snapshot = await next_snapshot(feed)
            assert snapshot["workers"] == 2
            assert snapshot["deliveries"]["total"] == total
            assert snapshot["connections"]["sse"] == len(subscribers)
            followed = [{"channel": channel, "followers": len(subscribers)}]
            assert snapshot["channels"]["by_followers"] == followed
        answer = await http.get(f"{node.url}/readyz")
        assert answer.status_code == 200, answer.text
    finally:
        await asyncio.gather(*(s.stop() for s in subscribers))


async def test_sigterm_drains_every_worker(node: WorkersNode, http: httpx.AsyncClient) -> None:
    channel = "drain-" + uuid.uuid4().hex[:8]
    first = await publish(http, node, channel, 0)
    subscribers, held = await spread_subscribers(node, channel, first, each=1)
    try:
        started = time.monotonic()
        os.kill(node.process.pid, signal.SIGTERM)
        status = await asyncio.to_thread(node.process.wait, 20)
        elapsed = time.monotonic() - started
    finally:
        await asyncio.gather(*(s.stop() for s in subscribers))
    logs = node.logs()
    assert status == 0, logs
    assert elapsed < 10, elapsed  # the window is 0.2 s (FAST_ENV): nobody waited for a timeout
    drained = [line for line in logs.splitlines() if "drained in" in line]
    assert sorted(line.rpartition("worker=")[2] for line in drained) == ["1", "2"], logs
    assert all("0 dropped at the deadline" in line for line in drained), logs
    assert "all 2 workers stopped" in logs, logs
    for pid in held:  # both workers are gone, not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_memory_broker_with_two_workers_is_refused_at_start_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "server.broker" in result.stderr
    assert "--broker redis://" in result.stderr
    assert "listening on" not in result.stderr


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(node: WorkersNode) -> None:
    pids = list(node.worker_pids().values())
    assert len(pids) == 2, node.logs()
    node.kill()  # SIGKILL to the supervisor: nobody forwards a signal to the workers

    def gone(pid: int) -> bool:
        try:  # exited, or a zombie its new parent has not reaped yet
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True

    await wait_until(lambda: all(gone(pid) for pid in pids), "both workers to exit", 15, 0.05)
    await asyncio.to_thread(node.wait_for_log, "the supervisor is gone; draining", 5)


async def test_readyz_answers_503_while_another_worker_is_not_ready(node: WorkersNode) -> None:
    pids = node.worker_pids()
    stopped = pids[2]

    async def ready_status() -> tuple[int, str] | None:
        """/readyz on a fresh connection; None if it landed on the stopped worker."""
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            try:
                answer = await client.get(f"{node.url}/readyz")
            except httpx.TimeoutException:
                return None
            return answer.status_code, answer.text

    os.kill(stopped, signal.SIGSTOP)  # alive, listening, silent: it stops reporting
    try:

        async def not_ready() -> bool:
            answer = await ready_status()
            return answer is not None and answer[0] == 503 and "worker 2" in answer[1]

        await wait_until_async(not_ready, "a 503 naming the silent worker", 20)
    finally:
        os.kill(stopped, signal.SIGCONT)

    async def ready() -> bool:
        answer = await ready_status()
        return answer is not None and answer[0] == 200

    await wait_until_async(ready, "ready again once it reports", 20)
