"""One channel of the memory broker: its ring, its keys, and the pages read from it."""

from __future__ import annotations

from tidings.brokers.base import HistoryPage
from tidings.brokers.memory_log import ChannelLog
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Reset


def filled(count: int, size: int = 10, ttl: float = 3600.0) -> ChannelLog:
    log = ChannelLog("news", size, ttl)
    for number in range(count):
        log.append("message", b"%d" % number, None)
    return log


def test_a_caught_up_reader_gets_an_empty_page_at_its_own_cursor() -> None:
    log = filled(3)
    assert log.page(log.head, 10) == HistoryPage((), log.head)


def test_a_page_holds_the_events_after_the_cursor_up_to_the_limit() -> None:
    log = filled(5)
    page = log.page(Cursor(log.epoch, 1), 2)
    assert [event.offset for event in page.events] == [2, 3]
    assert page.cursor == Cursor(log.epoch, 3)
    assert page.more  # 4 and 5 are left for the next page


def test_a_cursor_before_the_ring_is_a_gap_reset_at_the_head() -> None:
    log = filled(15, size=10)  # holds 6 to 15
    page = log.page(Cursor(log.epoch, 2), 10)
    assert page == HistoryPage((), log.head, Reset("news", log.head, "gap"))
    assert log.page(Cursor(log.epoch, 5), 10).events[0].offset == 6  # just in reach


def test_another_epoch_or_a_cursor_past_the_head_is_an_epoch_reset() -> None:
    log = filled(3)
    for since in (Cursor("otherepo", 1), Cursor(log.epoch, 9)):
        assert log.page(since, 10) == HistoryPage((), log.head, Reset("news", log.head, "epoch"))


def test_without_a_cursor_the_page_is_empty_at_the_head() -> None:
    log = filled(3)
    assert log.page(None, 10) == HistoryPage((), log.head)


def test_events_past_their_ttl_leave_the_ring_and_their_keys_with_them() -> None:
    log = ChannelLog("news", 10, 1.0)
    kept = log.append("message", b"1", "key-1")
    assert log.find_key("key-1") == kept
    log.expire(kept.ts + 1001)
    assert list(log.events) == []
    assert log.find_key("key-1") is None


def test_the_ring_forgets_the_key_of_the_event_it_drops() -> None:
    log = ChannelLog("news", 2, 3600.0)
    log.append("message", b"1", "first")
    log.append("message", b"2", None)
    log.append("message", b"3", None)
    assert log.find_key("first") is None


def test_recent_is_the_last_events_oldest_first() -> None:
    log = filled(5)
    assert [event.offset for event in log.recent(2).events] == [4, 5]
    assert log.recent(2).cursor == log.head


def test_a_channel_without_history_numbers_its_events_but_keeps_none() -> None:
    log = filled(3, size=0)
    assert log.head.offset == 3
    assert list(log.events) == []
