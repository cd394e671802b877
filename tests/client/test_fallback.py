"""``auto`` against the real server, directly and behind proxies that break techniques."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.client.proxy import proxy
from tests.client.support import FAST, QUICK_SERVER, closed_port, collect, publish_many
from tests.conftest import RunningServer
from tidings import ClientError, connect

MakeServer = Callable[..., RunningServer]


async def deliver_one(server: RunningServer, client_url: str, **options: object) -> str | None:
    """Subscribe through ``auto``, check an event arrives; the technique that carried it."""
    async with connect(client_url, **FAST, **options) as client:  # type: ignore[arg-type]
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            ids = await publish_many(server, "news", ["hello"])
            assert [event.id for event in await seen.wait_events(1)] == ids
        return client.transport


async def test_auto_picks_the_websocket(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    assert await deliver_one(server, server.url) == "websocket"


async def test_no_websocket_listening_moves_down_to_sse(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    dead = f"ws://127.0.0.1:{closed_port()}/ws"
    assert await deliver_one(server, server.url, ws_url=dead) == "sse"


async def test_a_refused_upgrade_moves_down_to_sse(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with proxy(server.port, refuse_upgrades=True) as middlebox:
        assert await deliver_one(server, middlebox.url) == "sse"
        assert middlebox.count("GET /ws") == 1


async def test_a_buffering_proxy_moves_down_to_long_polling(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with proxy(server.port, refuse_upgrades=True, buffer_sse=True) as middlebox:
        transport = await deliver_one(server, middlebox.url, first_byte_timeout=0.3)
        assert transport == "long_poll"
        assert (middlebox.count("GET /ws"), middlebox.count("GET /sse")) == (1, 1)


async def test_what_worked_is_remembered_for_the_life_of_the_client(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUICK_SERVER)
    async with (
        proxy(server.port, refuse_upgrades=True, buffer_sse=True) as middlebox,
        connect(middlebox.url, first_byte_timeout=0.3, **FAST) as client,
    ):
        first = client.subscribe("news")
        await first.open()
        second = client.subscribe("sport")
        await second.open()
        await first.aclose()
        again = client.subscribe("news")
        await again.open()
        assert {first.transport, second.transport, again.transport} == {"long_poll"}
        assert (middlebox.count("GET /ws"), middlebox.count("GET /sse")) == (1, 1)
        async with collect(second) as seen:
            ids = await publish_many(server, "sport", [1, 2])
            assert [event.id for event in await seen.wait_events(2)] == ids


async def test_a_forced_transport_retries_instead_of_moving_down(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    dead = f"ws://127.0.0.1:{closed_port()}/ws"
    async with connect(
        server.url, transport="websocket", ws_url=dead, max_retries=2, **FAST
    ) as client:
        with pytest.raises(ClientError, match="could not connect") as gave_up:
            await client.subscribe("news").open()
        assert "3 failures" in str(gave_up.value)
        assert client.transport is None
