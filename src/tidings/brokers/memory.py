"""``memory://``: one process, per-channel ring buffers, a random epoch per channel per start.

Everything happens on the event loop thread, so a publish appends and fans out in one step:
nothing can come between storing an event and delivering it, and no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mypy_extensions import mypyc_attr

from tidings.brokers.base import (
    ControlSink,
    EventSink,
    GapSink,
    HistoryPage,
    PresenceSink,
)
from tidings.brokers.memory_log import ChannelLog
from tidings.config import Settings
from tidings.protocol.channel import namespace_of
from tidings.protocol.control import Control, Revocation
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event
from tidings.protocol.presence import ChangeOp, PresenceChange, PresenceEntry
from tidings.supervisor import Supervisor

SWEEP_AT_LEAST = 10_000


# compiled (setup.py), yet open to interpreted subclasses:
# the hub's tests stand in for a broker that stalls or reads history remotely with them
@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryBroker:
    """The default broker: no service needed, history lives as long as the process.

    Channels whose history is empty are forgotten when the number of channels doubles, so
    that reading arbitrary channel names cannot grow memory without bound; such a channel
    starts a new epoch when used again, which resuming clients see as a reset.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self._settings = settings
        self._logs: dict[str, ChannelLog] = {}
        self._sink: EventSink | None = None
        self._sweep_at = SWEEP_AT_LEAST
        # channel -> client -> (entry, expiry in ms on the wall clock)
        self._presence: dict[str, dict[str, tuple[PresenceEntry, int]]] = {}
        self._presence_sink: PresenceSink | None = None
        self._control_sink: ControlSink | None = None
        self._revoked: dict[str, Revocation] = {}

    def start(
        self,
        sink: EventSink,
        resync: GapSink,
        presence: PresenceSink | None = None,
        *,
        supervisor: Supervisor | None = None,
        control: ControlSink | None = None,
    ) -> None:
        """``resync`` is never needed: fan-out happens in the publishing call itself, and
        nothing runs in the background for a supervisor to watch."""
        self._sink = sink
        self._presence_sink = presence
        self._control_sink = control

    async def close(self) -> None:
        self._sink = None
        self._presence_sink = None
        self._control_sink = None

    def _log(self, channel: str) -> ChannelLog:
        log = self._logs.get(channel)
        if log is None:
            if len(self._logs) >= self._sweep_at:
                self._forget_empty()
            namespace = self._settings.namespace(namespace_of(channel))
            log = ChannelLog(channel, namespace.history_size, namespace.history_ttl_seconds)
            self._logs[channel] = log
        return log

    def _forget_empty(self) -> None:
        now = time.time_ns() // 1_000_000
        for name, log in list(self._logs.items()):
            log.expire(now)
            if not log.events:
                del self._logs[name]
        self._sweep_at = max(SWEEP_AT_LEAST, 2 * len(self._logs))

    async def publish(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event:
        return self.publish_nowait(channel, event, data, idempotency_key)

    def publish_nowait(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event:
        """Stored at once, in this process: never None."""
        log = self._log(channel)
        if idempotency_key is not None:
            first = log.find_key(idempotency_key)
            if first is not None:
                return first
        stored = log.append(event, data, idempotency_key)
        if self._sink is not None:
            self._sink(stored)
        return stored

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        return self._log(channel).page(since, limit)

    def history_nowait(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage | None:
        return self._log(channel).page(since, limit)

    async def recent(self, channel: str, count: int) -> HistoryPage:
        return self._log(channel).recent(count)

    def recent_nowait(self, channel: str, count: int) -> HistoryPage | None:
        return self._log(channel).recent(count)

    async def subscribe(self, channel: str) -> None:
        """Every event already reaches the sink: there is one node."""

    async def unsubscribe(self, channel: str) -> None:
        """Nothing to undo: see subscribe."""

    async def check(self) -> None:
        """Always reachable: it lives in this process."""

    # Control: one node, so a message reaches only its own sink, and revocations live here.

    async def broadcast_control(self, message: Control) -> None:
        if self._control_sink is not None:
            self._control_sink(message)

    async def revoke(self, revocation: Revocation) -> None:
        self._forget_revocations()
        self._revoked[revocation.sub] = revocation

    async def revocations(self) -> list[Revocation]:
        self._forget_revocations()
        return list(self._revoked.values())

    def _forget_revocations(self) -> None:
        now = time.time()
        for sub, revocation in list(self._revoked.items()):
            if revocation.until <= now:
                del self._revoked[sub]

    # Presence: one process, so entries live in a dict and changes are announced in the call.

    async def presence_add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        expires = time.time_ns() // 1_000_000 + int(lifetime * 1000)
        for entry in entries:
            held = self._presence.setdefault(entry.channel, {})
            absent = entry.client not in held
            held[entry.client] = (entry, expires)
            if absent:
                self._announce("join", entry)

    async def presence_remove(self, entries: Sequence[PresenceEntry]) -> None:
        for entry in entries:
            held = self._presence.get(entry.channel)
            if held is not None and held.pop(entry.client, None) is not None:
                if not held:
                    del self._presence[entry.channel]
                self._announce("leave", entry)

    async def presence_list(self, channel: str) -> list[PresenceEntry]:
        now = time.time_ns() // 1_000_000
        held = self._presence.get(channel, {})
        return [entry for entry, expires in held.values() if expires > now]

    async def presence_sweep(self, channels: Sequence[str]) -> None:
        now = time.time_ns() // 1_000_000
        for channel in channels:
            held = self._presence.get(channel, {})
            over = [entry for entry, expires in held.values() if expires <= now]
            await self.presence_remove(over)

    def _announce(self, op: ChangeOp, entry: PresenceEntry) -> None:
        if self._presence_sink is not None:
            self._presence_sink(PresenceChange(op, entry))
