"""A node whose NATS subscriptions cannot come up is not ready.

Between the node and NATS a proxy keeps the node's fan-out subscriptions (``<prefix>.r.``)
from reaching the server, while JetStream requests and publishes go through: events would
be stored, but this node would deliver nothing live. ``/readyz`` must answer 503 and
``tidings_broker_up`` read 0, whether the proxy cuts the connection at each such ``SUB``
(the connection keeps coming back and going again) or swallows it (the connection stays up
and looks healthy); once subscriptions go through, the node is ready and delivers. A NATS
that refuses one channel's subscription (the account may not subscribe there) makes the
node unready while it follows that channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.nats.conftest import MakeNats, settings_for
from tests.nats.proxy import Mode, SubscriptionProxy
from tests.nats.support import NATS_URL, PrivateNats
from tests.readiness import readiness, until_ready, until_unready
from tests.server.support import apublish, async_http_client, sse_stream
from tidings.brokers.nats_layout import Layout
from tidings.exceptions import BrokerUnavailable

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


REFUSING = """
authorization {{
  users = [
    {{ user: "node", password: "secret", permissions: {{
        publish: {{ allow: [">"] }},
        subscribe: {{ allow: [">"], deny: ["{denied}"] }} }} }}
  ]
}}
"""


@pytest.fixture
async def refusing_nats(private_nats: PrivateNats, tmp_path: Path) -> str:
    """A NATS whose account may not subscribe to the fan-out of the channel "vault"; the URL
    of a node on it."""
    config = tmp_path / "refusing.conf"
    config.write_text(REFUSING.format(denied=Layout("refused").fanout_subject("vault")))
    private_nats.options = ("-c", str(config))
    await private_nats.start()
    return f"nats://node:secret@127.0.0.1:{private_nats.port}?prefix=refused&timeout=1"


async def test_a_node_refused_a_channels_subscription_is_not_ready(
    make_server: MakeServer, refusing_nats: str
) -> None:
    node = make_server(broker=refusing_nats)
    async with async_http_client(node) as client, sse_stream(client, "/sse?channel=news") as news:
        cursor = await apublish(client, "news", {"n": 1})
        assert (await news.next()).last_event_id == cursor
        assert await readiness(node) == (200, 1.0)
        async with sse_stream(client, "/sse?channel=vault"):
            await until_unready(node)
            for _ in range(3):  # asked again at every check, refused every time
                assert await readiness(node) == (503, 0.0)


async def test_the_broker_names_the_channel_refused_until_it_is_not_wanted(
    refusing_nats: str,
) -> None:
    from tidings.brokers.nats import NatsBroker

    broker = NatsBroker(refusing_nats, settings_for(refusing_nats))
    broker.start(lambda event: None, lambda channel: None)
    try:
        await broker.subscribe("news")
        await broker.check()
        await broker.subscribe("vault")
        with pytest.raises(BrokerUnavailable, match="refused the subscription to vault"):
            for _ in range(10):  # NATS's refusal may come after the first check's answer
                await broker.check()
        await broker.unsubscribe("vault")
        await broker.check()
    finally:
        await broker.close()


async def test_a_check_held_up_past_its_timeout_passes_when_nats_answered(
    nats_url: str, make_nats: MakeNats
) -> None:
    """The check's deadline counts only time the loop could run: a node starved of CPU while
    its JetStream request and its ping were out is not unready for it (brokers/patience.py)."""
    broker = make_nats(url=f"{nats_url}&timeout=1")
    broker.start(lambda event: None, lambda channel: None)
    await broker.subscribe("news")
    await broker.check()
    for steps in (1, 2, 3):  # held up at the check's first wait, or a step or two later
        check = asyncio.ensure_future(broker.check())
        for _ in range(steps):
            await asyncio.sleep(0)
        time.sleep(2.0)  # the whole loop held up, twice the timeout
        await check  # NATS answered meanwhile: no BrokerUnavailable
