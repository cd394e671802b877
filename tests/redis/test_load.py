"""One node on Redis under load (brokers/redis.py): caught-up reads that ask Redis nothing,
pings that a busy pool of commands cannot stall, and resyncs after a rebuild that neither
take every connection nor fail followers.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.redis.conftest import MakeNode
from tests.redis.support import Probe, Recorder, clients_named, kill_clients
from tidings.brokers import redis_link
from tidings.brokers.base import PAGE_BYTES, HistoryPage
from tidings.brokers.redis import COMMAND_TIMEOUT, POOL_SIZE, READS_AT_ONCE
from tidings.config import Settings
from tidings.hub.hub import Hub
from tidings.protocol.cursor import Cursor

pytestmark = pytest.mark.timeout(60)

FOLLOWERS = 2000


async def test_a_caught_up_read_of_a_followed_channel_asks_redis_nothing(
    make_node: MakeNode, redis_url: str
) -> None:
    node, publisher = make_node(), make_node()
    recorder = Recorder()
    node.start(recorder.sink, recorder.resync)
    await node.subscribe("news")
    assert node.history_nowait("news", None, 10) is None  # nothing came through the link yet
    first = await publisher.publish("news", "m", b"1")
    second = await publisher.publish("news", "m", b"2")
    await recorder.events_of("news", 2)
    head = HistoryPage((), second.cursor)
    for since in (second.cursor, None):
        assert node.history_nowait("news", since, 10) == head
        assert await node.history("news", since, 10) == head  # what Redis answers
    assert node.history_nowait("news", first.cursor, 10) is None  # behind: Redis tells
    assert node.history_nowait("news", Cursor("other", 2), 10) is None
    assert node.history_nowait("sport", None, 10) is None  # not followed
    resyncs = len(recorder.resyncs)
    assert await kill_clients(redis_url, node.client_name("pubsub")) == 1
    await recorder.until(lambda: len(recorder.resyncs) > resyncs, "the link rebuilt")
    assert node.history_nowait("news", second.cursor, 10) is None  # forgotten with the link
    third = await publisher.publish("news", "m", b"3")
    await recorder.events_of("news", 3)
    assert node.history_nowait("news", third.cursor, 10) == HistoryPage((), third.cursor)
    await node.unsubscribe("news")
    assert node.history_nowait("news", third.cursor, 10) is None


async def test_a_pool_of_commands_all_busy_does_not_make_the_link_look_dead(
    make_node: MakeNode,
) -> None:
    node = make_node()
    recorder = Recorder()
    node.start(recorder.sink, recorder.resync)
    await node.subscribe("news")
    await node.check()
    resyncs = len(recorder.resyncs)
    pool = node._pool  # every command connection taken, as a burst of reads would
    held = [await pool.get_connection() for _ in range(POOL_SIZE)]
    try:
        await asyncio.sleep(redis_link.DEAD_AFTER + 1.5)
        await node.check()  # a ping through the link, not through the pool
        assert len(recorder.resyncs) == resyncs  # never rebuilt: nothing to resync
    finally:
        for connection in held:
            await pool.release(connection)


async def test_resyncs_after_a_rebuild_are_bounded_and_lose_no_follower(
    make_node: MakeNode, redis_url: str
) -> None:
    node, publisher = make_node(), make_node()
    hub = Hub(node, Settings(), asyncio.get_running_loop())
    hub.start()
    try:
        first = await publisher.publish("news", "m", b"1")
        probes = [Probe(hub, "news", first.cursor) for _ in range(FOLLOWERS)]
        for probe in probes:
            hub.attach("news", probe)
        await probes[0].until(lambda: probes[0].resyncs > 0, "the subscription")
        second = await publisher.publish("news", "m", b"2")
        await probes[-1].until(lambda: probes[-1].events == [second], "the live event")
        resyncs = probes[0].resyncs
        assert await kill_clients(redis_url, node.client_name("pubsub")) == 1
        missed = await publisher.publish("news", "m", b"3")  # live or through the resync
        for probe in probes:
            await probe.until(lambda p=probe: p.events == [second, missed], "every follower")  # type: ignore[misc]
        assert probes[0].resyncs > resyncs  # they did read history
        assert [probe for probe in probes if probe.abandoned] == []
        # every follower read history; never more than READS_AT_ONCE at once (and a publish
        # or the refresh of epochs beside them)
        assert await clients_named(redis_url, node.client_name("commands")) <= READS_AT_ONCE + 2
    finally:
        await hub.close()


async def test_a_read_that_waits_its_turn_longer_than_a_command_may_take_still_reads(
    make_node: MakeNode,
) -> None:
    node = make_node()
    published = await node.publish("news", "m", b"1")
    turns = node._reads  # every turn taken, as a burst of catch-ups would
    for _ in range(READS_AT_ONCE):
        await turns.acquire()
    reading = asyncio.get_running_loop().create_task(node.history("news", None, 10))
    await asyncio.sleep(COMMAND_TIMEOUT + 1)
    assert not reading.done()  # still waiting, not failed
    for _ in range(READS_AT_ONCE):
        turns.release()
    assert (await reading).cursor == published.cursor


async def test_a_catch_up_of_large_events_reads_redis_a_bounded_page_at_a_time(
    make_node: MakeNode,
) -> None:
    """A follower 100 events of 32 KB behind (3.2 MB) is caught up by pages of at most
    PAGE_BYTES, each asked for when the one before was written, and misses nothing: one
    read of the whole backlog held all of it in the node's memory at once."""
    node = make_node()
    hub = Hub(node, Settings(), asyncio.get_running_loop())
    hub.start()
    sizes: list[int] = []
    read = node.history

    async def measured(channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        page = await read(channel, since, limit)
        sizes.append(sum(len(event.data) for event in page.events))
        return page

    node.history = measured  # type: ignore[method-assign]
    try:
        data = b'"' + b"x" * 32_000 + b'"'
        events = [await node.publish("news", "m", data) for _ in range(100)]  # history holds 100
        probe = Probe(hub, "news", Cursor(events[0].epoch, 0))
        hub.attach("news", probe)
        await probe.until(lambda: len(probe.events) == 100, "every event")
        assert probe.events == events
        assert probe.resets == [] and probe.abandoned == []
        assert len(sizes) >= 100 * len(data) // PAGE_BYTES
        assert max(sizes) <= PAGE_BYTES
    finally:
        await hub.close()
