"""A NATS of the test's own, stopped and started again: nothing acknowledged is lost.

The server keeps its store directory across the restart, as a real deployment does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.brokers.conftest import Sink
from tests.nats.conftest import settings_for
from tests.nats.support import PrivateNats
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event

if TYPE_CHECKING:
    from tidings.brokers.nats import NatsBroker

pytestmark = pytest.mark.timeout(60)


class Resyncs:
    """Records the channels a broker asks to resynchronise; ``wait_for`` waits for some."""

    def __init__(self) -> None:
        self.channels: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, channel: str) -> None:
        self.channels.append(channel)
        self._changed.set()

    async def wait_for(self, channels: set[str], timeout: float = 20.0) -> None:
        async def until() -> None:
            while not channels <= set(self.channels):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)


def node(server: PrivateNats, sink: Sink, resyncs: Resyncs) -> NatsBroker:
    from tidings.brokers.nats import NatsBroker

    url = f"{server.url}?prefix=outage&timeout=2"
    broker = NatsBroker(url, settings_for(url))
    broker.start(sink, resyncs)
    return broker


def of(events: list[Event], channel: str) -> list[Event]:
    return [event for event in events if event.channel == channel]


async def publish(broker: NatsBroker, channel: str, numbers: range) -> list[Event]:
    return [await broker.publish(channel, "message", b"%d" % n) for n in numbers]


async def test_an_outage_fails_publishes_then_resyncs_and_loses_nothing(
    private_nats: PrivateNats,
) -> None:
    await private_nats.start()
    sink, resyncs = Sink(), Resyncs()
    broker = node(private_nats, sink, resyncs)
    try:
        await broker.subscribe("news")
        assert resyncs.channels == ["news"]  # what came before the subscription was live
        resyncs.channels.clear()
        before = await publish(broker, "news", range(1, 4))
        await sink.wait_for(3)

        await private_nats.stop()
        with pytest.raises(BrokerUnavailable):
            await broker.check()
        with pytest.raises(BrokerUnavailable):
            await broker.publish("news", "message", b"never acknowledged")
        with pytest.raises(BrokerUnavailable):
            await broker.history("news", None, 10)
        await broker.subscribe("late")  # kept, and made when NATS is back
        assert resyncs.channels == []

        await private_nats.start()
        await resyncs.wait_for({"news", "late"})
        await broker.check()
        after = await publish(broker, "news", range(4, 6))
        late = await publish(broker, "late", range(1, 2))

        page = await broker.history("news", Cursor(before[0].epoch, 0), 100)
        assert (list(page.events), page.reset) == ([*before, *after], None)
        delivered = await sink.wait_for(6)
        assert (of(delivered, "news"), of(delivered, "late")) == ([*before, *after], late)
    finally:
        await broker.close()


async def test_a_node_that_starts_before_nats_connects_when_it_comes(
    private_nats: PrivateNats,
) -> None:
    sink, resyncs = Sink(), Resyncs()
    broker = node(private_nats, sink, resyncs)
    try:
        with pytest.raises(BrokerUnavailable):
            await broker.check()
        with pytest.raises(BrokerUnavailable):
            await broker.subscribe("news")  # the interest is kept all the same
        with pytest.raises(BrokerUnavailable):
            await broker.publish("news", "message", b"never acknowledged")

        await private_nats.start()
        await resyncs.wait_for({"news"})  # connected on its own, then caught "news" up
        await broker.check()
        assert resyncs.channels == ["news"]
        stored = await publish(broker, "news", range(1, 3))
        assert [event.offset for event in stored] == [1, 2]
        assert await sink.wait_for(2) == stored
    finally:
        await broker.close()
