"""``nats://``: JetStream keeps each channel's history and fans its events out to the nodes.

- **One stream per channel** (names and subjects: ``nats_layout.py``). The stream sequence
  *is* the channel's offset: the stream's leader assigns it as it stores the message, so
  offsets are consecutive and never reused however many nodes publish at once, with no
  read-before-write and no retry. Size, age and the idempotency window are set per channel
  from its namespace, and history is read by offset with direct gets.

  One shared stream with per-subject sequences was the alternative. Its sequence is global,
  so each publish would have to read the channel's last offset and append with
  ``Nats-Expected-Last-Subject-Sequence``, retrying whenever another node won the race (two
  round trips or more, and worse the hotter the channel); history would need an index from
  offset to stream sequence; and age, size and the duplicate window would be one per stream,
  not per namespace. Its one advantage, fewer streams, does not pay for that.
- **The epoch** is a random token chosen when the stream is created and kept in its one
  subject ``<prefix>.c.<token>.<epoch>``. A publish goes to that subject, so it can only be
  stored in the lifetime it names: an event never carries a stale epoch, and a stream that
  was deleted and created again (a new epoch) turns old cursors into ``epoch`` resets.
- **Idempotency keys** are ``Nats-Msg-Id``, with the namespace's history age as the duplicate
  window: a repeat answers with the first message's sequence, which is read back and
  returned. If that event has left history, the key publishes anew under the id
  ``<key>@<old sequence>``, which every node derives alike, so concurrent retries still
  store it once.
- **Fan-out**: the stream republishes each stored message, once and in order, to
  ``<prefix>.r.<token>``; a node holds one core subscription per channel it has followers
  for, so it receives only those, with no consumer state on the server. Core delivery is
  at most once: after a reconnect (subscriptions are replayed first) and whenever the client
  drops messages for a slow subscription, the node calls ``resync(channel)`` and followers
  fill the gap from history.
- **Costs**: a stream per channel that was ever published to or read (as the memory broker
  makes a log on first use); streams are not deleted when they empty, so an operator removes
  long-unused ones (a new stream is a new epoch: its old cursors reset). Each node holds a
  subscription, and nats-py a task, per channel it follows.
- **Presence**: a key-value bucket and a core subject apart from the channel streams
  (``nats_presence.py``); **control** between nodes and revocations likewise
  (``nats_control.py``).
- **Errors**: every NATS error becomes BrokerUnavailable (``nats_errors.py``). While the
  link is down, publishes fail at once instead of waiting in the client's reconnect buffer,
  from which they could be stored later without an acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError, NotFoundError

from tidings.brokers.base import (
    PAGE_BYTES,
    ControlSink,
    EventSink,
    GapSink,
    HistoryPage,
    PresenceSink,
    page_after,
)
from tidings.brokers.nats_control import NatsControl
from tidings.brokers.nats_errors import FOREIGN_ERRORS, translated
from tidings.brokers.nats_layout import (
    EVENT_HEADER,
    MSG_ID_HEADER,
    TS_HEADER,
    ChannelStream,
    Layout,
    decode_event,
    parse_url,
    with_position,
)
from tidings.brokers.nats_ping import FanoutPing
from tidings.brokers.nats_presence import NatsPresence
from tidings.brokers.nats_streams import StreamDirectory
from tidings.brokers.patience import SLACK, Patience, retrieve
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.control import Control, Revocation
from tidings.protocol.cursor import Cursor, new_epoch
from tidings.protocol.event import Event, Reset
from tidings.protocol.presence import PresenceChange, PresenceEntry
from tidings.supervisor import Supervisor

log = logging.getLogger("tidings.brokers")

FETCH_AT_ONCE = 100  # direct gets in flight for one history page
FIRST_FETCH = 16  # of a history page: the events' size decides how many follow at once
PENDING_MESSAGES = 10_000  # per subscription; past it the client drops and we resync
PENDING_BYTES = 16 * 1024 * 1024
RECONNECT_WAIT_SECONDS = 1
CONNECT_TIMEOUT_SECONDS = 2
# nats-py hands the server's -ERR over lower-cased; the connection stays up
REFUSED_SUBSCRIPTION = re.compile(r'permissions violation for subscription to "([^"]+)"')


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class NatsBroker:
    """History and fan-out through JetStream; see the module docstring for the design."""

    def __init__(self, url: str, settings: Settings) -> None:
        self._options = parse_url(url)
        self._layout = Layout(self._options.prefix)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._waited_in_vain = False
        self._closed = False
        self._streams = StreamDirectory(self._layout, self._options, settings)
        self._wanted: set[str] = set()
        self._missed: set[str] = set()  # wanted while NATS was never reached: resync them
        self._subscriptions: dict[str, Subscription] = {}
        self._refused: dict[str, int] = {}  # channel -> refusals of its subscription by NATS
        self._sink: EventSink | None = None
        self._resync: GapSink | None = None
        self._presence = NatsPresence(self._options, settings.server.presence_ttl_seconds)
        self._presence_sink: PresenceSink | None = None
        self._control = NatsControl(self._options, settings.auth.max_token_seconds)
        self._control_sink: ControlSink | None = None
        self._supervisor = Supervisor()
        self._ping = FanoutPing(self._options.prefix, new_epoch())

    @property
    def _where(self) -> str:
        return ",".join(self._options.servers)

    def start(
        self,
        sink: EventSink,
        resync: GapSink,
        presence: PresenceSink | None = None,
        *,
        supervisor: Supervisor | None = None,
        control: ControlSink | None = None,
    ) -> None:
        self._sink = sink
        self._resync = resync
        self._presence_sink = presence
        self._control_sink = control
        if supervisor is not None:
            self._supervisor = supervisor

    async def close(self) -> None:
        self._closed = True
        self._sink = self._resync = self._presence_sink = self._control_sink = None
        self._wanted.clear()
        self._missed.clear()
        self._refused.clear()
        self._subscriptions.clear()
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.wait([connecting])
        client, self._client, self._js = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except FOREIGN_ERRORS as error:
                log.debug("closing the NATS connection: %s", error)

    # The connection

    async def _jetstream(self) -> JetStreamContext:
        """The JetStream context of a live connection; the first call starts connecting."""
        if self._closed:
            raise BrokerUnavailable("the NATS broker is closed")
        if self._client is None:
            await self._first_connection()
        client, js = self._client, self._js
        if client is None or js is None or not client.is_connected:
            raise BrokerUnavailable(f"NATS at {self._where} is unreachable: reconnecting")
        return js

    async def _first_connection(self) -> None:
        """Wait for the connection, which keeps being tried in the background.

        The first caller waits up to the timeout; once a wait was in vain, callers fail at
        once (a 503, not a hung request) until the connection is made.
        """
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        patience = 0.0 if self._waited_in_vain else self._options.timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._connecting), patience)
        except TimeoutError:
            self._waited_in_vain = True
            raise BrokerUnavailable(f"NATS at {self._where} is unreachable: retrying") from None
        except FOREIGN_ERRORS as error:
            raise BrokerUnavailable(f"NATS at {self._where} refused: {error}") from error

    async def _connect(self) -> None:
        client = Client()
        try:
            await client.connect(
                servers=list(self._options.servers),
                name="tidings",
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # also while connecting for the first time
                reconnect_time_wait=RECONNECT_WAIT_SECONDS,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except BaseException:
            await self._discard(client)
            raise
        self._client, self._js = client, client.jetstream(timeout=self._options.timeout)
        self._waited_in_vain = False
        try:
            await self._presence.listen(client, self._presence_changed)
        except BrokerUnavailable as error:
            log.warning("could not listen for presence changes: %s", error)
        try:
            await self._control.listen(client, self._control_received)
        except BrokerUnavailable as error:
            log.warning("could not listen for control messages: %s", error)
        try:
            await self._ping.listen(client)
        except BrokerUnavailable as error:
            log.warning("could not listen for its own pings: %s", error)
        for channel in tuple(self._wanted):
            try:
                await self._listen(client, channel)
            except BrokerUnavailable as error:
                log.warning("could not subscribe to %s: %s", channel, error)
        missed, self._missed = self._missed, set()
        for channel in missed & self._wanted:
            self._tell_resync(channel)

    @staticmethod
    async def _discard(client: Client) -> None:
        with contextlib.suppress(*FOREIGN_ERRORS):
            await client.close()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            for channel, subscription in tuple(self._subscriptions.items()):
                if subscription is error.sub:
                    self._tell_resync(channel)
            return
        refused = REFUSED_SUBSCRIPTION.search(str(error))
        if refused is not None:
            await self._refuse(refused.group(1))
        elif not isinstance(error, OSError | nats.errors.Error):
            # nats-py hands over what a subscription's callback raised: a bug of the node's
            self._supervisor.record("NatsBroker.receive", error)
        elif isinstance(error, OSError | nats.errors.StaleConnectionError):
            log.debug("NATS connection error: %s", error)  # _on_disconnected told the log
        else:
            log.warning("NATS error: %s", error)

    async def _refuse(self, subject: str) -> None:
        """NATS refused a subscription (the account may not subscribe there): the channel is
        not followed, and the node is not ready until a later check subscribes it."""
        for channel, subscription in tuple(self._subscriptions.items()):
            if subscription.subject.lower() == subject:
                refusals = self._refused.get(channel, 0)
                log.log(  # once loud; every check asks again
                    logging.DEBUG if refusals else logging.WARNING,
                    "NATS refused the subscription to %s (%s)",
                    channel,
                    subject,
                )
                self._refused[channel] = refusals + 1
                del self._subscriptions[channel]
                with contextlib.suppress(*FOREIGN_ERRORS):
                    await subscription.unsubscribe()

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("lost the connection to NATS at %s: reconnecting", self._where)

    async def _on_reconnected(self) -> None:
        """Subscriptions were replayed before this runs: history now covers any gap."""
        log.info("reconnected to NATS: resynchronising %d channels", len(self._subscriptions))
        for channel in tuple(self._subscriptions):
            self._tell_resync(channel)

    def _tell_resync(self, channel: str) -> None:
        if self._resync is not None:
            self._resync(channel)

    # Publishing

    async def publish(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event:
        js = await self._jetstream()
        stream = await self._streams.cached(js, channel)
        ts = now_ms()
        headers = {EVENT_HEADER: event, TS_HEADER: str(ts)}
        # A channel that keeps no history keeps no keys either, as in the memory broker.
        msg_id = idempotency_key if stream.history_size > 0 else None
        while True:
            if msg_id is not None:
                headers[MSG_ID_HEADER] = msg_id
            stream, ack = await self._store(js, stream, data, headers)
            if not ack.duplicate:
                return Event(channel, stream.epoch, ack.seq, event, data, ts)
            first = await self._held(js, stream, ack.seq)
            if first is not None:
                return first
            msg_id = f"{idempotency_key}@{ack.seq}"

    async def _store(
        self, js: JetStreamContext, stream: ChannelStream, data: bytes, headers: dict[str, str]
    ) -> tuple[ChannelStream, PubAck]:
        """Publish and wait for JetStream's acknowledgement that the message is stored."""
        ack = await self._send(js, stream, data, headers)
        if ack is None:
            # No stream stores this epoch's subject: it was deleted and nothing was stored,
            # so the stream is opened anew (a new lifetime) and the publish retried once.
            self._streams.forget(stream.channel)
            stream, _ = await self._streams.open(js, stream.channel)
            ack = await self._send(js, stream, data, headers)
        if ack is None:
            raise BrokerUnavailable(f"NATS has no stream for {stream.channel!r}")
        return stream, ack

    @staticmethod
    async def _send(
        js: JetStreamContext, stream: ChannelStream, data: bytes, headers: dict[str, str]
    ) -> PubAck | None:
        async with translated(f"publish to {stream.channel!r}"):
            try:
                return await js.publish(stream.subject, data, headers=dict(headers))
            except NoStreamResponseError:
                return None

    async def _held(self, js: JetStreamContext, stream: ChannelStream, seq: int) -> Event | None:
        """The event at ``seq`` if history still holds it (not evicted, not aged out)."""
        event = await self._get(js, stream, seq)
        if event is None or event.ts < now_ms() - stream.ttl_ms:
            return None
        return event

    # History

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        js = await self._jetstream()
        stream, state = await self._streams.open(js, channel)
        head = Cursor(stream.epoch, state.last_seq)
        if since is None or since == head:
            return HistoryPage((), head)
        if since.epoch != stream.epoch or since.offset > state.last_seq:
            return HistoryPage((), head, Reset(channel, head, "epoch"))
        gap = HistoryPage((), head, Reset(channel, head, "gap"))
        start = since.offset + 1
        if start < stream.held_from(state.first_seq, state.last_seq):
            return gap
        if limit <= 0:
            return HistoryPage((), since)
        last = min(state.last_seq, since.offset + limit)
        events = await self._fetch(js, stream, start, last, PAGE_BYTES)
        # JetStream removes aged messages on a timer; history ends at the age limit exactly.
        if not events or events[0].ts < now_ms() - stream.ttl_ms:
            return gap
        return page_after(since, events, state.last_seq)

    def publish_nowait(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> None:
        """Events are stored in NATS: always a round trip (``publish``)."""
        return None

    def history_nowait(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage | None:
        """History lives in NATS: always a round trip."""
        return None

    async def recent(self, channel: str, count: int) -> HistoryPage:
        js = await self._jetstream()
        stream, state = await self._streams.open(js, channel)
        head = Cursor(stream.epoch, state.last_seq)
        held_from = stream.held_from(state.first_seq, state.last_seq)
        first = max(1, held_from, state.last_seq - count + 1)
        if count <= 0 or first > state.last_seq:
            return HistoryPage((), head)
        events = await self._fetch(js, stream, first, state.last_seq)
        # JetStream removes aged messages on a timer; history ends at the age limit exactly,
        # and what follows a message no longer stored is not "the last events" either.
        oldest_allowed = now_ms() - stream.ttl_ms
        aged = 0
        while aged < len(events) and events[aged].ts < oldest_allowed:
            aged += 1
        if aged == len(events) or events[-1].offset != state.last_seq:
            return HistoryPage((), head)
        return HistoryPage(tuple(events[aged:]), head)

    def recent_nowait(self, channel: str, count: int) -> HistoryPage | None:
        return None

    async def _fetch(
        self,
        js: JetStreamContext,
        stream: ChannelStream,
        first: int,
        last: int,
        budget: int | None = None,
    ) -> list[Event]:
        """Events ``first`` to ``last``, stopping before the first one no longer stored, and
        before the one whose data would pass ``budget`` bytes in all (one event at least)."""
        events: list[Event] = []
        size, at_once = 0, FETCH_AT_ONCE if budget is None else FIRST_FETCH
        low = first
        while low <= last:
            high = min(low + at_once, last + 1)
            chunk = await asyncio.gather(*(self._get(js, stream, seq) for seq in range(low, high)))
            for event in chunk:
                if event is None:
                    return events
                size += len(event.data)
                if budget is not None and size > budget and events:
                    return events
                events.append(event)
            low = high
            if budget is not None:  # as many as the budget left holds, at the size seen so far
                left = (budget - size) * len(events) // max(size, 1) + 1
                at_once = max(1, min(FETCH_AT_ONCE, left))
        return events

    async def _get(self, js: JetStreamContext, stream: ChannelStream, seq: int) -> Event | None:
        async with translated(f"read the history of {stream.channel!r}"):
            try:
                message = await js.get_msg(stream.name, seq, direct=True)
            except NotFoundError:
                if self._options.replicas == 1:
                    return None
                # Any replica answers a direct get, one still catching up too: ask the
                # leader before calling the event gone (a false gap reset otherwise).
                try:
                    stored = await js.get_msg(stream.name, seq)
                except NotFoundError:
                    return None
                headers = with_position(stored.headers, stored.subject or "", stored.seq or 0)
                return decode_event(stream.channel, headers, stored.data)
        return decode_event(stream.channel, message.headers, message.data)

    # Fan-out

    async def subscribe(self, channel: str) -> None:
        """Listen for the channel's events, then resync it: followers that read history
        before the server had the subscription may have missed what came in between.

        While NATS is unreachable the interest is kept: the subscription is made (or
        replayed) when the connection is, followed by a resync.
        """
        self._wanted.add(channel)
        first = self._client is None
        try:
            await self._jetstream()  # the first connection listens to every wanted channel
        except BrokerUnavailable:
            if self._client is None:
                self._missed.add(channel)
                raise
        client = self._client
        if client is None:
            return
        listening_now = await self._listen(client, channel) or first
        if listening_now and client.is_connected:
            self._tell_resync(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._refused.pop(channel, None)
        subscription = self._subscriptions.pop(channel, None)
        if subscription is not None:
            async with translated(f"unsubscribe from {channel!r}"):
                await subscription.unsubscribe()

    async def _listen(self, client: Client, channel: str) -> bool:
        """Subscribe, and wait until the server has the subscription; False if it was there."""
        if channel in self._subscriptions:
            return False
        async with translated(f"subscribe to {channel!r}"):
            subscription = await client.subscribe(
                self._layout.fanout_subject(channel),
                cb=self._receiver(channel),
                pending_msgs_limit=PENDING_MESSAGES,
                pending_bytes_limit=PENDING_BYTES,
            )
            if channel in self._subscriptions or channel not in self._wanted:
                await subscription.unsubscribe()  # raced with another subscribe or unsubscribe
                return False
            self._subscriptions[channel] = subscription
            if client.is_connected:
                await client.flush(math.ceil(self._options.timeout))
        return True

    def _receiver(self, channel: str) -> Callable[[Msg], Awaitable[None]]:
        async def receive(message: Msg) -> None:
            event = decode_event(channel, message.headers, message.data)
            if event is None:
                log.warning("ignored a message on %s that is not a Tidings event", message.subject)
            elif self._sink is not None:
                self._sink(event)

        return receive

    async def check(self) -> None:
        """A JetStream request, and a ping through a subscription of the fan-out's (see
        nats_ping.py). A connection that answers but whose subscriptions deliver nothing is
        made again: nats-py then replays every subscription, and the node resyncs."""
        await self._jetstream()
        client = self._client
        if client is None:
            return
        timeout = self._options.timeout
        # a JetStream request, on a patience: only time this loop could run counts
        answer = asyncio.get_running_loop().create_task(
            client.jetstream(timeout=timeout * SLACK).account_info()
        )
        answer.add_done_callback(retrieve)
        async with translated("answer a readiness check"):
            if not await Patience(timeout).wait(answer):
                raise BrokerUnavailable("NATS did not answer a readiness check in time")
            answer.result()
        asked = dict(self._refused)
        for channel in asked:  # ask again: the account may allow it by now
            await self._listen(client, channel)
        try:
            # it comes back after NATS's word on every subscription asked for before it
            await self._ping.round_trip(client, self._options.timeout)
        except BrokerUnavailable as error:
            if client.is_connected:
                log.warning("%s: reconnecting to subscribe again", error)
                await client.force_reconnect()
            raise
        for channel, refusals in asked.items():
            if self._refused.get(channel) == refusals:  # refused no more: NATS took it
                del self._refused[channel]
                self._tell_resync(channel)
        if self._refused:
            refused = ", ".join(sorted(self._refused))
            raise BrokerUnavailable(f"NATS refused the subscription to {refused}")

    # Control (nats_control.py)

    def _control_received(self, message: Control) -> None:
        if self._control_sink is not None:
            self._supervisor.run(self._control_sink, message)

    async def broadcast_control(self, message: Control) -> None:
        _js, client = await self._connected()
        await self._control.broadcast(client, message)

    async def revoke(self, revocation: Revocation) -> None:
        await self._control.revoke(await self._jetstream(), revocation)

    async def revocations(self) -> list[Revocation]:
        return await self._control.revocations(await self._jetstream())

    # Presence (nats_presence.py)

    def _presence_changed(self, change: PresenceChange) -> None:
        if self._presence_sink is not None:
            self._presence_sink(change)

    async def _connected(self) -> tuple[JetStreamContext, Client]:
        js = await self._jetstream()
        client = self._client
        if client is None:
            raise BrokerUnavailable(f"NATS at {self._where} is unreachable: reconnecting")
        return js, client

    async def presence_add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        js, client = await self._connected()
        await self._presence.add(js, client, entries, lifetime)

    async def presence_remove(self, entries: Sequence[PresenceEntry]) -> None:
        js, client = await self._connected()
        await self._presence.remove(js, client, entries)

    async def presence_list(self, channel: str) -> list[PresenceEntry]:
        return await self._presence.entries(await self._jetstream(), channel)

    async def presence_sweep(self, channels: Sequence[str]) -> None:
        js, client = await self._connected()
        await self._presence.sweep(js, client, channels)
