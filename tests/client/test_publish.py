"""``client.publish``: over the WebSocket where allowed, over HTTP otherwise; refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.client.proxy import proxy
from tests.client.support import FAST, QUICK_SERVER, collect, offset
from tests.conftest import RunningServer
from tidings import ClientError, ServerRejected, connect, publish, publish_async

MakeServer = Callable[..., RunningServer]
API_KEY = "s3cret"


def keyed_server(make_server: MakeServer) -> RunningServer:
    """HTTP publishing needs the API key; clients may publish over the socket in ``chat``."""
    return make_server(api_keys=API_KEY, namespaces__chat__client_publish=True, **QUICK_SERVER)


async def test_publish_goes_over_the_websocket_when_the_namespace_allows(
    make_server: MakeServer,
) -> None:
    server = keyed_server(make_server)
    # No API key: an HTTP publish would be refused (401), so success means the socket.
    async with connect(server.url, transport="websocket", **FAST) as client:
        subscription = client.subscribe("chat:lobby")
        await subscription.open()
        async with collect(subscription) as seen:
            cursor = await client.publish("chat:lobby", {"text": "hi"}, event="said")
            events = await seen.wait_events(1)
        again = await client.publish("chat:lobby", "x", idempotency_key="k1")
        assert await client.publish("chat:lobby", "x", idempotency_key="k1") == again
    assert (events[0].id, events[0].event, events[0].data) == (cursor, "said", {"text": "hi"})
    assert offset(again) == offset(cursor) + 1


async def test_a_namespace_closed_to_clients_falls_back_to_http(make_server: MakeServer) -> None:
    server = keyed_server(make_server)
    async with connect(server.url, transport="websocket", api_key=API_KEY, **FAST) as client:
        await client.subscribe("chat:lobby").open()  # the socket is open
        news = client.subscribe("news")
        await news.open()
        async with collect(news) as seen:
            first = await client.publish("news", 1)  # the socket says forbidden: HTTP
            second = await client.publish("news", 2)
            assert [event.id for event in await seen.wait_events(2)] == [first, second]


async def test_the_http_fallback_without_a_key_reports_the_refusal(
    make_server: MakeServer,
) -> None:
    server = keyed_server(make_server)
    async with connect(server.url, transport="websocket", **FAST) as client:
        await client.subscribe("chat:lobby").open()
        with pytest.raises(ServerRejected) as refused:
            await client.publish("news", 1)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


@pytest.mark.parametrize("transport", ["sse", "long_poll", "poll"])
async def test_publish_goes_over_http_without_a_websocket(
    make_server: MakeServer, transport: str
) -> None:
    server = keyed_server(make_server)
    async with connect(server.url, transport=transport, api_key=API_KEY, **FAST) as client:
        subscription = client.subscribe("chat:lobby")
        await subscription.open()
        async with collect(subscription) as seen:
            cursor = await client.publish("chat:lobby", "hello")
            assert [event.id for event in await seen.wait_events(1)] == [cursor]


async def test_a_publish_whose_answer_the_socket_lost_is_retried_over_http_once(
    make_server: MakeServer,
) -> None:
    server = keyed_server(make_server)
    async with (
        proxy(server.port) as middlebox,
        connect(
            middlebox.url, transport="websocket", api_key=API_KEY, **{**FAST, "open_timeout": 0.5}
        ) as client,
    ):
        await client.subscribe("chat:lobby").open()
        assert middlebox.mute() == 1  # the socket: the publish arrives, "published" does not
        cursor = await client.publish("chat:lobby", "once")
    # Stored once: the HTTP retry carried the socket's idempotency key.
    assert offset(cursor) == 1
    following = await publish_async("chat:lobby", "next", url=server.url, api_key=API_KEY)
    assert offset(following) == 2


async def test_publish_before_any_subscription_uses_http(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, **FAST) as client:
        assert offset(await client.publish("news", None)) == 1
        assert client.transport is None  # nothing was subscribed: no technique chosen


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_bad_channel_is_refused(make_server: MakeServer, transport: str) -> None:
    server = keyed_server(make_server)
    async with connect(server.url, transport=transport, api_key=API_KEY, **FAST) as client:
        await client.subscribe("chat:lobby").open()
        with pytest.raises(ServerRejected) as refused:
            await client.publish("chat:not a channel", 1)
        with pytest.raises(ServerRejected) as reserved:
            await client.publish("chat:lobby", 1, event="tidings.reset")
    assert (refused.value.status, refused.value.code) == (400, "invalid_channel")
    assert (reserved.value.status, reserved.value.code) == (400, "invalid_field")


async def test_an_unreachable_server_is_a_client_error() -> None:
    async with connect("http://127.0.0.1:9", **FAST) as client:
        with pytest.raises(ClientError, match="could not reach"):
            await client.publish("news", 1)


async def test_the_one_shot_publishers_still_work(make_server: MakeServer) -> None:
    server = make_server()
    assert offset(publish("news", 1, url=server.url)) == 1
    assert offset(await publish_async("news", 2, url=server.url, idempotency_key="a")) == 2
    assert offset(await publish_async("news", 2, url=server.url, idempotency_key="a")) == 2
    with pytest.raises(ServerRejected):
        await publish_async("bad channel", 1, url=server.url)
