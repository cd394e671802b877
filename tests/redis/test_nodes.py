"""Several nodes on one Redis: fan-out by interest, shared order, history across restarts.

Beside the conformance suite (tests/brokers), which runs every broker through one node.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from redis.asyncio import Redis

from tests.redis.conftest import MakeNode
from tests.redis.support import Recorder
from tidings.brokers import REGISTRY, HistoryPage, broker_for
from tidings.brokers.redis import META_GRACE_MS, RedisBroker, split_url
from tidings.config import Settings
from tidings.exceptions import ConfigError
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset

pytestmark = pytest.mark.timeout(30)


def started(broker: RedisBroker) -> Recorder:
    recorder = Recorder()
    broker.start(recorder.sink, recorder.resync)
    return recorder


# Fan-out between nodes


async def test_an_event_reaches_only_the_nodes_that_subscribed_its_channel(
    make_node: MakeNode,
) -> None:
    a, b = make_node(), make_node()
    on_a, on_b = started(a), started(b)
    await b.subscribe("news")
    await a.subscribe("last")
    await a.publish("sport", "message", b"1")  # nobody follows sport
    news = await a.publish("news", "message", b"2")
    last = await b.publish("last", "message", b"3")
    # One connection delivers in publish order: once the later event is in, so is any earlier.
    assert await on_b.events_of("news", 1) == [news]
    assert await on_a.events_of("last", 1) == [last]
    assert (on_a.events, on_b.events) == ([last], [news])


async def test_a_node_that_unsubscribed_gets_nothing_more_of_that_channel(
    make_node: MakeNode,
) -> None:
    a, b = make_node(), make_node()
    on_b = started(b)
    await b.subscribe("news")
    await b.subscribe("last")
    await b.unsubscribe("news")
    await a.publish("news", "message", b"1")
    last = await a.publish("last", "message", b"2")
    await on_b.events_of("last", 1)
    assert on_b.events == [last]


async def test_an_event_published_once_subscribe_returned_is_delivered(
    make_node: MakeNode,
) -> None:
    """subscribe returns once Redis confirmed it; its caller resyncs, not the broker."""
    a, b = make_node(), make_node()
    on_b = started(b)
    await b.subscribe("news")
    stored = await a.publish("news", "message", b"1")
    assert await on_b.events_of("news", 1) == [stored]
    assert on_b.resyncs == []


async def test_concurrent_publishers_on_two_nodes_get_consecutive_offsets(
    make_node: MakeNode,
) -> None:
    big = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "1000"}
    a, b, reader = make_node(environ=big), make_node(environ=big), make_node(environ=big)
    on_reader = started(reader)
    await reader.subscribe("race")
    publishes = [
        (a if n % 2 else b).publish("race", "message", b"%d" % n, idempotency_key=f"k{n}")
        for n in range(200)
    ]
    stored = await asyncio.gather(*publishes)
    assert sorted(event.offset for event in stored) == list(range(1, 201))
    assert len({event.epoch for event in stored}) == 1
    assert len({event.data for event in stored}) == 200
    in_order = sorted(stored, key=lambda event: event.offset)
    assert await on_reader.events_of("race", 200) == in_order
    page = await reader.history("race", Cursor(stored[0].epoch, 0), 1000)
    assert (list(page.events), page.reset) == (in_order, None)


async def test_an_idempotency_key_holds_across_nodes(make_node: MakeNode) -> None:
    a, b = make_node(), make_node()
    first = await a.publish("news", "message", b"1", idempotency_key="msg-81")
    again = await b.publish("news", "message", b"retry", idempotency_key="msg-81")
    assert again == first


# History in Redis


async def test_history_and_cursors_survive_a_node_restart(make_node: MakeNode) -> None:
    before = make_node()
    events = [await before.publish("news", "message", b"%d" % n) for n in range(3)]
    await before.close()
    after = make_node()
    page = await after.history("news", events[0].cursor, 10)
    assert (list(page.events), page.reset) == (events[1:], None)
    later = await after.publish("news", "message", b"3")
    assert later.cursor == events[-1].cursor.next()


async def test_a_channel_whose_keys_are_gone_starts_a_new_epoch(
    make_node: MakeNode, redis_url: str
) -> None:
    """What key expiry does to an abandoned channel: its clients get an epoch reset."""
    node = make_node()
    old = await node.publish("news", "message", b"1")
    client = Redis.from_url(redis_url)
    try:
        await client.delete(*node.keys("news"))
    finally:
        await client.aclose()
    page = await node.history("news", old.cursor, 10)
    assert page.cursor.epoch != old.epoch
    assert page == HistoryPage((), page.cursor, Reset("news", page.cursor, "epoch"))
    new = await node.publish("news", "message", b"2")
    assert new.cursor == Cursor(page.cursor.epoch, 1)


async def test_keys_expire_with_the_history_age_and_the_epoch_later(
    make_node: MakeNode, redis_url: str
) -> None:
    node = make_node(environ={"TIDINGS_NAMESPACES_DEFAULT_HISTORY_TTL_SECONDS": "30"})
    await node.publish("news", "message", b"1", idempotency_key="k")
    stream, meta, keys = node.keys("news")
    client = Redis.from_url(redis_url)
    try:
        for key, lifetime in [(stream, 30_000), (keys, 30_000), (meta, 30_000 + META_GRACE_MS)]:
            remaining = await client.pttl(key)
            assert lifetime - 5_000 < remaining <= lifetime, key
        await client.pexpire(meta, 1_000)
        await node.subscribe("news")
        await node.refresh_followed()
        assert await client.pttl(meta) > META_GRACE_MS
    finally:
        await client.aclose()


async def test_an_event_is_in_history_when_a_node_receives_it(make_node: MakeNode) -> None:
    a, b = make_node(), make_node()
    reads: list[asyncio.Future[HistoryPage]] = []
    received = asyncio.Event()

    def sink(event: Event) -> None:
        since = Cursor(event.epoch, event.offset - 1)
        reads.append(asyncio.ensure_future(b.history(event.channel, since, 10)))
        received.set()

    b.start(sink, lambda channel: None)
    await b.subscribe("news")
    stored = await a.publish("news", "message", b"1")
    await asyncio.wait_for(received.wait(), 5)
    page = await asyncio.wait_for(reads[0], 5)
    assert list(page.events) == [stored]


async def test_check_is_a_round_trip_through_pub_sub(make_node: MakeNode) -> None:
    node = make_node()
    await node.check()  # before start: a PING
    started(node)
    await node.check()  # after: a ping published and received back
    await node.check()


# Configuration


def test_redis_is_registered() -> None:
    assert {"redis", "rediss", "redis+cluster", "redis+sentinel"} <= set(REGISTRY)


def test_the_prefix_comes_from_the_url() -> None:
    assert split_url("redis://127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0", "tidings")
    assert split_url("redis://h:1/2?prefix=app.one&socket_keepalive=true") == (
        "redis://h:1/2?socket_keepalive=true",
        "app.one",
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://h?prefix=",
        "redis://h?prefix=a%20b",
        "redis://h?prefix={x}",
        "redis://h:port/0",
        "redis://[::1",
        "redis://h/0?db=zero",
        "redis+cluster://h",
        "redis+cluster://h:0",
        "redis+cluster://h:1,h2",
        "redis+cluster://h:1/0",
        "redis+cluster://h:1?prefix={x}",
        "redis+cluster://h:1?db=1",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/",
        "redis+sentinel://h:1/a/b",
        "redis+sentinel://h:1/m?db=zero",
        "redis+sentinel://h:1/m?timeout=1",
    ],
)
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        broker_for(url, Settings())
    assert caught.value.key == "server.broker"


def test_without_the_redis_extra_the_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.partition(".")[0] == "redis" or name.startswith("tidings.brokers.redis"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    for url in ("redis://127.0.0.1:6379/0", "redis+cluster://h:1", "redis+sentinel://h:1/m"):
        with pytest.raises(ConfigError) as caught:
            broker_for(url, Settings())
        assert caught.value.key == "server.broker"
        assert "pip install tidings[redis]" in str(caught.value)
