"""How far one connection has written one channel: its own module, so that the hub and the
followers both use it without importing each other."""

from __future__ import annotations

from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event


class Tail:
    """How far one connection has written one channel."""

    __slots__ = ("backlog", "channel", "epoch", "index", "offset")

    def __init__(self, channel: str, cursor: Cursor, index: int = 0) -> None:
        self.channel = channel
        self.epoch = cursor.epoch
        self.offset = cursor.offset
        self.index = index
        self.backlog: list[Event] | None = None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.offset)

    def move_to(self, cursor: Cursor) -> None:
        self.epoch = cursor.epoch
        self.offset = cursor.offset
