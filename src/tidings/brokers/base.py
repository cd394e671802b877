"""The broker seam: what every broker promises the hub.

Guarantees every implementation keeps, checked by one conformance suite:

- ``publish`` stores the event in the channel's history and gives it the next offset of the
  channel's current epoch *atomically*: offsets are consecutive, never reused within an epoch,
  and an event is acknowledged only once stored. Then it is fanned out to every node that
  subscribed to the channel, each node receiving a channel's events in offset order.
- ``history`` returns the events after a cursor, in order, or a Reset when they are not all
  still held (reason ``gap``) or the cursor belongs to another epoch or lies beyond the last
  event (reason ``epoch``). It never skips silently. A page holds at most ``limit`` events
  and, from a broker that reads history over the network, stops before its events' data
  would pass ``PAGE_BYTES`` (one event at least): a catch-up of large events then holds a bounded
  amount of memory at a time. ``more`` says that history holds events after the page.
- An idempotency key repeated on the same channel while its first event is still in history
  returns that first event and stores nothing.
- ``publish_nowait`` is ``publish`` without an await, from a broker that stores in this
  process: it does exactly what ``publish`` does and returns the event, or returns None and
  does nothing (a broker that stores over the network), for the caller to ``publish``.
- ``check`` makes a real round trip, so a dead link is reported, not guessed.

Presence (namespaces with ``presence = true``) is who is subscribed right now, per channel:

- Entries are keyed by ``(channel, client)``; a client id is unique across nodes and only
  its own node adds, refreshes or removes it. Each entry lives ``lifetime`` seconds from its
  last ``presence_add``, so a node that dies takes its entries with it: its clients leave
  once their lifetime is over and someone sweeps the channel.
- Every change is announced once to the presence sink of every started node, including the
  node that made it: ``join`` when an entry that was absent (never added, removed or swept)
  is added, ``leave`` when a present entry is removed or swept. Announcements are at most
  once (a node whose link is down, or not up yet after ``start``, misses them: once
  ``check`` has passed it hears what is changed after) and unordered across channels; the
  list stays the truth.
- Presence never touches the event path: its storage and fan-out are apart from history.

Control (``POST /api/disconnect`` and ``/api/unsubscribe``, protocol/control.py):

- ``broadcast_control`` hands one message to the control sink of every started node, the
  sender included, at most once (a node whose link is down misses it; the sender learns
  nothing of who received it). Raise BrokerUnavailable when it could not be sent.
- ``revoke`` stores a revocation until its ``until``, where every node, a node started
  later included, reads it with ``revocations``: a revocation outlives any node. A later
  revocation of the same ``sub`` replaces the earlier one. Control never touches the event
  path or presence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from tidings.config import Settings
from tidings.protocol.control import Control, Revocation
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset
from tidings.protocol.presence import PresenceChange, PresenceEntry
from tidings.supervisor import Supervisor

EventSink = Callable[[Event], None]
GapSink = Callable[[str], None]
PresenceSink = Callable[[PresenceChange], None]
ControlSink = Callable[[Control], None]

# The data one history page read over the network carries at most (one event may pass it).
PAGE_BYTES = 256 * 1024


class HistoryPage:
    """Events after a cursor (at most ``limit``), and the cursor after the last one returned.

    ``reset`` is set when history could not cover the request; ``events`` then start from the
    reset's cursor. ``more`` is True when history holds events after the last one returned
    that the page left out (its ``limit`` or ``PAGE_BYTES``): read on from ``cursor``.

    A plain class, not a dataclass: compiled (setup.py), a dataclass is built by the
    ``__init__`` that ``dataclasses`` writes at import, which runs interpreted (about 1,800
    instructions a page, where every poll reads one). Nothing changes a page once made.
    """

    __slots__ = ("cursor", "events", "more", "reset")

    def __init__(
        self,
        events: Sequence[Event],
        cursor: Cursor,
        reset: Reset | None = None,
        more: bool = False,
    ) -> None:
        self.events = events
        self.cursor = cursor
        self.reset = reset
        self.more = more

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HistoryPage):
            return NotImplemented
        return (
            self.events == other.events
            and self.cursor == other.cursor
            and self.reset == other.reset
            and self.more == other.more
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and not immutable

    def __repr__(self) -> str:
        return (
            f"HistoryPage(events={self.events!r}, cursor={self.cursor!r}, "
            f"reset={self.reset!r}, more={self.more!r})"
        )

    def before(self) -> Cursor:
        """Of a ``recent`` page: the cursor just before its first event, where a rewound
        subscription starts (the head itself when the page holds no event)."""
        return Cursor(self.cursor.epoch, self.cursor.offset - len(self.events))


def page_after(since: Cursor, events: Sequence[Event], last_offset: int) -> HistoryPage:
    """The page of ``events`` read after ``since`` from a history whose newest event has
    ``last_offset``: ``more`` when the page stopped short of it."""
    if not events:
        return HistoryPage(events, since)
    return HistoryPage(events, events[-1].cursor, more=events[-1].offset < last_offset)


class Broker(Protocol):
    """Owns order, cursors and history; fans stored events out to the nodes."""

    def start(
        self,
        sink: EventSink,
        resync: GapSink,
        presence: PresenceSink | None = None,
        *,
        supervisor: Supervisor | None = None,
        control: ControlSink | None = None,
    ) -> None:
        """Begin delivering this node's subscribed channels' events to ``sink``.

        ``resync(channel)`` tells the node that live delivery of ``channel`` may have missed
        events (the fan-out link was down and is back): every local follower then reads
        history from its own cursor, so nothing acknowledged is lost. ``presence`` receives
        every node's joins and leaves, of every channel. ``supervisor`` (the node's) logs and
        counts what the broker's own background work did not expect; that work goes on.
        ``control`` receives every node's control messages (``broadcast_control``).
        """

    async def close(self) -> None: ...

    async def publish(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event:
        """Store and fan out one event; raise BrokerUnavailable if it was not stored."""
        ...

    def publish_nowait(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event | None:
        """``publish`` done at once when the broker stores in this process, else ``None``
        (nothing stored): the HTTP publish then costs no task and no await."""
        ...

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        """Events after ``since`` (``None``: none, the page holds the current cursor)."""
        ...

    def history_nowait(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage | None:
        """The same answer without I/O when the broker holds it locally, else ``None``.

        The hot paths (long-poll re-polls, subscribes) try this first so that a memory broker
        costs no task and no await.
        """
        ...

    async def recent(self, channel: str, count: int) -> HistoryPage:
        """The last ``count`` events history holds (all it holds, if fewer), in order, and
        the channel's current cursor; never a reset. They are consecutive and end at that
        cursor, so the subscription that starts before them is at ``cursor - len(events)``.
        """
        ...

    def recent_nowait(self, channel: str, count: int) -> HistoryPage | None:
        """``recent`` without I/O when the broker holds history locally, else ``None``."""
        ...

    async def subscribe(self, channel: str) -> None:
        """This node has subscribers for ``channel``: deliver its events to the sink."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def check(self) -> None:
        """A round trip through the broker; raise BrokerUnavailable if it fails."""

    async def presence_add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        """Add or refresh entries, each to live ``lifetime`` seconds from now; announce a
        ``join`` for each that was absent. Raise BrokerUnavailable if it failed (some may
        have been stored: adding again is safe)."""

    async def presence_remove(self, entries: Sequence[PresenceEntry]) -> None:
        """Remove entries; announce a ``leave`` for each that was present."""

    async def presence_list(self, channel: str) -> list[PresenceEntry]:
        """The channel's entries whose lifetime is not over, in no particular order."""
        ...

    async def presence_sweep(self, channels: Sequence[str]) -> None:
        """Remove the entries of ``channels`` whose lifetime is over, announcing a ``leave``
        for each. Nodes sweep concurrently: each entry is announced by one of them."""

    async def broadcast_control(self, message: Control) -> None:
        """Send ``message`` to every started node's control sink, this one's included."""

    async def revoke(self, revocation: Revocation) -> None:
        """Store ``revocation`` until its ``until``, replacing any earlier one of its sub;
        raise BrokerUnavailable if it was not stored."""

    async def revocations(self) -> list[Revocation]:
        """Every stored revocation whose ``until`` is not past, in no particular order."""
        ...


BrokerFactory = Callable[[str, Settings], Broker]


def broker_for(url: str, settings: Settings) -> Broker:
    """The broker named by ``url``'s scheme, imported lazily (optional extras)."""
    from tidings.brokers import REGISTRY
    from tidings.exceptions import ConfigError

    scheme = url.partition("://")[0]
    loader = REGISTRY.get(scheme)
    if loader is None:
        raise ConfigError("server.broker", f"unknown scheme {scheme!r}: use {', '.join(REGISTRY)}")
    factory: BrokerFactory = loader()
    return factory(url, settings)
