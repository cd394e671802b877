"""One node's presence: its own clients' entries in the broker, and joins and leaves for its
WebSocket subscribers (docs/protocol.md section 6).

- A connection is present in a channel of a presence namespace from its confirmed
  subscription until it unsubscribes or closes. WebSocket and SSE connections count: both
  are long-lived, with an end the server sees. A poll does not: it is a request, not a
  connection, and there is no moment at which a polling client leaves.
- What waits for the broker is the state to reach, not the calls that led to it: at most one
  add or remove per entry and one sweep per channel. However long the broker stalls and
  however many clients come and go meanwhile, that stays bounded by the node's own clients.
- One worker task takes all of it in a round, one call per kind: adds, removes, sweeps. An
  entry's remove is sent only after the call that may have stored it, so a quick subscribe
  and unsubscribe never leaves a ghost; an entry that left before its add was sent costs the
  broker nothing. Nothing here runs on the delivery path; the hub's timer wheel drives the
  rest.
- Every ``REFRESH_PARTS`` of ``server.presence_ttl_seconds`` the node rewrites its entries,
  which live ``LIFETIME_PART`` of the TTL, and sweeps the channels it has clients in. A node
  that dies stops refreshing: its clients are out of every list within half the TTL, and
  the leave is announced by the next sweep of a node with a client there, within 3/4 of it.
- A broker that fails a call is logged, not retried: the next refresh adds what is missing,
  and what was not removed expires.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from tidings.brokers.base import Broker
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.protocol import ws
from tidings.protocol.channel import namespace_of
from tidings.protocol.cursor import new_epoch
from tidings.protocol.identity import Identity
from tidings.protocol.presence import PresenceChange, PresenceEntry

log = logging.getLogger("tidings.presence")

LIFETIME_PART = 0.5
REFRESH_PARTS = 4
CLOSE_SECONDS = 2.0


class Watcher(Protocol):
    """A connection told of joins and leaves (a WebSocket): gets their frames as they are."""

    def send(self, frame: bytes) -> None: ...


class Presence:
    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._spawn = spawn
        self._node = new_epoch()
        self._counter = itertools.count(1)
        ttl = settings.server.presence_ttl_seconds
        self.lifetime = ttl * LIFETIME_PART
        self.interval = ttl / REFRESH_PARTS
        self._entries: dict[str, dict[object, PresenceEntry]] = {}  # channel -> connection
        self._watchers: dict[str, dict[object, Watcher]] = {}
        # waiting for the broker, keyed by client id (adds, removes) or channel (sweeps)
        self._adds: dict[str, PresenceEntry] = {}
        self._removes: dict[str, PresenceEntry] = {}
        self._sweeps: dict[str, None] = {}
        self._sent: set[str] = set()  # client ids the broker may hold: a leave must reach it
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Entries and channels waiting for the broker (bounded by this node's clients)."""
        return len(self._adds) + len(self._removes) + len(self._sweeps)

    def enabled(self, channel: str) -> bool:
        return self._settings.namespace(namespace_of(channel)).presence

    def join(
        self, channel: str, connection: object, identity: Identity, watcher: Watcher | None
    ) -> None:
        """``connection`` is now subscribed to ``channel``; a ``watcher`` hears changes."""
        if not self.enabled(channel):
            return
        present = self._entries.setdefault(channel, {})
        if connection in present:
            return
        entry = PresenceEntry(
            channel, f"{self._node}-{next(self._counter)}", identity.sub, identity.info
        )
        present[connection] = entry
        if watcher is not None:
            self._watchers.setdefault(channel, {})[connection] = watcher
        self._adds[entry.client] = entry
        self._wake()

    def leave(self, channel: str, connection: object) -> None:
        present = self._entries.get(channel)
        if present is None or connection not in present:
            return
        entry = present.pop(connection)
        if not present:
            del self._entries[channel]
        watchers = self._watchers.get(channel)
        if watchers is not None:
            watchers.pop(connection, None)
            if not watchers:
                del self._watchers[channel]
        self._out(entry)
        self._wake()

    def changed(self, change: PresenceChange) -> None:
        """The broker's presence sink: tell this node's watchers of the channel, one frame."""
        watchers = self._watchers.get(change.entry.channel)
        if watchers:
            frame = ws.presence_change_frame(change)
            for watcher in tuple(watchers.values()):
                watcher.send(frame)

    async def clients(self, channel: str) -> list[PresenceEntry]:
        return await self._broker.presence_list(channel)

    def tick(self) -> None:
        """The timer wheel's job: refresh this node's entries, sweep where it has clients."""
        if self._entries:
            for present in self._entries.values():
                for entry in present.values():
                    self._adds[entry.client] = entry
            self._sweeps.update(dict.fromkeys(self._entries))
            self._wake()

    async def close(self) -> None:
        """Take every local client out at once (a drain), waiting a bounded time for it."""
        for present in self._entries.values():
            for entry in present.values():
                self._out(entry)
        self._entries.clear()
        self._watchers.clear()
        self._sweeps.clear()
        self._wake()
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_SECONDS)
        except TimeoutError:
            log.warning("presence entries were not all removed on close: they will expire")

    # The worker: one broker call at a time, in order.

    def _out(self, entry: PresenceEntry) -> None:
        """``entry`` left: unsent, it is forgotten; sent, it must be removed."""
        self._adds.pop(entry.client, None)
        if entry.client in self._sent:
            self._removes[entry.client] = entry

    def _wake(self) -> None:
        if self._idle.is_set() and self.pending:
            self._idle.clear()
            self._spawn(self._work())

    async def _work(self) -> None:
        try:
            while self.pending:
                adds, self._adds = list(self._adds.values()), {}
                self._sent.update(entry.client for entry in adds)
                await self._call("add", adds)
                removes, self._removes = list(self._removes.values()), {}
                self._sent.difference_update(entry.client for entry in removes)
                await self._call("remove", removes)
                sweeps, self._sweeps = list(self._sweeps), {}
                await self._call("sweep", sweeps)
        finally:
            self._idle.set()

    async def _call(self, kind: str, items: Sequence[Any]) -> None:
        if not items:
            return
        try:
            if kind == "add":
                await self._broker.presence_add(items, self.lifetime)
            elif kind == "remove":
                await self._broker.presence_remove(items)
            else:
                await self._broker.presence_sweep(items)
        except BrokerUnavailable as error:
            log.warning("presence %s of %d failed: %s", kind, len(items), error)
