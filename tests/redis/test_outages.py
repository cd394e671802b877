"""Redis going away and coming back, and pub/sub links that die loudly or silently.

Followers here are real hub Followers (support.Probe in a real Hub), so these tests check the
whole promise: after an outage every follower has every acknowledged event exactly once, in
order, or is told with a reset that history was lost. Never a silent skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.redis.conftest import MakeNode, MakeRedis
from tests.redis.proxy import StallingProxy
from tests.redis.support import (
    Recorder,
    eventually,
    following,
    free_port,
    kill_clients,
    until_changed,
)
from tidings.brokers import broker_for, redis_link
from tidings.brokers import redis as redis_broker
from tidings.brokers.redis import RedisBroker
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event

pytestmark = pytest.mark.timeout(60)

BIG = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "100000"}


class Publisher:
    """Publishes on one channel without pause, keeping what was acknowledged and what failed."""

    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self.acknowledged: list[Event] = []
        self.failures = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._stopping = True  # not cancel(): redis-py on Python 3.11 can swallow it
        await asyncio.wait_for(self._task, 10)

    async def _run(self) -> None:
        for n in range(1_000_000):
            if self._stopping:
                return
            try:
                self.acknowledged.append(await self.broker.publish(self.channel, "m", b"%d" % n))
            except BrokerUnavailable:
                self.failures += 1
                await asyncio.sleep(0.01)  # pacing while Redis is down, not a wait
            self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await until_changed(self._changed, condition, what)


async def test_a_restart_that_lost_history_resets_the_followers(
    make_node: MakeNode, private_redis: MakeRedis
) -> None:
    server = private_redis()  # no persistence: a restarted Redis is empty
    await server.start()
    node = make_node(url=server.url)
    async with following(node, "news") as probe:
        before = [await node.publish("news", "m", b"%d" % n) for n in range(3)]
        await probe.until(lambda: probe.events == before, "the live events")
        await server.stop()
        with pytest.raises(BrokerUnavailable):
            await node.publish("news", "m", b"never acknowledged")
        with pytest.raises(BrokerUnavailable):
            await node.history("news", before[0].cursor, 10)
        with pytest.raises(BrokerUnavailable):
            await node.check()
        await server.start()
        await eventually(node.check, "check after the restart")
        await probe.until(lambda: bool(probe.resets), "a reset")
        (reset,) = probe.resets
        assert reset.reason == "epoch"
        assert reset.cursor.epoch != before[0].epoch
        after = await node.publish("news", "m", b"3")
        assert after.cursor == reset.cursor.next()
        await probe.until(lambda: probe.written[-1] == after, "the first event after")
        assert probe.written == [*before, reset, after]
        assert probe.abandoned == []


async def test_with_persistence_nothing_acknowledged_is_missing_after_a_restart(
    make_node: MakeNode, private_redis: MakeRedis
) -> None:
    server = private_redis(appendonly=True)
    await server.start()
    follower = make_node(url=server.url, environ=BIG)
    publishing = make_node(url=server.url, environ=BIG)
    async with following(follower, "news") as probe:
        async with Publisher(publishing, "news") as publisher:
            await publisher.until(lambda: len(publisher.acknowledged) >= 50, "50 events")
            resyncs = probe.resyncs
            await server.stop()
            await publisher.until(lambda: publisher.failures >= 3, "publishes to fail")
            with pytest.raises(BrokerUnavailable):
                await follower.check()
            before_restart = len(publisher.acknowledged)
            await server.start()
            await publisher.until(
                lambda: len(publisher.acknowledged) >= before_restart + 50, "50 events after"
            )
        last = publisher.acknowledged[-1]
        await probe.until(lambda: last in probe.events, "every acknowledged event")
        await eventually(follower.check, "check after the restart")
        assert probe.resyncs > resyncs  # subscribed again after the restart
        assert probe.resets == [] and probe.abandoned == []
        # Every stored event once, in order; an unacknowledged publish may have been stored.
        assert [event.offset for event in probe.events] == list(range(1, last.offset + 1))
        assert {event.epoch for event in probe.events} == {last.epoch}
        held = set(probe.events)
        assert [event for event in publisher.acknowledged if event not in held] == []
        page = await follower.history("news", Cursor(last.epoch, 0), 100_000)
        assert list(page.events) == probe.events


async def test_a_killed_pubsub_connection_is_rebuilt_and_resynced(
    make_node: MakeNode, redis_url: str
) -> None:
    node, publisher = make_node(), make_node()
    async with following(node, "news") as probe:
        first = await publisher.publish("news", "m", b"1")
        await probe.until(lambda: probe.events == [first], "the first event")
        loop = asyncio.get_running_loop()
        killed_at, resyncs = loop.time(), probe.resyncs
        assert await kill_clients(redis_url, node.client_name("pubsub")) == 1
        missed = await publisher.publish("news", "m", b"2")  # live or through the resync
        await probe.until(lambda: probe.resyncs > resyncs, "a resync after the kill")
        assert loop.time() - killed_at < redis_link.DEAD_AFTER
        await probe.until(lambda: len(probe.events) == 2, "the event published meanwhile")
        after = await publisher.publish("news", "m", b"3")
        await probe.until(lambda: len(probe.events) == 3, "the event published after")
        assert probe.written == [first, missed, after]
        await node.check()


async def test_a_silent_pubsub_link_is_noticed_by_its_ping(
    make_node: MakeNode, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket stays open but nothing comes through: only the ping can tell."""
    monkeypatch.setattr(redis_broker, "CHECK_TIMEOUT", 0.5)  # well before the link is rebuilt
    proxy = await StallingProxy(6379).start()
    try:
        node = make_node(url=f"redis://127.0.0.1:{proxy.port}/0")
        publisher = make_node()
        async with following(node, "news") as probe:
            first = await publisher.publish("news", "m", b"1")
            await probe.until(lambda: probe.events == [first], "the first event")
            loop = asyncio.get_running_loop()
            assert proxy.stall(node.client_name("pubsub").encode()) == 1
            stalled_at, resyncs = loop.time(), probe.resyncs
            with pytest.raises(BrokerUnavailable):
                await node.check()
            missed = await publisher.publish("news", "m", b"2")
            await probe.until(lambda: probe.resyncs > resyncs, "a resync after the silence")
            noticed = loop.time() - stalled_at
            assert noticed > redis_link.DEAD_AFTER - redis_link.PING_INTERVAL - 0.5
            assert noticed < redis_link.DEAD_AFTER + 2
            await probe.until(lambda: probe.events == [first, missed], "the missed event")
            after = await publisher.publish("news", "m", b"3")
            await probe.until(lambda: probe.events == [first, missed, after], "the next event")
            assert probe.resets == [] and probe.abandoned == []
            await node.check()
    finally:
        await proxy.close()


