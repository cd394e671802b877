"""Shared history reads (hub/reads.py): a storm of followers asking the same thing costs the
broker one read per loop iteration, and nothing is shared that one of them could miss.

The broker is the memory broker, counting the reads it is sent; its pages are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from tidings.brokers.base import HistoryPage
from tidings.brokers.memory import MemoryBroker
from tidings.config import load_settings
from tidings.exceptions import BrokerUnavailable
from tidings.hub.reads import SharedReads
from tidings.protocol.cursor import Cursor

pytestmark = pytest.mark.timeout(10)


class CountingBroker(MemoryBroker):
    """The memory broker, counting the reads that reach it; ``failing`` makes them raise."""

    def __init__(self) -> None:
        super().__init__("memory://", load_settings(environ={}))
        self.reads: list[tuple[str, str, Cursor | None, int]] = []
        self.failing: BrokerUnavailable | None = None

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        self.reads.append(("history", channel, since, limit))
        if self.failing is not None:
            raise self.failing
        page = await super().history(channel, since, limit)  # read as the request is sent
        await asyncio.sleep(0)  # and answered in a later iteration
        return page

    async def recent(self, channel: str, count: int) -> HistoryPage:
        self.reads.append(("recent", channel, None, count))
        page = await super().recent(channel, count)
        await asyncio.sleep(0)
        return page


def shared(broker: CountingBroker) -> SharedReads:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return SharedReads(broker, asyncio.get_running_loop(), spawn)


async def test_the_same_read_asked_in_one_iteration_reaches_the_broker_once() -> None:
    broker = CountingBroker()
    await broker.publish("news", "message", b"1")
    reads = shared(broker)
    asked = [reads.history("news", None, 0) for _ in range(500)]
    other = reads.history("sport", None, 0)
    pages = await asyncio.gather(*asked, other)
    assert len(broker.reads) == 2
    assert {page.cursor for page in pages[:500]} == {pages[0].cursor}
    assert pages[0].cursor.offset == 1
    assert reads.sent == 2 and reads.shared == 499


async def test_a_read_already_sent_is_not_joined() -> None:
    # asked after the first was sent, a read could be older than the asker's attachment
    broker = CountingBroker()
    reads = shared(broker)
    first = asyncio.ensure_future(reads.history("news", None, 0))
    while not broker.reads:
        await asyncio.sleep(0)  # until the first read has left
    await broker.publish("news", "message", b"1")
    second = await reads.history("news", None, 0)
    assert (await first).cursor.offset == 0
    assert second.cursor.offset == 1
    assert len(broker.reads) == 2


async def test_different_cursors_limits_and_kinds_are_different_reads() -> None:
    broker = CountingBroker()
    for n in range(3):
        await broker.publish("news", "message", b"%d" % n)
    head = await broker.history("news", None, 0)
    broker.reads.clear()
    reads = shared(broker)
    pages = await asyncio.gather(
        reads.history("news", None, 0),
        reads.history("news", Cursor(head.cursor.epoch, 1), 10),
        reads.history("news", Cursor(head.cursor.epoch, 1), 1),
        reads.recent("news", 2),
    )
    assert len(broker.reads) == 4
    assert [len(page.events) for page in pages] == [0, 2, 1, 2]


async def test_an_asker_that_goes_away_does_not_cancel_the_others() -> None:
    broker = CountingBroker()
    reads = shared(broker)
    leaving = asyncio.ensure_future(reads.history("news", None, 0))
    staying = asyncio.ensure_future(reads.history("news", None, 0))
    await asyncio.sleep(0)
    leaving.cancel()
    page = await staying
    assert page.cursor.offset == 0
    assert leaving.cancelled()


async def test_every_asker_gets_what_the_broker_raised() -> None:
    broker = CountingBroker()
    broker.failing = BrokerUnavailable("history read: Redis is down")
    reads = shared(broker)
    results = await asyncio.gather(
        *(reads.history("news", None, 0) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, BrokerUnavailable) for result in results)
    assert len(broker.reads) == 1
