"""Following channels from a cursor: in order, never twice, never a silent gap.

A streaming connection (SSE, WebSocket) keeps one Tail per channel. Live events are written
when they continue the tail exactly. An event that leaves a gap, a new epoch, or a subscribe
with ``since`` starts a catch-up from history; events that arrive meanwhile wait in a bounded
backlog and are applied after it, so a channel is always written in offset order.
"""

from __future__ import annotations

import logging

from mypy_extensions import mypyc_attr

from tidings.brokers.base import HistoryPage
from tidings.exceptions import BrokerUnavailable
from tidings.hub.hub import Hub
from tidings.hub.tail import Tail
from tidings.protocol.event import Batch, Event, Reset

log = logging.getLogger("tidings.hub")

PAGE_SIZE = 1000
MAX_BACKLOG = 1000


# compiled (setup.py), yet open to interpreted subclasses:
# the hub's tests follow channels with subclasses of it
@mypyc_attr(allow_interpreted_subclasses=True)
class Follower:
    """The catch-up logic shared by SSE streams and WebSocket connections.

    Subclasses hold ``hub`` and ``tails`` and write the bytes of their own wire format.
    """

    __slots__ = ()

    hub: Hub
    tails: dict[str, Tail]

    def write_event(self, tail: Tail, event: Event) -> None:
        raise NotImplementedError

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        raise NotImplementedError

    def writable(self) -> bool:
        """False while the transport's buffer is full: catch-ups stop and resume later."""
        return True

    def abandon(self, reason: str) -> None:
        """The connection cannot be kept consistent: close it so the client resumes."""
        raise NotImplementedError

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        """Write consecutive events; formats whose bytes can be shared override this."""
        for event in batch.events:
            self.write_event(tail, event)

    def deliver_batch(self, batch: Batch) -> None:
        """The hot path: a batch that continues the tail exactly is one write."""
        tail = self.tails.get(batch.channel)
        if tail is None:
            return
        first = batch.events[0]
        if tail.backlog is None and first.epoch == tail.epoch and first.offset == tail.offset + 1:
            tail.offset = batch.events[-1].offset
            self.write_batch(tail, batch)
        else:
            for event in batch.events:
                self.deliver(event)

    def resync(self, channel: str) -> None:
        tail = self.tails.get(channel)
        if tail is not None and tail.backlog is None:
            self.catch_up(tail)

    def deliver(self, event: Event) -> None:
        tail = self.tails.get(event.channel)
        if tail is None:
            return
        if tail.backlog is not None:
            self._hold(tail, event)
        elif event.epoch == tail.epoch and event.offset == tail.offset + 1:
            tail.offset = event.offset
            self.write_event(tail, event)
        elif event.epoch != tail.epoch or event.offset > tail.offset:
            tail.backlog = [event]
            self.catch_up(tail)

    def _hold(self, tail: Tail, event: Event) -> None:
        backlog = tail.backlog
        assert backlog is not None
        if len(backlog) < MAX_BACKLOG:
            backlog.append(event)
        else:
            backlog.clear()  # history will have them: the catch-up reads another page

    def catch_up(self, tail: Tail, first: HistoryPage | None = None) -> None:
        """Write what history holds after the tail, then the backlog; sync when it can."""
        if tail.backlog is None:
            tail.backlog = []
        if not self.writable():
            return  # resumed when the transport drains
        page = first or self.hub.broker.history_nowait(tail.channel, tail.cursor, PAGE_SIZE)
        while page is not None:
            if not self._apply(tail, page):
                return
            if not page.events and page.reset is None:
                break  # the broker knows nothing beyond the tail locally: history in full
            page = self.hub.broker.history_nowait(tail.channel, tail.cursor, PAGE_SIZE)
        self.hub.spawn(self._catch_up_async(tail))

    async def _catch_up_async(self, tail: Tail) -> None:
        try:
            while True:
                page = await self.hub.reads.history(tail.channel, tail.cursor, PAGE_SIZE)
                if self.tails.get(tail.channel) is not tail or not self._apply(tail, page):
                    return
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            log.warning("catch-up of %s failed: %s", tail.channel, error)
            self.abandon("broker unavailable")

    def _apply(self, tail: Tail, page: HistoryPage) -> bool:
        """Write one page; return True while more history must be read."""
        if page.reset is not None:
            tail.move_to(page.reset.cursor)
            self.write_reset(tail, page.reset)
        for event in page.events:
            if not self.writable():
                return False
            if event.epoch == tail.epoch and event.offset == tail.offset + 1:
                tail.offset = event.offset
                self.write_event(tail, event)
        if page.more:
            return True
        return self.writable() and not self._drain_backlog(tail)

    def _drain_backlog(self, tail: Tail) -> bool:
        """Apply held live events; False when one leaves a gap that history must fill."""
        backlog = tail.backlog or []
        tail.backlog = None
        for index, event in enumerate(backlog):
            if event.epoch == tail.epoch and event.offset <= tail.offset:
                continue
            if not self.writable():
                tail.backlog = backlog[index:]
                return False
            if event.epoch == tail.epoch and event.offset == tail.offset + 1:
                tail.offset = event.offset
                self.write_event(tail, event)
                continue
            tail.backlog = backlog[index:]
            return False
        return True
