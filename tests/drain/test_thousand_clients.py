"""1,000 clients (WebSocket, SSE, long polling) leave a draining node while events keep coming.

Two ``tidings serve`` nodes share Redis behind nginx (deploy/nginx.conf), node B as nginx's
backup, so every client starts on node A. Node A is sent SIGTERM while a publisher keeps
publishing through nginx: A refuses new connections at once and asks its clients back within
``drain_seconds``, and they come back through nginx to node B, from their last cursor. Every
client ends with every acknowledged event exactly once, in order; the reconnect delays are
spread over the window, not bunched at its start; and A exits within the window and its grace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster_nginx.test_nginx import Nginx, delete_keys, nginx_binary
from tests.drain.support import Fleet, Publisher, histogram, render_histogram, terminate
from tests.redis.support import REDIS_URL, require_redis
from tests.serve_process import ServeProcess
from tidings.server.drain import GRACE_SECONDS

WINDOW = 4.0
KINDS = {"websocket": 400, "sse": 400, "long_poll": 200}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nodes() -> Iterator[list[ServeProcess]]:
    nginx_binary()
    require_redis()
    prefix = "test-drain-" + uuid.uuid4().hex[:12]
    env = {"TIDINGS_SERVER_DRAIN_SECONDS": str(WINDOW)}
    started = [
        ServeProcess("--no-lab", "--broker", f"{REDIS_URL}?prefix={prefix}", env=env)
        for _ in range(2)
    ]
    try:
        for node in started:
            node.wait_listening()
        yield started
    finally:
        for node in started:
            node.stop()
        delete_keys(prefix)


async def test_a_thousand_clients_leave_a_draining_node_and_miss_nothing(
    nodes: list[ServeProcess], tmp_path: Path
) -> None:
    draining, staying = nodes
    ports = [node.port for node in nodes]
    proxy = Nginx(nginx_binary(), tmp_path / "nginx", ports, backup_last=True)
    channel = "drain-" + uuid.uuid4().hex[:8]
    since = httpx.get(f"{proxy.url}/poll", params={"channel": channel}, timeout=5).json()["cursor"]
    fleet = Fleet(proxy.url, channel, since, WINDOW)
    publisher = Publisher(proxy.url, channel, interval=0.25)
    loop = asyncio.get_running_loop()
    publishing: asyncio.Task[None] | None = None
    try:
        await fleet.open(KINDS)
        publishing = asyncio.create_task(publisher.run())
        await publisher.acked_at_least(3, timeout=10)

        sigterm_at = loop.time()
        started = time.monotonic()
        await asyncio.to_thread(terminate, draining, WINDOW)
        exited_after = time.monotonic() - started
        acked_at_sigterm = len(publisher.acked)
        publisher.until = sigterm_at + WINDOW + 1.5
        await publishing
        published_during = len(publisher.acked) - acked_at_sigterm

        last = publisher.acked[-1]
        short = await fleet.reached(last, timeout=30)
        assert not short, f"{len(short)} clients never got {last}: {[m.kind for m in short][:10]}"
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
        await fleet.close()
        proxy.stop()

    for member in fleet.members:
        assert member.ids == publisher.acked, (member.kind, member.ids, publisher.acked)
        assert member.data == publisher.values
        assert member.resets == 0

    # The WebSocket and SSE clients that were on the draining node: the delay each was asked
    # to wait (SSE retry:, or the pause a 1012 makes the client draw) and when it came back.
    moved = [m for m in fleet.members if m.kind != "long_poll" and m.asked_after(sigterm_at)]
    asked = [m.asked_after(sigterm_at)[0] for m in moved]
    delays = [delay or 0.0 for _, delay in asked]
    back = [m.reconnected_after(sigterm_at)[0] for m in moved]
    counts = histogram(delays, WINDOW)
    back_counts = histogram(back, WINDOW)
    print(
        f"\n{len(moved)} WebSocket and SSE clients and {KINDS['long_poll']} long polls"
        " left the draining node"
        f" (drain_seconds={WINDOW:g}; it exited after {exited_after:.2f} s;"
        f" {published_during} events published meanwhile, {publisher.resent} sent again)."
        f"\nThe delays they were asked to wait:\n{render_histogram(counts, WINDOW)}"
        f"\nWhen they were back, from the SIGTERM:\n{render_histogram(back_counts, WINDOW)}"
    )
    log = draining.logs()
    assert "draining: " in log and "drained in " in log, log
    assert exited_after < WINDOW + GRACE_SECONDS + 1.0, exited_after
    assert published_during >= 2, "the publisher did not keep publishing through the drain"
    # every streaming client was on the node that drained
    assert len(moved) == KINDS["websocket"] + KINDS["sse"], (len(moved), log)
    assert all(delay is not None for _, delay in asked), "a client was not asked to wait"
    assert counts[0] < len(delays) / 4, f"bunched at the start of the window: {counts}"
    assert sum(1 for count in counts[:-1] if count) >= 8, f"not spread over the window: {counts}"
    assert counts[-1] == 0, f"asked to wait past the window: {counts}"
    for member, (ended_at, delay), came_back in zip(moved, asked, back, strict=True):
        waited = came_back - (ended_at - sigterm_at)
        assert waited >= (delay or 0.0) - 0.01, (member.kind, waited, delay)
    assert all(m.client.transport == m.kind for m in fleet.members)
    assert staying.alive