async def test_an_unreachable_redis_is_broker_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_link, "SUBSCRIBE_TIMEOUT", 0.2)
    broker = broker_for(f"redis://127.0.0.1:{free_port()}/0", Settings())
    try:
        with pytest.raises(BrokerUnavailable):
            await broker.publish("news", "m", b"1")
        with pytest.raises(BrokerUnavailable):
            await broker.history("news", None, 10)
        with pytest.raises(BrokerUnavailable):
            await broker.check()
        recorder = Recorder()
        broker.start(recorder.sink, recorder.resync)
        with pytest.raises(BrokerUnavailable):
            await broker.subscribe("news")
        with pytest.raises(BrokerUnavailable):
            await broker.check()
    finally:
        await broker.close()


async def test_a_loop_held_up_past_the_ping_deadline_keeps_its_link(make_node: MakeNode) -> None:
    """A node whose event loop could not run for longer than DEAD_AFTER (a process starved of
    CPU) reads its pongs late: that is not a silent link, and rebuilding it would resync
    every channel on a node with no time to spare."""
    node, publisher = make_node(), make_node()
    async with following(node, "news") as probe:
        first = await publisher.publish("news", "m", b"1")
        await probe.until(lambda: probe.events == [first], "the first event")
        resyncs = probe.resyncs
        time.sleep(redis_link.DEAD_AFTER + 1.5)  # the whole loop held up, pings unread
        await asyncio.sleep(redis_link.PING_INTERVAL * 2.5)
        assert probe.resyncs == resyncs  # the link was not rebuilt
        second = await publisher.publish("news", "m", b"2")
        await probe.until(lambda: probe.events == [first, second], "the next event, live")
        await node.check()


async def test_a_check_held_up_past_its_timeout_passes_when_the_ping_came_back(
    make_node: MakeNode,
) -> None:
    """The readiness check's deadline counts only time the loop could run: a node starved of
    CPU while its ping was out is not unready for it (brokers/patience.py)."""
    node = make_node()
    async with following(node, "news"):
        await node.check()
        check = asyncio.ensure_future(node.check())
        await asyncio.sleep(0)  # the check is under way: its ping is about to go out
        time.sleep(redis_broker.CHECK_TIMEOUT + 1.0)  # the whole loop held up
        await check  # Redis answered meanwhile: no BrokerUnavailable
