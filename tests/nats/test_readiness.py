"""A node whose NATS subscriptions cannot come up is not ready.

Between the node and NATS a proxy keeps the node's fan-out subscriptions (``<prefix>.r.``)
from reaching the server, while JetStream requests and publishes go through: events would
be stored, but this node would deliver nothing live. ``/readyz`` must answer 503 and
``tidings_broker_up`` read 0, whether the proxy cuts the connection at each such ``SUB``
(the connection keeps coming back and going again) or swallows it (the connection stays up
and looks healthy); once subscriptions go through, the node is ready and delivers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import RunningServer
from tests.nats.proxy import Mode, SubscriptionProxy
from tests.nats.support import NATS_URL
from tests.readiness import readiness, until_ready
from tests.server.support import apublish, async_http_client, sse_stream

pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[..., RunningServer]
NATS_PORT = int(NATS_URL.rpartition(":")[2])


@pytest.fixture
async def proxy(nats_url: str) -> AsyncIterator[SubscriptionProxy]:
    prefix = nats_url.partition("prefix=")[2]
    running = await SubscriptionProxy(NATS_PORT, f"{prefix}.r.").start()
    try:
        yield running
    finally:
        await running.close()


def through(proxy: SubscriptionProxy, nats_url: str) -> str:
    return nats_url.replace(NATS_URL, f"nats://127.0.0.1:{proxy.port}") + "&timeout=1"


@pytest.mark.parametrize("mode", ["cut", "drop"])
async def test_a_node_whose_subscriptions_cannot_come_up_is_not_ready_until_they_do(
    make_server: MakeServer, nats_url: str, proxy: SubscriptionProxy, mode: Mode
) -> None:
    proxy.mode = mode
    node = make_server(broker=through(proxy, nats_url))
    for _ in range(3):
        assert await readiness(node) == (503, 0.0)
        await proxy.refusal()  # the node keeps asking for its subscriptions

    proxy.mode = "pass"
    await until_ready(node)
    async with async_http_client(node) as client, sse_stream(client, "/sse?channel=news") as sse:
        cursor = await apublish(client, "news", {"n": 1})
        assert (await sse.next()).last_event_id == cursor


async def test_a_stream_opened_while_subscriptions_are_swallowed_gets_its_events_after(
    make_server: MakeServer, nats_url: str, proxy: SubscriptionProxy
) -> None:
    proxy.mode = "drop"
    node = make_server(broker=through(proxy, nats_url))
    async with async_http_client(node) as client, sse_stream(client, "/sse?channel=news") as sse:
        stored = await apublish(client, "news", {"n": 1})  # stored: JetStream works
        assert await readiness(node) == (503, 0.0)
        proxy.mode = "pass"
        await until_ready(node)
        later = await apublish(client, "news", {"n": 2})
        assert [(await sse.next()).last_event_id for _ in range(2)] == [stored, later]
