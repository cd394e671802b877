"""What the hub's unit tests drive: a real Hub on a real memory broker, and plain Python
objects in the places where the server puts connections. No sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tidings.brokers.base import HistoryPage
from tidings.brokers.memory import MemoryBroker
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.hub.follow import Follower
from tidings.hub.hub import Hub
from tidings.hub.tail import Tail
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event, Reset
from tidings.protocol.presence import PresenceEntry

DEADLINE = 5.0


class Changes:
    """An event set on every change, and a wait with a deadline for a condition to hold."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}") from None


class Seen(Changes):
    """A subscriber that keeps every batch the hub hands it, and every resync."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Batch] = []
        self.resyncs: list[str] = []

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch.events]

    def deliver_batch(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.changed()

    def resync(self, channel: str) -> None:
        self.resyncs.append(channel)
        self.changed()


class Broken:
    """A subscriber (or a waiter, or a beating connection) with a bug in every method."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        raise RuntimeError("a broken connection")

    def deliver_batch(self, batch: Batch) -> None:
        self._fail()

    def resync(self, channel: str) -> None:
        self._fail()

    def wake(self, batch: Batch) -> None:
        self._fail()

    def recheck(self) -> None:
        self._fail()

    def heartbeat(self, now: float) -> None:
        self._fail()


class Woken(Changes):
    """A long-poll waiter: records the batch that woke it. Told to recheck, it waits again,
    as a held poll that found nothing new in history does."""

    def __init__(self, hub: Hub, channel: str) -> None:
        super().__init__()
        self.hub = hub
        self.channel = channel
        self.woken: list[Batch] = []
        self.rechecks = 0
        hub.wait(channel, self)

    def wake(self, batch: Batch) -> None:
        self.woken.append(batch)
        self.changed()

    def recheck(self) -> None:
        self.rechecks += 1
        self.hub.wait(self.channel, self)
        self.changed()


class Reader(Follower, Changes):
    """A follower as an SSE stream or a WebSocket is one, writing into lists instead of bytes.

    ``room`` is how many more events its transport accepts before it stops being writable
    (``None``: no limit), as a transport whose buffer fills up.
    """

    def __init__(self, hub: Hub, *tails: tuple[str, Cursor]) -> None:
        Changes.__init__(self)
        self.hub = hub
        self.tails = {channel: Tail(channel, cursor) for channel, cursor in tails}
        self.written: list[Event | Reset] = []
        self.batches = 0
        self.abandoned: list[str] = []
        self.resyncs = 0
        self.room: int | None = None

    @property
    def events(self) -> list[Event]:
        return [item for item in self.written if isinstance(item, Event)]

    @property
    def resets(self) -> list[Reset]:
        return [item for item in self.written if isinstance(item, Reset)]

    def offsets(self, channel: str) -> list[int]:
        return [event.offset for event in self.events if event.channel == channel]

    def write_event(self, tail: Tail, event: Event) -> None:
        assert self.writable(), "written while the transport was full"
        self.written.append(event)
        if self.room is not None:
            self.room -= 1
        self.changed()

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        self.batches += 1
        super().write_batch(tail, batch)

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        self.written.append(reset)
        self.changed()

    def writable(self) -> bool:
        return self.room is None or self.room > 0

    def abandon(self, reason: str) -> None:
        self.abandoned.append(reason)
        self.changed()

    def resync(self, channel: str) -> None:
        self.resyncs += 1
        super().resync(channel)
        self.changed()

    def drained(self) -> None:
        """The transport's buffer emptied: resume every catch-up that stopped, as the
        server's streams do when writing resumes."""
        self.room = None
        for tail in self.tails.values():
            if tail.backlog is not None:
                self.catch_up(tail)


class StallingBroker(MemoryBroker):
    """A memory broker whose presence calls can be held, as a broker that stalls holds them,
    and are counted by kind once they ran."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("memory://", settings)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.calls: dict[str, int] = {"add": 0, "remove": 0, "sweep": 0}
        self.held = Changes()
        self.waiting = 0  # calls held now
        self._sweeping = False

    def stall(self) -> None:
        self.flowing.clear()

    def flow(self) -> None:
        self.flowing.set()

    async def _gate(self, kind: str) -> None:
        self.waiting += 1
        self.held.changed()
        try:
            await self.flowing.wait()
        finally:
            self.waiting -= 1
        self.calls[kind] += 1

    async def presence_add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        await self._gate("add")
        await super().presence_add(entries, lifetime)

    async def presence_remove(self, entries: Sequence[PresenceEntry]) -> None:
        if not self._sweeping:  # the memory broker's sweep removes through this method
            await self._gate("remove")
        await super().presence_remove(entries)

    async def presence_sweep(self, channels: Sequence[str]) -> None:
        await self._gate("sweep")
        self._sweeping = True
        try:
            await super().presence_sweep(channels)
        finally:
            self._sweeping = False


class RemoteHistory(MemoryBroker):
    """A memory broker that answers history only with an await, as Redis and NATS do, so
    that catch-ups take the asynchronous path; ``failing`` makes those reads fail."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("memory://", settings)
        self.failing = False

    def history_nowait(self, channel: str, since: Cursor | None, limit: int) -> None:
        return None

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        if self.failing:
            raise BrokerUnavailable("history is out of reach")
        return await super().history(channel, since, limit)


def encode_offset(event: Event) -> bytes:
    """A wire format for the tests: an event's offset and a separator."""
    return b"%d;" % event.offset


class Sharer(Reader):
    """A reader that writes shared bytes as the server's streams do: in step, it joins the
    channel's cohort and is then written by the hub (``write_shared``) into ``shared``."""

    def __init__(self, hub: Hub, *tails: tuple[str, Cursor]) -> None:
        super().__init__(hub, *tails)
        self.shared: list[bytes] = []
        self.open = True  # False: the connection takes no more writes, as a closing one

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        self.batches += 1
        if self.open:
            self.shared.append(batch.joined("ws", encode_offset))
            self.hub.tally.ws += 1
            self.hub.join_cohort(batch, "ws", encode_offset, self, tail)
        self.changed()

    def write_shared(self, data: bytes) -> bool:
        if not self.open:
            return False
        self.shared.append(data)
        self.changed()
        return True

    def offsets_written(self) -> list[int]:
        """Offsets in what was written, shared bytes and single events alike, in order."""
        return [int(part) for part in b"".join(self.shared).split(b";") if part]

    def write_event(self, tail: Tail, event: Event) -> None:
        super().write_event(tail, event)
        self.shared.append(encode_offset(event))
