"""One channel of ``memory://``: a bounded ring of its latest events, its epoch and its
idempotency keys; the pages of history a poll or a catch-up reads from it.

Apart from the broker (memory.py) because every poll reads a page: this module is compiled
(setup.py), the broker, which tests stand in for and subclass, is not.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import islice

from tidings.brokers.base import HistoryPage, page_after
from tidings.protocol.cursor import Cursor, new_epoch
from tidings.protocol.event import Event, Reset


class ChannelLog:
    """One channel's stream: a bounded ring of its latest events and its idempotency keys."""

    __slots__ = ("channel", "epoch", "events", "key_at", "keys", "last_offset", "ttl_ms")

    def __init__(self, channel: str, size: int, ttl_seconds: float) -> None:
        self.channel = channel
        self.epoch = new_epoch()
        self.last_offset = 0
        self.events: deque[Event] = deque(maxlen=size)
        self.keys: dict[str, Event] = {}
        self.key_at: dict[int, str] = {}
        self.ttl_ms = int(ttl_seconds * 1000)

    @property
    def head(self) -> Cursor:
        return Cursor(self.epoch, self.last_offset)

    def append(self, event_name: str, data: bytes, key: str | None) -> Event:
        now = time.time_ns() // 1_000_000
        self.expire(now)
        self.last_offset += 1
        event = Event(self.channel, self.epoch, self.last_offset, event_name, data, now)
        if self.events.maxlen == 0:
            return event
        if len(self.events) == self.events.maxlen:
            self._forget_key_of(self.events[0])
        self.events.append(event)
        if key is not None:
            self.keys[key] = event
            self.key_at[event.offset] = key
        return event

    def find_key(self, key: str) -> Event | None:
        self.expire(time.time_ns() // 1_000_000)
        event = self.keys.get(key)
        if event is None or not self.events or event.offset < self.events[0].offset:
            return None
        return event

    def expire(self, now_ms: int) -> None:
        oldest_allowed = now_ms - self.ttl_ms
        while self.events and self.events[0].ts < oldest_allowed:
            self._forget_key_of(self.events.popleft())

    def _forget_key_of(self, event: Event) -> None:
        key = self.key_at.pop(event.offset, None)
        if key is not None:
            del self.keys[key]

    def page(self, since: Cursor | None, limit: int) -> HistoryPage:
        if since is not None and since.offset == self.last_offset and since.epoch == self.epoch:
            return HistoryPage((), since)  # caught up (what long polls ask most): nothing to expire
        self.expire(time.time_ns() // 1_000_000)
        head = self.head
        if since is None:
            return HistoryPage((), head)
        if since.epoch != self.epoch or since.offset > self.last_offset:
            return HistoryPage((), head, Reset(self.channel, head, "epoch"))
        first_held = self.events[0].offset if self.events else self.last_offset + 1
        if since.offset + 1 < first_held:
            return HistoryPage((), head, Reset(self.channel, head, "gap"))
        start = since.offset + 1 - first_held
        return page_after(since, tuple(islice(self.events, start, start + limit)), self.last_offset)

    def recent(self, count: int) -> HistoryPage:
        self.expire(time.time_ns() // 1_000_000)
        held = len(self.events)
        events = tuple(islice(self.events, held - min(count, held), held))
        return HistoryPage(events, self.head)
