"""Tail: how far one connection has written one channel."""

from tidings.hub.tail import Tail
from tidings.protocol.cursor import Cursor


def test_a_tail_starts_at_its_cursor_and_moves_to_another() -> None:
    tail = Tail("news", Cursor("e1", 4), index=2)
    assert (tail.channel, tail.cursor, tail.index) == ("news", Cursor("e1", 4), 2)
    assert tail.backlog is None
    tail.move_to(Cursor("e2", 0))
    assert tail.cursor == Cursor("e2", 0)
    assert (tail.epoch, tail.offset) == ("e2", 0)
