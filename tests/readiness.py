"""What a load balancer and Prometheus see of a node's readiness: ``/readyz`` and
``tidings_broker_up``, read together over HTTP without blocking the test's event loop (a
proxy or a broker the test runs may live on it)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer
from tests.server.support import async_http_client

DEADLINE = 20.0


async def readiness(server: RunningServer) -> tuple[int, float | None]:
    """``/readyz``'s status, then ``tidings_broker_up`` as that check left it."""
    async with async_http_client(server) as client:
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    up = None
    for family in text_string_to_metric_families(metrics.text):
        if family.name == "tidings_broker_up":
            up = family.samples[0].value
    return ready.status_code, up


async def until_ready(server: RunningServer) -> None:
    """Ask until the node answers ready, with a deadline (the broker's link is coming back)."""
    seen: tuple[int, float | None] = (0, None)
    async with asyncio.timeout(DEADLINE):
        while seen != (200, 1.0):
            seen = await readiness(server)


async def until_unready(server: RunningServer) -> None:
    """Ask until the node answers not ready, with a deadline (a refusal is on its way)."""
    seen: tuple[int, float | None] = (200, 1.0)
    async with asyncio.timeout(DEADLINE):
        while seen != (503, 0.0):
            seen = await readiness(server)
