"""A rolling restart of two nodes behind nginx (deploy/nginx.conf) while events keep coming.

Clients (WebSocket, SSE, long polling) and a publisher all go through nginx. Node 1 is sent
SIGTERM, exits, and is started again on its port; once nginx routes to it again, node 2 is.
No client loses or repeats an event, and every acknowledged publish reaches every client.
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
from tests.drain.support import Fleet, Publisher, terminate
from tests.redis.support import REDIS_URL, require_redis
from tests.serve_process import ServeProcess

WINDOW = 2.0
KINDS = {"websocket": 20, "sse": 20, "long_poll": 20}
ROUTED_WITHIN = 20.0  # nginx tries a node it saw refuse again after fail_timeout (5 s)

pytestmark = pytest.mark.timeout(120)


class Cluster:
    """Two nodes on one Redis prefix, each restartable on its own port."""

    def __init__(self) -> None:
        self.prefix = "test-rolling-" + uuid.uuid4().hex[:12]
        self.nodes = [self._start(0), self._start(0)]

    def _start(self, port: int) -> ServeProcess:
        node = ServeProcess(
            "--no-lab",
            "--broker",
            f"{REDIS_URL}?prefix={self.prefix}",
            "--port",
            str(port),
            env={"TIDINGS_SERVER_DRAIN_SECONDS": str(WINDOW)},
        )
        return node.wait_listening()

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        terminate(node, WINDOW)
        node.stop()
        assert node.process.returncode == 0, node.logs()
        assert "drained in " in node.logs(), node.logs()
        self.nodes[index] = self._start(node.port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        delete_keys(self.prefix)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    nginx_binary()
    require_redis()
    started = Cluster()
    try:
        yield started
    finally:
        started.stop()


def routed_to(proxy: Nginx, port: int) -> None:
    """Ask nginx until a request reaches the node on ``port`` (it is back in the rotation)."""
    deadline = time.monotonic() + ROUTED_WITHIN
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            answer = http.get(f"{proxy.url}/healthz")
            if answer.headers.get("x-upstream", "").endswith(f":{port}"):
                return
            time.sleep(0.1)  # the pace of the probe
    raise AssertionError(f"nginx did not route to 127.0.0.1:{port} within {ROUTED_WITHIN} s")


async def test_a_rolling_restart_behind_nginx_loses_and_repeats_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    ports = [node.port for node in cluster.nodes]
    proxy = Nginx(nginx_binary(), tmp_path / "nginx", ports, tag_upstream=True)
    channel = "rolling-" + uuid.uuid4().hex[:8]
    since = httpx.get(f"{proxy.url}/poll", params={"channel": channel}, timeout=5).json()["cursor"]
    fleet = Fleet(proxy.url, channel, since, WINDOW)
    publisher = Publisher(proxy.url, channel, interval=0.05)
    loop = asyncio.get_running_loop()
    publishing: asyncio.Task[None] | None = None
    try:
        await fleet.open(KINDS)
        publishing = asyncio.create_task(publisher.run())
        await publisher.acked_at_least(5, timeout=10)
        restarted_at = loop.time()
        for index, port in enumerate(ports):
            await asyncio.to_thread(cluster.restart, index)
            await asyncio.to_thread(routed_to, proxy, port)
            await publisher.acked_at_least(len(publisher.acked) + 5, timeout=10)
        publisher.until = loop.time()
        await publishing
        last = publisher.acked[-1]
        short = await fleet.reached(last, timeout=30)
        assert not short, f"{len(short)} clients never got {last}: {[m.kind for m in short]}"
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
        await fleet.close()
        proxy.stop()

    print(
        f"\n{len(publisher.acked)} events published through two restarts"
        f" ({publisher.resent} sent again after a 502/503 or a broken connection)"
    )
    for member in fleet.members:
        assert member.ids == publisher.acked, (member.kind, len(member.ids), len(publisher.acked))
        assert member.data == publisher.values
        assert member.resets == 0
        if member.kind != "long_poll":  # every stream was on a node that restarted
            assert member.reconnected_after(restarted_at), member.kind
