"""Every technique, forced, against the real server: delivery, resume, resets, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.client.support import (
    FAST,
    QUICK_SERVER,
    collect,
    cut,
    epoch,
    events_of,
    follows,
    offset,
    publish_many,
    resets_of,
    wait_until,
)
from tests.conftest import RunningServer
from tidings import ClientError, ClientEvent, ResetEvent, ServerRejected, connect
from tidings.client import TRANSPORTS

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)

MakeServer = Callable[..., RunningServer]
STREAMS = ("websocket", "sse", "long_poll")  # techniques that hold a connection the server sees


async def test_events_arrive_in_order_with_their_fields(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        assert subscription.transport == client.transport == transport
        async with collect(subscription) as seen:
            ids = [await client.publish("news", {"n": n}, event="story") for n in range(20)]
            events = await seen.wait_events(20)
    assert [event.id for event in events] == ids
    assert [event.data for event in events] == [{"n": n} for n in range(20)]
    assert {(event.channel, event.event) for event in events} == {("news", "story")}
    assert all(isinstance(event.ts, int) and event.ts > 0 for event in events)
    assert subscription.cursor == ids[-1]


async def test_a_subscription_starts_from_now(make_server: MakeServer, transport: str) -> None:
    server = make_server(**QUICK_SERVER)
    await publish_many(server, "news", ["before"])
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            await publish_many(server, "news", ["after"])
            events = await seen.wait_events(1)
    assert [event.data for event in events] == ["after"]
    assert offset(events[0].id) == 2


async def test_resume_across_cuts_loses_nothing_and_repeats_nothing(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    rounds, per_round = 6, 12
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            for round_ in range(rounds):
                if transport in STREAMS:
                    await wait_until(lambda: follows(server, "news"), "the client to follow")
                values = list(range(round_ * per_round, (round_ + 1) * per_round))
                if round_ % 2:
                    await cut(server)  # published during the outage: caught up on resume
                    await publish_many(server, "news", values)
                else:
                    await publish_many(server, "news", values)
                    await cut(server)  # some of those events are on the wire, some not yet written
            events = await seen.wait_events(rounds * per_round)
    total = rounds * per_round
    assert [offset(event.id) for event in events] == list(range(1, total + 1))
    assert [event.data for event in events] == list(range(total))
    assert resets_of(seen.items) == []
    if transport in STREAMS:
        # Every cut of a held connection was noticed (a long poll may be between requests
        # when the cut comes after a publish; the stream transports never are).
        least = rounds - 1 if transport != "long_poll" else rounds // 2
        assert subscription.reconnects >= least


async def test_resuming_from_a_cursor_that_left_history_yields_a_gap_reset(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(namespaces__default__history_size=5, **QUICK_SERVER)
    ids = await publish_many(server, "news", list(range(10)))
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news", since=ids[0])
        first = await anext(subscription)
        assert first == ResetEvent("news", ids[-1], "gap")
        assert subscription.cursor == ids[-1]
        async with collect(subscription) as seen:
            later = await publish_many(server, "news", ["after the reset"])
            events = await seen.wait_events(1)
    assert [(event.id, event.data) for event in events] == [(later[0], "after the reset")]


async def test_resuming_from_another_epoch_yields_an_epoch_reset(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    ids = await publish_many(server, "news", [1, 2])
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news", since="elsewhere.1")
        first = await anext(subscription)
    assert first == ResetEvent("news", ids[-1], "epoch")


async def test_resuming_from_a_cursor_in_history_delivers_what_was_missed(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    ids = await publish_many(server, "news", list(range(6)))
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news", since=ids[1])
        async with collect(subscription) as seen:
            events = await seen.wait_events(4)
    assert [event.id for event in events] == ids[2:]


async def test_a_gap_during_an_outage_is_surfaced_as_a_reset(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(namespaces__default__history_size=5, **QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        await publish_many(server, "news", ["seen"])
        assert (await anext(subscription)).data == "seen"
        # The application is not reading: the connection dies and history moves on meanwhile.
        if transport in ("websocket", "sse"):
            await wait_until(lambda: follows(server, "news"), "the client to follow")
        await cut(server)
        missed = await publish_many(server, "news", list(range(10)))
        reset = await anext(subscription)
        assert reset == ResetEvent("news", missed[-1], "gap")
        async with collect(subscription) as seen:
            after = await publish_many(server, "news", ["after"])
            events = await seen.wait_events(1)
    assert [event.id for event in events] == after


async def test_a_server_restart_is_surfaced_as_an_epoch_reset(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        async with collect(subscription) as seen:
            before = await publish_many(server, "news", [1, 2, 3])
            await seen.wait_events(3)
            server.stop()  # the memory broker's history goes with it
            restarted = make_server(port=server.port, **QUICK_SERVER)
            await seen.wait_for(lambda items: resets_of(items) != [], "a reset")
            after = await publish_many(restarted, "news", [4])
            await seen.wait_events(4)
    reset = resets_of(seen.items)[0]
    assert reset.reason == "epoch"
    assert epoch(reset.id) != epoch(before[0])
    assert [event.id for event in events_of(seen.items)] == [*before, *after]
    assert seen.items.index(reset) == 3


async def test_a_bad_channel_is_refused_at_once(make_server: MakeServer, transport: str) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("not a channel!")
        with pytest.raises(ServerRejected) as refused:
            await anext(subscription)
        assert (refused.value.status, refused.value.code) == (400, "invalid_channel")
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)  # the subscription is over, not retrying
        with pytest.raises(ClientError):
            await subscription.open()
        assert subscription.connections == 0
        client.subscribe("not a channel!")  # the client forgot it: the name is free again


async def test_a_bad_cursor_is_refused_at_once(make_server: MakeServer, transport: str) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        with pytest.raises(ServerRejected) as refused:
            await client.subscribe("news", since="not-a-cursor").open()
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


async def test_several_subscriptions_run_side_by_side(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    channels = ["news", "sport", "chat:lobby"]
    async with connect(server.url, transport=transport, **FAST) as client:
        subscriptions = [client.subscribe(channel) for channel in channels]
        for subscription in subscriptions:
            await subscription.open()
        async with (
            collect(subscriptions[0]) as news,
            collect(subscriptions[1]) as sport,
            collect(subscriptions[2]) as lobby,
        ):
            for n in range(10):
                for channel in channels:
                    await client.publish(channel, f"{channel}-{n}")
            for seen, channel in ((news, "news"), (sport, "sport"), (lobby, "chat:lobby")):
                events = await seen.wait_events(10)
                assert [event.data for event in events] == [f"{channel}-{n}" for n in range(10)]
                assert {event.channel for event in events} == {channel}


async def test_one_subscription_per_channel_per_client(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, **FAST) as client:
        first = client.subscribe("news")
        with pytest.raises(ClientError):
            client.subscribe("news")
        await first.aclose()
        second = client.subscribe("news")
        await second.open()
        async with collect(second) as seen:
            await client.publish("news", "again")
            assert [e.data for e in await seen.wait_events(1)] == ["again"]


async def test_leaving_the_client_ends_an_iteration_in_another_task(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    items: list[ClientEvent | ResetEvent] = []
    first = asyncio.Event()
    async with connect(server.url, transport=transport, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()

        async def read_all() -> None:
            async for item in subscription:
                items.append(item)
                first.set()

        reader = asyncio.create_task(read_all())
        await publish_many(server, "news", ["one"])
        await asyncio.wait_for(first.wait(), 5.0)
    await asyncio.wait_for(reader, 5.0)  # ended by the client closing, without an error
    assert [item.data for item in events_of(items)] == ["one"]


async def test_a_slow_reader_loses_nothing_and_holds_little(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with connect(server.url, transport=transport, max_pending=3, **FAST) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        ids = await publish_many(server, "news", list(range(30)))  # nobody is reading
        if transport == "websocket":  # the inbox overflows: the client leaves the channel
            await wait_until(lambda: not follows(server, "news"), "the client to leave")
        got = [await anext(subscription) for _ in range(30)]
    assert [item.id for item in got] == ids
    if transport == "websocket":  # its inbox overflowed: the channel was left and followed again
        assert subscription.last_failure == "the application fell behind; resuming"
        assert subscription.reconnects >= 1
