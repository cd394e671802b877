"""The node's fan-out: channel -> local subscribers, long-poll waiters, heartbeats.

``deliver`` is the broker's sink. It hands each event to every local subscriber of its
channel, which writes bytes encoded once for its wire format, and wakes the channel's long
polls together. No queue or task stands between the broker and a connection's transport.

Streams that are in step on a channel form its :class:`Cohort`: a batch that continues the
cohort's cursor is written to each of them by the hub with one call (its tail moves, the
shared bytes go out), without the per-subscriber checks of the general path. A member whose
tail moved on its own (a catch-up, a backlog while it lags) leaves the cohort and gets the
batch the general way; a batch that does not continue the cursor dissolves the cohort.

A fan-out to tens of thousands of streams (or long polls) holds the loop while it writes;
between slices of ``FAN_OUT_SLICE`` it writes the heartbeats whose turn came meanwhile (and nothing
else: deadlines and jobs wait for the timer's tick), so a broadcast does not make every
heartbeat due during it late, however long a starved process takes to write it.

A connection that raises is the node's bug, and it stays that connection's: the hub's
supervisor logs and counts it, and the fan-out, the resync or the heartbeat goes on with the
next connection. The timer wheel and the background tasks report to the same supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol, TypeVar, cast

from tidings.brokers.base import Broker, ControlSink
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.hub.presence import Presence
from tidings.hub.reads import SharedReads
from tidings.hub.tail import Tail
from tidings.hub.tally import Tally
from tidings.hub.timers import Rounds, TimerWheel
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch, Event, batches
from tidings.supervisor import Supervisor, name_of

log = logging.getLogger("tidings.hub")

INTEREST_SWEEP_SECONDS = 30.0
# Node-local channels (the admin feed) start with "$", which no channel name may contain.
LOCAL_PREFIX = "$"
BROKER_CHECK_SECONDS = 10.0
# Resyncs run this many followers at once, a slice every RESYNC_STEP seconds: after a broker
# outage every follower of every channel reads history, and all at once would swamp the loop
# (its own link pings included) and the broker's connections.
RESYNC_SLICE = 100
RESYNC_STEP = 0.05
FAN_OUT_SLICE = 512

Item = TypeVar("Item")


class Subscriber(Protocol):
    """A local connection that follows channels (an SSE stream, a WebSocket)."""

    def deliver_batch(self, batch: Batch) -> None: ...

    def resync(self, channel: str) -> None:
        """Live delivery of ``channel`` may have missed events: check history."""


class Sharing(Subscriber, Protocol):
    """A subscriber that can be a cohort member: it takes a batch's shared bytes as they are."""

    def write_shared(self, data: bytes) -> bool:
        """Write a batch's shared bytes; False if the connection takes no more writes."""


Encode = Callable[[Event], bytes]


class Cohort:
    """The subscribers of one channel written up to ``(epoch, offset)`` with shared bytes.

    ``groups`` maps a wire format (``Batch.wire`` key) to its encoder and its members, each
    with its tail on the channel; ``members`` holds every member once.
    """

    __slots__ = ("epoch", "groups", "members", "offset")

    def __init__(self, epoch: str, offset: int) -> None:
        self.epoch = epoch
        self.offset = offset
        self.groups: dict[str, tuple[Encode, dict[Sharing, Tail]]] = {}
        self.members: set[Subscriber] = set()

    def leave(self, subscriber: Subscriber) -> None:
        self.members.discard(subscriber)
        member = cast("Sharing", subscriber)  # only a Sharing one was ever kept
        for _, members in self.groups.values():
            members.pop(member, None)


class Waiter(Protocol):
    """A long poll held until an event arrives on one of its channels."""

    def wake(self, batch: Batch) -> None: ...

    def recheck(self) -> None:
        """Live delivery may have missed events: look at history again."""


class Beating(Protocol):
    """A long-lived connection that needs a heartbeat (SSE comment, WebSocket ping)."""

    def heartbeat(self, now: float) -> None: ...


def _heartbeat_of(connection: Beating) -> Callable[[float], None]:
    return connection.heartbeat


