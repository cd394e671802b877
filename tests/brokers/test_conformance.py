"""The broker conformance suite (the contract in brokers/base.py, docs/protocol.md 1 and 2).

Every test runs against every URL in conftest.BROKER_URLS through ``broker_for``.
"""

from __future__ import annotations

import time

import pytest

from tests.brokers.conftest import Clock, MakeBroker, Sink
from tidings.brokers import Broker, HistoryPage
from tidings.brokers.base import PAGE_BYTES
from tidings.exceptions import ConfigError
from tidings.protocol.cursor import Cursor, parse_cursor
from tidings.protocol.event import Event, Reset

pytestmark = pytest.mark.timeout(30)

SMALL_RING = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "3"}
SHORT_TTL = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_TTL_SECONDS": "1"}


async def publish_many(broker: Broker, channel: str, count: int, start: int = 1) -> list[Event]:
    return [
        await broker.publish(channel, "message", f'{{"n":{n}}}'.encode())
        for n in range(start, start + count)
    ]


def offsets(events: object) -> list[int]:
    assert isinstance(events, list | tuple)
    return [event.offset for event in events]


async def head_of(broker: Broker, channel: str) -> Cursor:
    page = await broker.history(channel, None, 100)
    return page.cursor


# Offsets and the event itself


async def test_offsets_are_consecutive_from_one_in_one_epoch(make_broker: MakeBroker) -> None:
    broker = make_broker()
    before_ms = time.time_ns() // 1_000_000
    events = await publish_many(broker, "news", 5)
    after_ms = time.time_ns() // 1_000_000
    assert offsets(events) == [1, 2, 3, 4, 5]
    assert len({event.epoch for event in events}) == 1
    for n, event in enumerate(events, start=1):
        assert parse_cursor(event.id) == event.cursor == Cursor(event.epoch, n)
        assert (event.channel, event.event, event.data) == (
            "news",
            "message",
            f'{{"n":{n}}}'.encode(),
        )
        assert before_ms <= event.ts <= after_ms


async def test_an_event_keeps_its_name_and_data_bytes(make_broker: MakeBroker) -> None:
    broker = make_broker()
    stored = await broker.publish("chat:lobby", "typing", b'{"text":"h\\u00e9"}')
    assert (stored.channel, stored.event, stored.data) == (
        "chat:lobby",
        "typing",
        b'{"text":"h\\u00e9"}',
    )
    null = await broker.publish("chat:lobby", "message", b"null")
    assert null.data == b"null"
    page = await broker.history("chat:lobby", Cursor(stored.epoch, 0), 10)
    assert list(page.events) == [stored, null]


async def test_channels_have_their_own_offsets(make_broker: MakeBroker) -> None:
    broker = make_broker()
    a1 = await broker.publish("a", "message", b"1")
    b1 = await broker.publish("b", "message", b"1")
    a2 = await broker.publish("a", "message", b"2")
    assert (a1.offset, b1.offset, a2.offset) == (1, 1, 2)
    assert a1.epoch == a2.epoch


# History


async def test_a_fresh_channel_is_at_offset_zero(make_broker: MakeBroker) -> None:
    page = await make_broker().history("news", None, 100)
    assert page.cursor.offset == 0
    assert (tuple(page.events), page.reset) == ((), None)
    assert parse_cursor(str(page.cursor)) == page.cursor


async def test_history_without_since_gives_the_head_and_no_events(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 3)
    page = await broker.history("news", None, 100)
    assert page == HistoryPage((), events[-1].cursor)
    assert page.reset is None


async def test_history_from_offset_zero_is_every_event_in_order(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 5)
    page = await broker.history("news", Cursor(events[0].epoch, 0), 100)
    assert list(page.events) == events
    assert (page.cursor, page.reset) == (events[-1].cursor, None)


async def test_history_after_a_cursor_in_order_with_a_limit(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 5)
    first = await broker.history("news", events[1].cursor, 2)
    assert offsets(first.events) == [3, 4]
    assert list(first.events) == events[2:4]
    assert (first.cursor, first.reset) == (events[3].cursor, None)
    rest = await broker.history("news", first.cursor, 2)
    assert list(rest.events) == events[4:]
    assert (rest.cursor, rest.reset) == (events[4].cursor, None)
    end = await broker.history("news", rest.cursor, 2)
    assert (tuple(end.events), end.cursor, end.reset) == ((), events[4].cursor, None)


