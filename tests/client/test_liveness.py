"""Dead connections are noticed, and the server's requested delays are honoured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.client.proxy import proxy
from tests.client.support import FAST, QUICK_SERVER, collect, cut, follows, wait_until
from tests.conftest import RunningServer
from tidings import Backoff, connect
from tidings.client import TRANSPORTS

MakeServer = Callable[..., RunningServer]

# What a silent connection looks like to each technique, once the network path is dead.
SILENCE = {
    "websocket": "no answer to ping",  # our {"op": "ping"} got no pong
    "sse": "no bytes for",  # not even a ": ping" comment
    "long_poll": "ReadTimeout",  # the held request outlived poll_timeout plus the margin
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_dead_network_path_is_noticed_and_the_subscription_resumes(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(heartbeat_seconds=0.1, **QUICK_SERVER)
    options = {**FAST, "open_timeout": 1.0}
    async with (
        proxy(server.port) as middlebox,
        connect(
            middlebox.url,
            transport=transport,
            heartbeat=0.1,
            heartbeat_margin=0.2,
            poll_timeout=0.5,
            **options,
        ) as client,
    ):
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            first = await client.publish("news", "before")
            await seen.wait_events(1)
            if transport in SILENCE:
                await wait_until(lambda: follows(server, "news"), "the client to follow")
                assert middlebox.freeze() >= 1
            else:
                middlebox.freeze()  # a short poll may be between requests: nothing to freeze
            second = await client.publish("news", "during")  # lost on the frozen path
            events = await seen.wait_events(2)
    assert [event.id for event in events] == [first, second]
    if transport in SILENCE:
        assert subscription.reconnects >= 1
        assert subscription.last_failure is not None
        assert SILENCE[transport] in subscription.last_failure


async def test_the_sse_retry_delay_is_a_floor_for_reconnecting(make_server: MakeServer) -> None:
    server = make_server(sse_retry_ms=400)
    no_jitter = Backoff(initial=0.01, maximum=0.1, random=lambda: 0.0)
    loop = asyncio.get_running_loop()
    async with connect(server.url, transport="sse", backoff=no_jitter) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription):
            await wait_until(lambda: follows(server, "news"), "the stream to follow")
            cut_at = loop.time()
            await cut(server)
            await wait_until(lambda: subscription.connections == 2, "the stream to come back")
            assert loop.time() - cut_at >= 0.4


async def test_a_websocket_closed_for_a_restart_comes_back_after_a_random_pause(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUICK_SERVER)
    almost_one = Backoff(initial=0.01, maximum=0.1, random=lambda: 0.999)
    loop = asyncio.get_running_loop()
    async with connect(
        server.url, transport="websocket", backoff=almost_one, restart_window=0.6
    ) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            stopped_at = loop.time()
            server.stop()  # closes the socket with 1012, service restart
            restarted = make_server(port=server.port, **QUICK_SERVER)
            await wait_until(lambda: follows(restarted, "news"), "the client to come back")
            assert loop.time() - stopped_at >= 0.6 * 0.999
            await seen.wait_for(lambda items: len(items) == 1, "the epoch reset")
    assert subscription.last_failure == "the connection closed (code 1012)"
