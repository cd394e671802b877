"""Following a channel from a cursor (hub/follow.py), without a socket.

Readers are plain Followers on a real Hub and memory broker. Whatever the order in which live
events, gaps, new epochs and full transports come, each reader writes its channel in offset
order, never an event twice, and never skips one silently: what history lost is a reset.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.hub.conftest import MakeHub
from tests.hub.support import Reader, RemoteHistory
from tidings.config import load_settings
from tidings.hub.follow import MAX_BACKLOG, PAGE_SIZE
from tidings.hub.hub import Hub
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event

pytestmark = pytest.mark.timeout(20)

LONG_HISTORY = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "100000"}


async def publish(hub: Hub, channel: str, count: int) -> list[Event]:
    return [await hub.broker.publish(channel, "m", b"%d" % n) for n in range(count)]


async def head(hub: Hub, channel: str) -> Cursor:
    return (await hub.broker.history(channel, None, 0)).cursor


async def following(hub: Hub, channel: str, since: Cursor | None = None) -> Reader:
    """A reader attached to ``channel`` from ``since`` (its head by default), caught up."""
    reader = Reader(hub, (channel, since or await head(hub, channel)))
    hub.attach(channel, reader)
    reader.catch_up(reader.tails[channel])
    await reader.until(lambda: reader.resyncs == 1, "the broker's subscription")
    return reader


async def test_live_events_that_continue_the_tail_are_one_write(hub: Hub) -> None:
    reader = await following(hub, "news")
    stored = await publish(hub, "news", 3)  # in one loop iteration: one batch
    await reader.until(lambda: len(reader.events) == 3, "the live events")
    assert reader.events == stored
    assert reader.batches == 1
    assert reader.tails["news"].cursor == stored[-1].cursor


async def test_a_reader_from_an_old_cursor_gets_history_then_live(make_hub: MakeHub) -> None:
    hub = make_hub(LONG_HISTORY)
    earlier = await publish(hub, "news", 2 * PAGE_SIZE + 5)  # more than one page
    reader = await following(hub, "news", Cursor(earlier[0].epoch, 0))
    assert reader.events == earlier
    later = await publish(hub, "news", 3)
    await reader.until(lambda: len(reader.events) == len(earlier) + 3, "the live events")
    assert reader.offsets("news") == list(range(1, len(earlier) + 4))
    assert reader.events[-3:] == later


async def test_events_already_written_are_never_written_again(hub: Hub) -> None:
    stored = await publish(hub, "news", 3)
    reader = Reader(hub, ("news", stored[1].cursor))
    for event in stored:  # a duplicate and an old one arrive late
        reader.deliver(event)
    reader.deliver_batch(Batch("news", tuple(stored)))
    assert reader.events == [stored[2]]


async def test_a_gap_in_live_events_is_filled_from_history_in_order(hub: Hub) -> None:
    stored = await publish(hub, "news", 5)
    reader = Reader(hub, ("news", stored[0].cursor))
    reader.deliver(stored[3])  # 2 and 3 never came live
    reader.deliver(stored[4])
    assert reader.offsets("news") == [2, 3, 4, 5]
    assert reader.tails["news"].backlog is None


async def test_events_that_arrive_during_a_stopped_catch_up_wait_and_follow_in_order(
    hub: Hub,
) -> None:
    stored = await publish(hub, "news", 10)
    reader = Reader(hub, ("news", Cursor(stored[0].epoch, 0)))
    reader.room = 4  # the transport fills up after four events
    reader.catch_up(reader.tails["news"])
    assert reader.offsets("news") == [1, 2, 3, 4]
    live = await publish(hub, "news", 3)  # arrive while the catch-up waits for room
    for event in live:
        reader.deliver(event)
    assert reader.offsets("news") == [1, 2, 3, 4]
    reader.drained()
    assert reader.offsets("news") == list(range(1, 14))


async def test_a_backlog_that_overflows_is_read_again_from_history(make_hub: MakeHub) -> None:
    hub = make_hub(LONG_HISTORY)
    first = await publish(hub, "news", 1)
    reader = Reader(hub, ("news", Cursor(first[0].epoch, 0)))
    reader.room = 0
    reader.catch_up(reader.tails["news"])
    for event in await publish(hub, "news", MAX_BACKLOG + 10):
        reader.deliver(event)
    backlog = reader.tails["news"].backlog
    assert backlog is not None and len(backlog) < MAX_BACKLOG  # cleared, never past the bound
    reader.drained()
    assert reader.offsets("news") == list(range(1, MAX_BACKLOG + 12))


async def test_history_that_no_longer_covers_the_cursor_is_a_reset(make_hub: MakeHub) -> None:
    hub = make_hub({"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "5"})
    stored = await publish(hub, "news", 20)
    reader = Reader(hub, ("news", Cursor(stored[0].epoch, 1)))
    reader.catch_up(reader.tails["news"])
    # the client reloads and goes on from the head: nothing in between is written as if whole
    assert [(reset.reason, reset.cursor) for reset in reader.resets] == [("gap", stored[-1].cursor)]
    assert reader.events == []
    later = await publish(hub, "news", 1)
    reader.deliver(later[0])
    assert reader.events == later


async def test_an_event_of_another_epoch_is_a_reset_to_the_new_one(hub: Hub) -> None:
    stored = await publish(hub, "news", 2)
    reader = Reader(hub, ("news", Cursor("elsewhere", 7)))  # a cursor of a lifetime gone
    reader.deliver(stored[1])
    assert [(reset.reason, reset.cursor) for reset in reader.resets] == [
        ("epoch", stored[1].cursor)
    ]
    assert reader.events == []
    later = await publish(hub, "news", 1)
    reader.deliver(later[0])
    assert reader.events == later


async def test_catch_ups_through_a_remote_history_are_asynchronous_and_ordered() -> None:
    settings = load_settings()
    hub = Hub(RemoteHistory(settings), settings, asyncio.get_running_loop())
    hub.start()
    try:
        stored = await publish(hub, "news", 5)
        reader = Reader(hub, ("news", Cursor(stored[0].epoch, 0)))
        hub.attach("news", reader)
        reader.catch_up(reader.tails["news"])
        assert reader.events == []  # nothing without an await
        live = await publish(hub, "news", 2)  # held in the backlog meanwhile
        await reader.until(lambda: len(reader.events) == 7, "history, then live")
        assert reader.events == stored + live
    finally:
        await hub.close()


async def test_a_catch_up_that_cannot_read_history_abandons_the_connection() -> None:
    settings = load_settings()
    broker = RemoteHistory(settings)
    hub = Hub(broker, settings, asyncio.get_running_loop())
    hub.start()
    try:
        stored = await publish(hub, "news", 3)
        reader = Reader(hub, ("news", Cursor(stored[0].epoch, 0)))
        broker.failing = True
        reader.catch_up(reader.tails["news"])
        await reader.until(lambda: reader.abandoned != [], "the connection abandoned")
        assert reader.abandoned == ["broker unavailable"]  # the client resumes elsewhere
        assert reader.events == []
        assert hub.tally.broker_errors == 1
    finally:
        await hub.close()


async def test_several_channels_on_one_reader_keep_their_own_order(hub: Hub) -> None:
    news, sport = await publish(hub, "news", 3), await publish(hub, "sport", 2)
    reader = Reader(hub, ("news", news[0].cursor), ("sport", Cursor(sport[0].epoch, 0)))
    reader.deliver(news[2])  # a gap on news only
    reader.catch_up(reader.tails["sport"])
    assert reader.offsets("news") == [2, 3]
    assert reader.offsets("sport") == [1, 2]