async def test_history_resumes_exactly_page_by_page(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 10)
    seen: list[Event] = []
    cursor = Cursor(events[0].epoch, 0)
    for _ in range(10):
        page = await broker.history("news", cursor, 3)
        assert page.reset is None
        seen.extend(page.events)
        cursor = page.cursor
    assert seen == events


async def test_more_says_whether_history_holds_events_after_the_page(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 5)
    start = Cursor(events[0].epoch, 0)
    assert (await broker.history("news", start, 4)).more
    assert not (await broker.history("news", start, 5)).more
    assert not (await broker.history("news", start, 100)).more
    assert not (await broker.history("news", events[-1].cursor, 100)).more
    assert not (await broker.history("news", None, 100)).more


async def test_a_page_of_large_events_stops_at_the_byte_bound_and_reads_on(
    make_broker: MakeBroker, holds_history_locally: bool
) -> None:
    """A catch-up of large events reads PAGE_BYTES at a time from a broker over the network
    (one event at least), and ``more`` leads the reader to every event, once, in order."""
    broker = make_broker()
    size = PAGE_BYTES // 10 + 1  # ten of them pass the bound
    events = [
        await broker.publish("news", "message", b'"%s"' % (b"%02d" % n * (size // 2)))
        for n in range(25)
    ]
    cursor, seen, pages = Cursor(events[0].epoch, 0), [], []
    for _ in range(30):
        page = await broker.history("news", cursor, 1000)
        assert page.reset is None and page.events
        pages.append(len(page.events))
        seen.extend(page.events)
        cursor = page.cursor
        if not page.more:
            break
    assert seen == events
    if holds_history_locally:
        assert pages == [25]
    else:
        assert pages == [9, 9, 7]
        assert all(sum(len(e.data) for e in page) <= PAGE_BYTES for page in [seen[:9], seen[9:18]])


async def test_history_nowait_equals_history(
    make_broker: MakeBroker, holds_history_locally: bool
) -> None:
    broker = make_broker(SMALL_RING)
    events = await publish_many(broker, "news", 5)
    epoch = events[0].epoch
    for since in [None, Cursor(epoch, 0), Cursor(epoch, 2), Cursor(epoch, 4), Cursor(epoch, 5)]:
        for limit in (1, 2, 100):
            now = broker.history_nowait("news", since, limit)
            if holds_history_locally:
                assert now is not None
            if now is not None:
                assert now == await broker.history("news", since, limit)
    for since in [Cursor(epoch, 9), Cursor("other" + epoch, 1)]:
        now = broker.history_nowait("news", since, 10)
        if now is not None:
            assert now == await broker.history("news", since, 10)


# Resets


async def test_a_cursor_of_another_epoch_is_an_epoch_reset(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 3)
    other = "x" + events[0].epoch[1:] if events[0].epoch[0] != "x" else "y" + events[0].epoch[1:]
    for since in (Cursor(other, 0), Cursor(other, 1), Cursor(other, 3)):
        page = await broker.history("news", since, 100)
        head = events[-1].cursor
        assert page == HistoryPage((), head, Reset("news", head, "epoch"))


async def test_a_cursor_on_a_fresh_channel_is_an_epoch_reset(make_broker: MakeBroker) -> None:
    broker = make_broker()
    head = await head_of(broker, "news")
    page = await broker.history("news", Cursor("gone" if head.epoch != "gone" else "lost", 5), 10)
    assert page == HistoryPage((), head, Reset("news", head, "epoch"))


async def test_an_offset_beyond_the_last_event_is_an_epoch_reset(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 3)
    head = events[-1].cursor
    for offset in (4, 5, 2**63 - 1):
        page = await broker.history("news", Cursor(head.epoch, offset), 100)
        assert page == HistoryPage((), head, Reset("news", head, "epoch"))


async def test_events_that_left_the_ring_are_a_gap_reset(make_broker: MakeBroker) -> None:
    broker = make_broker(SMALL_RING)
    events = await publish_many(broker, "news", 5)  # the ring holds 3, 4 and 5
    head = events[-1].cursor
    for offset in (0, 1):
        page = await broker.history("news", Cursor(head.epoch, offset), 100)
        assert page == HistoryPage((), head, Reset("news", head, "gap"))
    still_held = await broker.history("news", events[1].cursor, 100)
    assert list(still_held.events) == events[2:]
    assert still_held.reset is None


async def test_a_gap_reset_lets_the_client_continue_from_its_cursor(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(SMALL_RING)
    await publish_many(broker, "news", 5)
    page = await broker.history("news", Cursor((await head_of(broker, "news")).epoch, 0), 100)
    assert page.reset is not None
    later = await publish_many(broker, "news", 2, start=6)
    resumed = await broker.history("news", page.reset.cursor, 100)
    assert (list(resumed.events), resumed.reset) == (later, None)


async def test_events_that_aged_out_are_a_gap_reset(make_broker: MakeBroker, clock: Clock) -> None:
    broker = make_broker(SHORT_TTL)
    events = await publish_many(broker, "news", 3)
    await clock.advance(1.5)
    head = events[-1].cursor
    for offset in (0, 1, 2):
        page = await broker.history("news", Cursor(head.epoch, offset), 100)
        assert page == HistoryPage((), head, Reset("news", head, "gap"))
    at_head = await broker.history("news", head, 100)
    assert at_head == HistoryPage((), head)


async def test_only_the_events_that_aged_out_are_gone(
    make_broker: MakeBroker, clock: Clock
) -> None:
    broker = make_broker(SHORT_TTL)
    old = await publish_many(broker, "news", 2)
    await clock.advance(0.8)
    young = await publish_many(broker, "news", 2, start=3)
    # The first two are 1.2 s old, the others 0.4 s: a broker whose clock is real time sleeps,
    # and a loaded machine oversleeps, so the young ones keep the wide margin.
    await clock.advance(0.4)
    gap = await broker.history("news", Cursor(old[0].epoch, 0), 100)
    assert gap.reset is not None and gap.reset.reason == "gap"
    held = await broker.history("news", old[-1].cursor, 100)
    assert (list(held.events), held.reset) == (young, None)


async def test_a_history_size_of_zero_keeps_nothing(make_broker: MakeBroker) -> None:
    broker = make_broker({"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "0"})
    events = await publish_many(broker, "news", 2)
    assert offsets(events) == [1, 2]
    page = await broker.history("news", events[0].cursor, 100)
    assert page == HistoryPage((), events[1].cursor, Reset("news", events[1].cursor, "gap"))


# Namespaces


async def test_each_namespace_keeps_its_own_history_size(make_broker: MakeBroker) -> None:
    broker = make_broker(
        {
            "TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "2",
            "TIDINGS_NAMESPACES_CHAT_HISTORY_SIZE": "4",
        }
    )
    # "news" is in the default namespace; "other:x" in a namespace with no settings of its own.
    for channel, size in [("news", 2), ("chat:lobby", 4), ("other:x", 2), ("chatroom", 2)]:
        events = await publish_many(broker, channel, 6)
        epoch = events[0].epoch
        kept = await broker.history(channel, Cursor(epoch, 6 - size), 100)
        assert (len(kept.events), kept.reset) == (size, None), channel
        lost = await broker.history(channel, Cursor(epoch, 6 - size - 1), 100)
        assert lost.reset is not None and lost.reset.reason == "gap", channel


# Idempotency


async def test_a_repeated_idempotency_key_returns_the_first_event(
    make_broker: MakeBroker, sink: Sink
) -> None:
    broker = make_broker()
    broker.start(sink, lambda channel: None)
    await broker.subscribe("news")
    first = await broker.publish("news", "message", b"1", idempotency_key="msg-81")
    await broker.publish("news", "message", b"2")
    again = await broker.publish("news", "message", b"retry", idempotency_key="msg-81")
    assert again == first
    assert again.data == b"1"
    last = await broker.publish("news", "message", b"3")
    assert last.offset == 3
    delivered = await sink.wait_for(3)
    assert offsets(delivered) == [1, 2, 3]
    page = await broker.history("news", Cursor(first.epoch, 0), 100)
    assert offsets(page.events) == [1, 2, 3]


async def test_an_idempotency_key_is_per_channel(make_broker: MakeBroker) -> None:
    broker = make_broker()
    a = await broker.publish("a", "message", b"1", idempotency_key="k")
    b = await broker.publish("b", "message", b"1", idempotency_key="k")
    assert (a.channel, b.channel) == ("a", "b")
    assert (a.offset, b.offset) == (1, 1)


async def test_an_idempotency_key_publishes_anew_once_its_event_left_the_ring(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(SMALL_RING)
    first = await broker.publish("news", "message", b"1", idempotency_key="k")
    await publish_many(broker, "news", 2, start=2)
    held = await broker.publish("news", "message", b"again", idempotency_key="k")
    assert held == first  # offsets 1, 2, 3 are held
    await broker.publish("news", "message", b"4")  # offset 1 leaves the ring
    anew = await broker.publish("news", "message", b"again", idempotency_key="k")
    assert (anew.offset, anew.data) == (5, b"again")
    repeated = await broker.publish("news", "message", b"third", idempotency_key="k")
    assert repeated == anew


async def test_an_idempotency_key_publishes_anew_once_its_event_aged_out(
    make_broker: MakeBroker, clock: Clock
) -> None:
    broker = make_broker(SHORT_TTL)
    first = await broker.publish("news", "message", b"1", idempotency_key="k")
    await clock.advance(1.5)
    anew = await broker.publish("news", "message", b"again", idempotency_key="k")
    assert (anew.offset, anew.data) == (first.offset + 1, b"again")


async def test_an_idempotency_key_publishes_anew_once_its_aged_event_was_expired(
    make_broker: MakeBroker, clock: Clock
) -> None:
    broker = make_broker(SHORT_TTL)
    first = await broker.publish("news", "message", b"1", idempotency_key="k")
    await clock.advance(1.5)
    gap = await broker.history("news", Cursor(first.epoch, 0), 10)
    assert gap.reset is not None
    anew = await broker.publish("news", "message", b"again", idempotency_key="k")
    assert (anew.offset, anew.data) == (2, b"again")


# Fan-out


async def test_publish_nowait_stores_as_publish_does_or_not_at_all(
    make_broker: MakeBroker, sink: Sink, holds_history_locally: bool
) -> None:
    """Mixed with ``publish``: offsets stay consecutive, the sink gets every stored event, an
    idempotency key holds across both; a broker that stores over the network stores nothing."""
    broker = make_broker()
    broker.start(sink, lambda channel: None)
    await broker.subscribe("news")
    first = await broker.publish("news", "message", b"1", idempotency_key="k")
    now = broker.publish_nowait("news", "message", b"2")
    if not holds_history_locally:
        assert now is None
        assert broker.publish_nowait("news", "message", b"again", idempotency_key="k") is None
        page = await broker.history("news", Cursor(first.epoch, 0), 10)
        assert offsets(page.events) == [1]
        return
    assert now is not None and now.offset == 2 and now.data == b"2"
    assert broker.publish_nowait("news", "message", b"again", idempotency_key="k") == first
    last = await broker.publish("news", "message", b"3")
    assert last.offset == 3
    assert offsets(await sink.wait_for(3)) == [1, 2, 3]
    page = await broker.history("news", Cursor(first.epoch, 0), 10)
    assert [event.data for event in page.events] == [b"1", b"2", b"3"]


async def test_the_sink_receives_every_published_event_in_order(
    make_broker: MakeBroker, sink: Sink
) -> None:
    broker = make_broker()
    broker.start(sink, lambda channel: None)
    for channel in ("a", "chat:b"):
        await broker.subscribe(channel)
    published = []
    for n in range(10):
        published.append(await broker.publish("a" if n % 3 else "chat:b", "message", b"%d" % n))
    delivered = await sink.wait_for(10)
    for channel in ("a", "chat:b"):
        mine = [event for event in delivered if event.channel == channel]
        assert mine == [event for event in published if event.channel == channel]
        assert offsets(mine) == list(range(1, len(mine) + 1))
    assert len(delivered) == 10


async def test_check_makes_a_round_trip_without_raising(make_broker: MakeBroker) -> None:
    await make_broker().check()


def test_an_unknown_scheme_is_a_config_error() -> None:
    from tidings.brokers import broker_for
    from tidings.config import Settings

    with pytest.raises(ConfigError) as caught:
        broker_for("carrier-pigeon://coop", Settings())
    assert caught.value.key == "server.broker"
