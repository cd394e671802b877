"""The node's fan-out: channel -> local subscribers, long-poll waiters, heartbeats.

``deliver`` is the broker's sink. It hands each event to every local subscriber of its
channel, which writes bytes encoded once for its wire format, and wakes the channel's long
polls together. No queue or task stands between the broker and a connection's transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from tidings.brokers.base import Broker
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.hub.presence import Presence
from tidings.hub.timers import TimerWheel
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event, batches

log = logging.getLogger("tidings.hub")

INTEREST_SWEEP_SECONDS = 30.0


class Subscriber(Protocol):
    """A local connection that follows channels (an SSE stream, a WebSocket)."""

    def deliver_batch(self, batch: Batch) -> None: ...

    def resync(self, channel: str) -> None:
        """Live delivery of ``channel`` may have missed events: check history."""


class Waiter(Protocol):
    """A long poll held until an event arrives on one of its channels."""

    def wake(self, batch: Batch) -> None: ...

    def recheck(self) -> None:
        """Live delivery may have missed events: look at history again."""


class Beating(Protocol):
    """A long-lived connection that needs a heartbeat (SSE comment, WebSocket ping)."""

    def heartbeat(self, now: float) -> None: ...


class Hub:
    def __init__(self, broker: Broker, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.settings = settings
        self.loop = loop
        self.timers = TimerWheel(loop)
        self.beating: set[Beating] = set()
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._waiters: dict[str, set[Waiter]] = {}
        self._interest: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._arrived: dict[str, list[Event]] = {}
        self.heads: dict[str, Cursor] = {}  # last cursor delivered here, per followed channel
        self.deliveries = 0
        self.presence = Presence(broker, settings, self.spawn)

    def start(self) -> None:
        self.broker.start(self.deliver, self.resync, self.presence.changed)
        self.timers.every(self.settings.server.heartbeat_seconds, self._heartbeat)
        self.timers.every(self.presence.interval, self.presence.tick)
        self.timers.every(INTEREST_SWEEP_SECONDS, self._sweep_interest)
        self.timers.start()

    async def close(self) -> None:
        self.timers.stop()
        await self.presence.close()
        for task in list(self._tasks):
            task.cancel()
        await self.broker.close()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run background work, keeping a reference and logging what it raises."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def deliver(self, event: Event) -> None:
        """The broker's sink: collect what arrives in this loop iteration, fan out once."""
        arrived = self._arrived.get(event.channel)
        if arrived is not None:
            arrived.append(event)
            return
        if not self._arrived:
            self.loop.call_soon(self._fan_out)
        self._arrived[event.channel] = [event]

    def _fan_out(self) -> None:
        arrived, self._arrived = self._arrived, {}
        for events in arrived.values():
            for batch in batches(events):
                self._deliver_batch(batch)

    def resync(self, channel: str) -> None:
        """After a fan-out outage: every follower of ``channel`` catches up from history."""
        for subscriber in tuple(self._subscribers.get(channel, ())):
            subscriber.resync(channel)
        for waiter in self._waiters.pop(channel, ()):
            waiter.recheck()

    def _deliver_batch(self, batch: Batch) -> None:
        self.heads[batch.channel] = batch.last.cursor
        subscribers = self._subscribers.get(batch.channel)
        if subscribers:
            for subscriber in tuple(subscribers):
                subscriber.deliver_batch(batch)
            self.deliveries += len(subscribers) * len(batch.events)
        waiters = self._waiters.pop(batch.channel, None)
        if waiters:
            for waiter in waiters:
                waiter.wake(batch)

    def attach(self, channel: str, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(channel, set()).add(subscriber)
        self._want(channel)

    def detach(self, channel: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[channel]

    def wait(self, channel: str, waiter: Waiter) -> None:
        self._waiters.setdefault(channel, set()).add(waiter)
        self._want(channel)

    def unwait(self, channel: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(channel)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    def _want(self, channel: str) -> None:
        if channel not in self._interest:
            self._interest.add(channel)
            self.spawn(self._follow_on_broker(channel))

    async def _follow_on_broker(self, channel: str) -> None:
        """Subscribe on the broker, then close the window before the link was live.

        A follower read history before the broker delivered the channel live: whatever was
        published in between is read again from history, so nothing falls between the two.
        """
        try:
            await self.broker.subscribe(channel)
        except BrokerUnavailable as error:
            # the broker keeps the interest and resyncs the channel once it is back
            log.warning("could not follow %s on the broker yet: %s", channel, error)
            return
        self.resync(channel)

    def _sweep_interest(self) -> None:
        """Tell the broker about channels nobody here follows any more, in one pass."""
        idle = [c for c in self._interest if c not in self._subscribers and c not in self._waiters]
        for channel in idle:
            self._interest.discard(channel)
            self.heads.pop(channel, None)
            self.spawn(self.broker.unsubscribe(channel))

    def _heartbeat(self) -> None:
        now = self.loop.time()
        for connection in tuple(self.beating):
            connection.heartbeat(now)