class Hub:
    def __init__(self, broker: Broker, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.settings = settings
        self.loop = loop
        self.supervisor = Supervisor()
        self.timers = TimerWheel(loop, supervisor=self.supervisor)
        self.tally = Tally()
        # every stream's heartbeat, spread over the interval a slice per tick
        self.beating: Rounds[Beating] = self.timers.rounds(
            settings.server.heartbeat_seconds, _heartbeat_of, self.tally.heartbeat_delay
        )
        # followers per channel in the order they came, as dicts' keys: a fan-out visits
        # their connections in that order, which their memory mostly follows; a set's order
        # (by address hash) made a fan-out to 10,000 long polls 1.2x as costly
        self._subscribers: dict[str, dict[Subscriber, None]] = {}
        self._cohorts: dict[str, Cohort] = {}
        self._waiters: dict[str, dict[Waiter, None]] = {}  # held long polls, the same way
        self._interest: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._arrived: dict[str, list[Event]] = {}
        self.heads: dict[str, Cursor] = {}  # last cursor delivered here, per followed channel
        # (channel, subscriber or long poll) waiting for their resync, in order; each once
        self._resyncs: deque[tuple[str, Subscriber | None, Waiter | None]] = deque()
        self._resyncing: set[tuple[str, Subscriber | Waiter]] = set()
        self._resync_timer: asyncio.TimerHandle | None = None
        # events that reached the node per channel, counted only while the admin page watches
        self.arrivals: dict[str, int] | None = None
        self.presence = Presence(broker, settings, self.spawn)
        self.reads = SharedReads(broker, loop, self.spawn)  # history reads, shared in a storm

    def start(self, control: ControlSink | None = None) -> None:
        """Start the broker's fan-out; ``control`` receives every node's control messages."""
        self.broker.start(
            self.deliver,
            self.resync,
            self.presence.changed,
            supervisor=self.supervisor,
            control=control,
        )
        self.timers.every(self.presence.interval, self.presence.tick)
        self.timers.every(INTEREST_SWEEP_SECONDS, self._sweep_interest)
        self.timers.every(BROKER_CHECK_SECONDS, self._check_broker_soon)
        self.timers.start()

    async def close(self) -> None:
        self.timers.stop()
        if self._resync_timer is not None:
            self._resync_timer.cancel()
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
        if not task.cancelled() and (error := task.exception()) is not None:
            self.supervisor.record(name_of(task.get_coro()), error)

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
        counting = self.arrivals
        if counting is not None:
            for channel, events in arrived.items():
                counting[channel] = counting.get(channel, 0) + len(events)
        for events in arrived.values():
            for batch in batches(events):
                self._deliver_batch(batch)

    def _write_cohort(self, cohort: Cohort, batch: Batch) -> None:
        """Write ``batch`` to every member still in step; the others leave the cohort (and
        get the batch the general way)."""
        epoch, before = cohort.epoch, cohort.offset
        last = batch.events[-1].offset
        cohort.offset = last
        tally = self.tally
        for key, (encode, members) in tuple(cohort.groups.items()):
            data = batch.joined(key, encode)
            written = 0
            for members_slice in self._in_slices(tuple(members.items())):
                for member, tail in members_slice:
                    if tail.offset == before and tail.backlog is None and tail.epoch == epoch:
                        tail.offset = last
                        try:
                            if member.write_shared(data):
                                written += 1
                        except Exception as error:
                            where = f"{type(member).__qualname__}.write_shared"
                            self.supervisor.record(where, error)
                    else:
                        cohort.leave(member)
            if written:
                tally.shared(key, written)

    def _in_slices(self, items: tuple[Item, ...]) -> Iterator[tuple[Item, ...]]:
        """``items`` a slice at a time; between two slices, the heartbeats whose turn came."""
        if len(items) <= FAN_OUT_SLICE:
            yield items
            return
        for start in range(0, len(items), FAN_OUT_SLICE):
            if start:
                self.timers.beat()
            yield items[start : start + FAN_OUT_SLICE]

    def join_cohort(
        self, batch: Batch, key: str, encode: Encode, subscriber: Sharing, tail: Tail
    ) -> None:
        """``subscriber`` was just written ``batch`` (its tail now at the batch's last event)
        with the shared bytes of ``key``: from the next batch on, the hub writes it directly
        while it stays in step."""
        last = batch.events[-1]
        if tail.offset != last.offset or tail.epoch != last.epoch or tail.backlog is not None:
            return
        channel = batch.channel
        if subscriber not in self._subscribers.get(channel, ()):
            return
        cohort = self._cohorts.get(channel)
        if cohort is None or cohort.offset != last.offset or cohort.epoch != last.epoch:
            cohort = self._cohorts[channel] = Cohort(last.epoch, last.offset)
        group = cohort.groups.get(key)
        if group is None:
            group = cohort.groups[key] = (encode, {})
        group[1][subscriber] = tail
        cohort.members.add(subscriber)

    def resync(self, channel: str) -> None:
        """After a fan-out outage: every follower of ``channel`` catches up from history.

        Paced: ``RESYNC_SLICE`` followers now, as many every ``RESYNC_STEP`` seconds after,
        over every channel resynced meanwhile. A follower that left (or a long poll answered)
        before its turn is skipped; one that is still queued is not queued twice.
        """
        for subscriber in self._subscribers.get(channel, ()):
            if (channel, subscriber) not in self._resyncing:
                self._resyncing.add((channel, subscriber))
                self._resyncs.append((channel, subscriber, None))
        for waiter in self._waiters.get(channel, ()):
            if (channel, waiter) not in self._resyncing:
                self._resyncing.add((channel, waiter))
                self._resyncs.append((channel, None, waiter))
        if self._resync_timer is None:
            self._resync_slice()

    def _resync_slice(self) -> None:
        self._resync_timer = None
        run = self.supervisor.run
        for _ in range(min(RESYNC_SLICE, len(self._resyncs))):
            channel, subscriber, waiter = self._resyncs.popleft()
            if subscriber is not None:
                self._resyncing.discard((channel, subscriber))
                if subscriber in self._subscribers.get(channel, ()):
                    run(subscriber.resync, channel)
            elif waiter is not None:
                self._resyncing.discard((channel, waiter))
                if waiter in self._waiters.get(channel, ()):
                    self.unwait(channel, waiter)
                    run(waiter.recheck)
        if self._resyncs:
            self._resync_timer = self.loop.call_later(RESYNC_STEP, self._resync_slice)

    def _deliver_batch(self, batch: Batch) -> None:
        channel = batch.channel
        self.heads[channel] = batch.last.cursor
        subscribers = self._subscribers.get(channel)
        if subscribers:
            cohort = self._cohorts.get(channel)
            if cohort is not None:
                first = batch.events[0]
                if first.offset == cohort.offset + 1 and first.epoch == cohort.epoch:
                    self._write_cohort(cohort, batch)
                else:
                    del self._cohorts[channel]
                    cohort = None
            if cohort is None:
                others: Iterable[Subscriber] = subscribers
            elif len(cohort.members) < len(subscribers):
                members = cohort.members
                others = [subscriber for subscriber in subscribers if subscriber not in members]
            else:
                others = ()
            # The supervisor's try inline: a call per delivery would cost the hot path, and a
            # try that raises nothing costs nothing.
            for others_slice in self._in_slices(tuple(others)):
                for subscriber in others_slice:
                    try:
                        subscriber.deliver_batch(batch)
                    except Exception as error:
                        where = f"{type(subscriber).__qualname__}.deliver_batch"
                        self.supervisor.record(where, error)
        waiters = self._waiters.pop(batch.channel, None)
        if waiters:
            for waiters_slice in self._in_slices(tuple(waiters)):
                for waiter in waiters_slice:
                    try:
                        waiter.wake(batch)
                    except Exception as error:
                        self.supervisor.record(f"{type(waiter).__qualname__}.wake", error)
        self.tally.fold(batch)

    def attach(self, channel: str, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(channel, {})[subscriber] = None
        self._want(channel)

    def attach_local(self, channel: str, subscriber: Subscriber) -> None:
        """Follow a node-local channel (the admin feed): the broker never hears of it."""
        assert channel.startswith(LOCAL_PREFIX)
        self._subscribers.setdefault(channel, {})[subscriber] = None

    def detach(self, channel: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(subscriber, None)
            if not subscribers:
                del self._subscribers[channel]
                self._cohorts.pop(channel, None)
                return
        cohort = self._cohorts.get(channel)
        if cohort is not None and subscriber in cohort.members:
            cohort.leave(subscriber)

    def wait(self, channel: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(channel)
        if waiters is None:
            self._waiters[channel] = {waiter: None}
            self._want(channel)
        else:
            waiters[waiter] = None  # a channel with waiters is wanted already

    def unwait(self, channel: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(channel)
        if waiters is not None:
            waiters.pop(waiter, None)
            if not waiters:
                del self._waiters[channel]

    def waiting(self, channel: str | None = None) -> set[Waiter]:
        """The held long polls of ``channel``, or of every channel (each once)."""
        if channel is not None:
            return set(self._waiters.get(channel, ()))
        found: set[Waiter] = set()
        for waiters in self._waiters.values():
            found.update(waiters)
        return found

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    def followers(self) -> dict[str, int]:
        """Local followers per channel (streams and held long polls), node-local ones apart."""
        counts = {c: len(found) for c, found in self._subscribers.items() if c[0] != LOCAL_PREFIX}
        for channel, waiters in self._waiters.items():
            counts[channel] = counts.get(channel, 0) + len(waiters)
        return counts

    def subscription_count(self) -> int:
        """Channel followers over every stream (a connection on three channels counts 3)."""
        return sum(len(found) for c, found in self._subscribers.items() if c[0] != LOCAL_PREFIX)

    async def check_broker(self) -> float:
        """A broker round trip; its time (seconds) is kept for ``/metrics``."""
        started = time.perf_counter()  # uvloop's clock counts whole milliseconds
        try:
            await self.broker.check()
        except BrokerUnavailable:
            self.tally.broker_up = False
            raise
        rtt = time.perf_counter() - started
        self.tally.broker_rtt = rtt
        self.tally.broker_up = True
        return rtt

    def _check_broker_soon(self) -> None:
        self.spawn(self._check_broker_quietly())

    async def _check_broker_quietly(self) -> None:
        try:
            await self.check_broker()
        except BrokerUnavailable as error:
            self.tally.broker_errors += 1
            log.warning("broker check failed: %s", error)

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
            self.tally.broker_errors += 1
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
