"""The fan-out link of the ``redis://`` broker: one pub/sub connection per node, kept alive.

What it promises the broker:

- Messages of a Redis channel reach ``on_message`` in the order Redis published them: one
  connection, read by one task, and nothing else reads it.
- ``want(name)`` returns once Redis confirmed the subscription: what is published after
  that reaches ``on_message``; the caller reads what came before from history.
- ``side`` channels (name -> handler) are subscribed for the life of the link beside the
  wanted ones, each message handed to its handler: other traffic kept off the event path.
- ``on_subscribed(name)`` runs when Redis confirms a subscription nobody waits for: after a
  rebuild (or after a ``want`` that gave up). Events published while the link was down did
  not come through it, so the broker tells the node to resync the channel from history.
- A link that stops delivering is noticed, even when its socket stays open (a killed or
  half-open connection, a stalled server): every ``PING_INTERVAL`` seconds a ping is
  published on a channel only this node subscribes to, and it must come back through the
  link within ``DEAD_AFTER`` seconds of the time the node's event loop could run (a
  ``Patience``, as the readiness check's round trip): a loop
  held up (a process starved of CPU, a storm of connections) reads its pong late, and a link
  rebuilt for that would resync every channel on a node that has no time to spare. A link
  that fails or goes quiet is closed and rebuilt,
  with exponential backoff capped at ``BACKOFF_CAP`` and full jitter, and every wanted
  channel is subscribed again. However long Redis stays away, the keeper keeps trying.
- The keeper runs under the node's supervisor: what it did not expect is logged, counted,
  and the keeper starts again. While it is not running, the link is not ``up``, so the
  node's readiness check fails rather than report a fan-out that nobody keeps.

The link never reconnects behind the broker's back: redis-py's own retries are off on its
connection, so every new connection goes through the rebuild and its resyncs.

A ``sharded`` link (Redis Cluster, one per shard) follows its wanted channels and its ping
with ``SSUBSCRIBE``: sharded channels live on their slot's shard, so a message crosses no
other shard. Its side channels stay classic (``SUBSCRIBE``), which the cluster sends to
every shard. Sharded channels are subscribed one per command, as a shard refuses channels of
several slots in one ``SSUBSCRIBE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from tidings.brokers.patience import Patience, retrieve
from tidings.client.backoff import Backoff
from tidings.exceptions import BrokerUnavailable
from tidings.supervisor import Supervisor

log = logging.getLogger("tidings.brokers.redis")

PING_INTERVAL = 1.0
DEAD_AFTER = 3.0
CONNECT_TIMEOUT = 3.0
SUBSCRIBE_TIMEOUT = 5.0
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0
SUBSCRIBE_CHUNK = 1000
KEEPER = "redis pub/sub link"

Publish = Callable[[bytes, bytes], Coroutine[Any, Any, object]]
# (subscribe, unsubscribe) for classic and for sharded channels.
_COMMANDS = {False: (b"SUBSCRIBE", b"UNSUBSCRIBE"), True: (b"SSUBSCRIBE", b"SUNSUBSCRIBE")}


class PubSubLink:
    """Subscribes one connection to the wanted channels and watches it with pings."""

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        publish: Publish,
        ping_channel: bytes,
        on_message: Callable[[bytes], None],
        on_subscribed: Callable[[bytes], None],
        on_lost: Callable[[], Awaitable[None]],
        side: dict[bytes, Callable[[bytes], None]] | None = None,
        sharded: bool = False,
    ) -> None:
        self._connect = connect
        self._subscribe, self._unsubscribe = _COMMANDS[sharded]
        self._per_command = 1 if sharded else SUBSCRIBE_CHUNK
        self._publish = publish
        self._ping_channel = ping_channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._side = side or {}
        self.wanted: set[bytes] = set()
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pinging: asyncio.Task[None] | None = None
        self._confirming: dict[bytes, list[asyncio.Future[None]]] = {}
        self._round_trips: dict[int, asyncio.Future[None]] = {}
        self._sequence = 0
        self._last_pong = 0.0
        self._failures = 0
        self._up = asyncio.Event()
        self._was_up = False
        self._closing = False
        self._supervisor = Supervisor()
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)

    @property
    def up(self) -> bool:
        """Subscribed to its ping channel (a death is noticed within ``DEAD_AFTER``), with
        its keeper running."""
        return self._up.is_set() and self.kept

    @property
    def kept(self) -> bool:
        """The keeper runs (or the link was never started)."""
        return self._task is None or not self._task.done()

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the keeper; ``supervisor`` logs and counts what it did not expect."""
        if supervisor is not None:
            self._supervisor = supervisor
        keeping = self._supervisor.keep(KEEPER, self._keep, self._backoff)
        self._task = asyncio.get_running_loop().create_task(keeping)
        self._task.add_done_callback(self._keeper_ended)

    def _keeper_ended(self, task: asyncio.Task[None]) -> None:
        if self._closing:
            return
        self._up.clear()
        self._supervisor.ended(KEEPER, task)
        log.error("Redis pub/sub link: its keeper stopped; this node is not ready any more")

    async def close(self) -> None:
        """Stop the link. Its loops also watch ``_closing``: on Python 3.11 a cancellation can
        be lost inside redis-py (``asyncio.wait_for`` swallows it when the awaited send
        completes at the same moment), so cancelling alone might not end them."""
        self._closing = True
        tasks = [task for task in (self._task, self._pinging) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._pinging = None

    async def want(self, name: bytes) -> None:
        """Subscribe to ``name``; return once Redis confirmed it (if the link is started).

        Raises BrokerUnavailable when no confirmation came within ``SUBSCRIBE_TIMEOUT``; the
        channel stays wanted, and is subscribed (and resynced) when the link is back.
        """
        self.wanted.add(name)
        if self._task is None:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirming.setdefault(name, []).append(confirmed)
        try:
            await self._send(self._subscribe, name)
            await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)
        except TimeoutError as error:
            raise BrokerUnavailable("Redis did not confirm a subscription: reconnecting") from error
        finally:
            waiting = self._confirming.get(name, [])
            if confirmed in waiting:
                waiting.remove(confirmed)

    async def drop(self, name: bytes) -> None:
        self.wanted.discard(name)
        await self._send(self._unsubscribe, name)

    async def round_trip(self, timeout: float) -> None:
        """Publish a ping and wait for it to come back through the link, for ``timeout``
        seconds of the time this loop could run (see patience.py).

        Fails at once while the link is down, except before it was first up (start-up). The
        deadline never cancels a redis-py call (see ``close``): a late ping is left to finish.
        """
        loop = asyncio.get_running_loop()
        patience = Patience(timeout)
        if not self.kept:
            raise BrokerUnavailable("the Redis pub/sub link has stopped")
        if not self._was_up:
            up = loop.create_task(self._up.wait())
            if not await patience.wait(up):
                up.cancel()
                raise BrokerUnavailable("the Redis pub/sub link is not up yet")
        if not self.up:
            raise BrokerUnavailable("the Redis pub/sub link is down: reconnecting")
        sequence = self._next_sequence()
        back: asyncio.Future[None] = loop.create_future()
        self._round_trips[sequence] = back
        try:
            sent: asyncio.Task[object] = loop.create_task(
                self._publish(self._ping_channel, b"%d" % sequence)
            )
            sent.add_done_callback(retrieve)
            if not await patience.wait(sent):
                raise BrokerUnavailable("Redis did not answer a ping in time")
            sent.result()
            if not await patience.wait(back):
                raise BrokerUnavailable("a ping did not come back through Redis pub/sub")
        finally:
            self._round_trips.pop(sequence, None)

    # The keeper: connect, subscribe, watch, rebuild.

    async def _keep(self) -> None:
        """Connect, serve, back off, again, until closed. What escapes this loop reaches
        the supervisor, which starts it again."""
        while not self._closing:
            connection: AbstractConnection | None = None
            try:
                connection = self._connect()
                await asyncio.wait_for(connection.connect(), CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
                await self._serve(connection)
                reason = "the link failed or went quiet"
            except (RedisError, OSError) as error:
                reason = f"cannot connect ({error})"
            except Exception as error:  # a bug of ours: the connection is rebuilt all the same
                self._supervisor.record(KEEPER, error)
                reason = "unexpected error"
            finally:
                self._connection = None
                self._up.clear()
                if connection is not None:
                    await connection.disconnect(nowait=True)
            if not self._closing:
                with contextlib.suppress(RedisError, OSError):
                    await self._on_lost()
                await self._back_off(reason)

    async def _back_off(self, reason: str) -> None:
        delay = self._backoff.delay(self._failures)
        self._failures += 1
        log.warning(
            "Redis pub/sub link: %s; retrying in %.2f s (failure %d in a row)",
            reason,
            delay,
            self._failures,
        )
        await asyncio.sleep(delay)

    async def _serve(self, connection: AbstractConnection) -> None:
        """Subscribe and read until the link fails or a ping is overdue."""
        self._connection = connection
        loop = asyncio.get_running_loop()
        self._last_pong = loop.time()
        reader = loop.create_task(self._read(connection))
        try:
            if self._side:
                await self._send(b"SUBSCRIBE", *self._side)
            names = [self._ping_channel, *self.wanted]
            for start in range(0, len(names), self._per_command):
                await self._send(self._subscribe, *names[start : start + self._per_command])
            # a pong is due within DEAD_AFTER seconds of the time the loop could run
            patience = Patience(DEAD_AFTER)
            while not reader.done() and not self._closing:
                self._ping()
                pong = self._last_pong
                await patience.wait(reader, PING_INTERVAL)
                if self._last_pong != pong:
                    patience = Patience(DEAD_AFTER)
                elif patience.left <= 0:
                    log.warning("Redis pub/sub link: no ping came back in %.0f s", DEAD_AFTER)
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await reader

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            self._dispatch(await connection.read_response())

    async def _send(self, *args: bytes) -> None:
        """Send on the current connection; a failure shows up in the reader, which rebuilds."""
        connection = self._connection
        if connection is None or not connection.is_connected:
            return
        try:
            await connection.send_command(*args, check_health=False)
        except (RedisError, OSError) as error:
            log.debug("Redis pub/sub link: sending %s failed: %s", args[0], error)

    def _dispatch(self, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return
        kind, name, body = reply
        if kind in (b"message", b"smessage"):
            if name in self.wanted:
                self._on_message(body)
            elif name == self._ping_channel:
                self._pong(body)
            elif (handler := self._side.get(name)) is not None:
                handler(body)
        elif kind in (b"subscribe", b"ssubscribe"):
            self._confirmed(name)

    def _confirmed(self, name: bytes) -> None:
        if name == self._ping_channel:
            self._last_pong = asyncio.get_running_loop().time()
            self._up.set()
            self._was_up = True
            return
        waiting = self._confirming.pop(name, [])
        for confirmed in waiting:
            if not confirmed.done():
                confirmed.set_result(None)
        if not waiting and name in self.wanted:
            self._on_subscribed(name)  # a re-subscription: nobody is waiting to resync it

    # Pings.

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _ping(self) -> None:
        if self._pinging is None or self._pinging.done():
            sequence = self._next_sequence()
            self._pinging = asyncio.get_running_loop().create_task(self._send_ping(sequence))

    async def _send_ping(self, sequence: int) -> None:
        try:
            await self._publish(self._ping_channel, b"%d" % sequence)
        except (RedisError, OSError) as error:
            log.debug("Redis pub/sub link: ping not sent: %s", error)

    def _pong(self, body: object) -> None:
        self._last_pong = asyncio.get_running_loop().time()
        self._failures = 0
        if not isinstance(body, bytes) or not body.isdigit():
            return
        sequence = int(body)
        for waiting, back in list(self._round_trips.items()):
            if waiting <= sequence and not back.done():
                back.set_result(None)
