"""``redis://``: history in Redis Streams, fan-out over Redis pub/sub, shared by every node.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=tidings]`` (``rediss://`` for TLS).
Every key and pub/sub channel name starts with ``prefix`` (default ``tidings``), so several
deployments, or tests, can share one Redis; other query parameters go to redis-py. A
channel's keys are described in redis_scripts; its events are published on
``<prefix>:live:<channel>``, and each node pings itself on ``<prefix>:ping:<node>``. Control
messages between nodes go over ``<prefix>:control``, and revocations live in one hash,
``<prefix>:revoked`` (sub -> times), which expires with its longest revocation. A node's
connections are named ``<prefix>:<node>:commands``, ``<prefix>:<node>:pubsub`` and, for the
link's pings, ``<prefix>:<node>:ping`` (CLIENT LIST shows which node holds what).

What it guarantees, beyond brokers/base.py:

- **Acknowledged = stored.** ``publish`` runs one Lua script (redis_scripts.APPEND) that
  gives the next offset of the channel's epoch, appends to the channel's stream, trims it to
  the namespace's size and age, and PUBLISHes the stored event, all atomically. It returns
  only once Redis answered. A publish that raises BrokerUnavailable stored nothing, with one
  exception no client library can avoid: the connection failed after Redis ran the script
  and before its answer arrived. A retry with the same idempotency key is then safe.
- **Replicas.** Redis replicates asynchronously: a primary that dies can take its last
  acknowledged publishes with it, and its promoted replica gives their offsets again. With
  ``server.redis_wait_replicas = n`` a publish also runs ``WAIT n`` on the connection that
  stored it and is acknowledged, and fanned out (by the node, after the script), only once n
  replicas hold it: no subscriber sees an event a failover can still take back. Fewer within
  ``WAIT_TIMEOUT_MS`` raise BrokerUnavailable, though the event is stored on the primary (a
  retry with the same idempotency key is safe). Events fanned out by several nodes at once
  may then arrive out of order; followers catch the gap up from history.
- **Order.** Scripts run one at a time, so offsets are consecutive with no duplicates
  across every node, and each channel's fan-out messages leave Redis in offset order. A node
  reads them on one pub/sub connection and hands them to its sink in that order.
- **History** lives in Redis: it survives node restarts. It is lost when Redis loses it (a
  restart without persistence, a key expiry); the next use of the channel then starts a new
  epoch, so resuming clients get an ``epoch`` reset, never a silent skip.
- **Expiry.** A channel's stream expires ``history_ttl_seconds`` after its last publish
  (every entry has aged out by then); its epoch and offset live ``META_GRACE_MS`` longer,
  refreshed by reads and, every ``META_REFRESH_SECONDS``, by each node for the channels it
  follows. A channel nobody uses vanishes; a quiet channel with followers keeps its epoch.
- **Outages.** Every Redis error becomes BrokerUnavailable at this boundary. The fan-out
  link (redis_link.PubSubLink) is watched by a ping through pub/sub; when it fails or goes
  quiet it is rebuilt with backoff, and once each channel is subscribed again the node's
  ``resync(channel)`` makes every follower read what it missed from history. The pings go
  through a connection of their own, so a pool busy with commands cannot stall them.
- **Caught-up reads.** ``history_nowait`` answers a cursor at the newest event the link
  delivered of a followed channel without asking Redis (see its docstring).
- **Presence** has keys and a pub/sub channel of its own, apart from events
  (redis_presence.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.typing import EncodableT

from tidings.brokers.base import (
    PAGE_BYTES,
    ControlSink,
    EventSink,
    GapSink,
    HistoryPage,
    PresenceSink,
)
from tidings.brokers.redis_link import PubSubLink
from tidings.brokers.redis_presence import RedisPresence
from tidings.brokers.redis_scripts import (
    APPEND,
    READ,
    RECENT,
    REVOKE,
    live_body,
    live_event,
    page_of,
    recent_page,
    repeated,
    stored_event,
)
from tidings.client.backoff import Backoff
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable, ConfigError
from tidings.protocol.channel import namespace_of
from tidings.protocol.control import (
    Control,
    Revocation,
    decode_control,
    decode_revocation,
    encode_control,
    encode_revocation,
)
from tidings.protocol.cursor import Cursor, new_epoch
from tidings.protocol.event import Event
from tidings.protocol.presence import PresenceEntry, decode_change
from tidings.supervisor import Supervisor

log = logging.getLogger("tidings.brokers.redis")

# A Redis, or on Redis Cluster a RedisCluster: the commands this broker sends have the same
# signature on both, and redis-py gives them no common type.
Commands = Any


class Fanout(Protocol):
    """How events reach the nodes: one PubSubLink, or on Redis Cluster one per shard."""

    wanted: set[bytes]

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start keeping the link(s) up; ``supervisor`` logs and counts what was unexpected."""

    async def close(self) -> None: ...

    async def want(self, name: bytes) -> None: ...

    async def drop(self, name: bytes) -> None: ...

    async def round_trip(self, timeout: float) -> None: ...


DEFAULT_PREFIX = "tidings"
_PREFIX = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0
POOL_SIZE = 32
# History reads in flight at once: a burst of catch-ups leaves the rest of the pool to
# publishes and presence. The others wait their turn, up to READ_TURN_WAIT seconds: a wait
# is no failure of Redis (each read in flight fails on its own within COMMAND_TIMEOUT when
# Redis does), and a follower that gave up would reconnect and read again.
READS_AT_ONCE = POOL_SIZE // 2
READ_TURN_WAIT = 30.0
CHECK_TIMEOUT = 2.0
META_GRACE_MS = 600_000
META_REFRESH_SECONDS = 60.0
REFRESH_CHUNK = 1000
REFRESHER = "redis epoch refresher"
REFRESH_BACKOFF = Backoff(1.0, META_REFRESH_SECONDS)
WAIT_TIMEOUT_MS = 1000  # how long a publish waits for server.redis_wait_replicas


def confirm(replicas: int, wanted: int) -> None:
    """A write WAIT saw on fewer replicas than wanted is not acknowledged."""
    if replicas < wanted:
        raise BrokerUnavailable(
            f"stored on the Redis primary but held by {replicas} of {wanted} replicas in "
            f"{WAIT_TIMEOUT_MS} ms: retry with the same idempotency key"
        )


def split_url(url: str) -> tuple[str, str]:
    """The URL for redis-py, without ``prefix``, and the prefix."""
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise ConfigError("server.broker", f"{url!r} is not a URL: {error}") from error
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "prefix"]
    prefix = checked_prefix(prefixes[-1] if prefixes else DEFAULT_PREFIX)
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def checked_prefix(prefix: str) -> str:
    if _PREFIX.fullmatch(prefix) is None:
        raise ConfigError(
            "server.broker", f"prefix {prefix!r}: use 1 to 64 characters from A-Z a-z 0-9 _ - . :"
        )
    return prefix


def link_options(connection_kwargs: dict[str, Any], client_name: str) -> dict[str, Any]:
    """A pooled connection's options made fit for a pub/sub link: no read timeout, no retries
    (the link rebuilds itself, with its resyncs), RESP2 messages."""
    options: dict[str, Any] = {
        **connection_kwargs,
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        "protocol": 2,
    }
    for resp3_only in (
        "maint_notifications_config",
        "maint_notifications_pool_handler",
        "oss_cluster_maint_notifications_handler",
    ):
        if resp3_only in options:  # redis-py 8 turns these on for its default, RESP3
            options[resp3_only] = None
    return options


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Redis and socket errors leave this adapter as BrokerUnavailable."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as error:
        raise BrokerUnavailable(f"Redis {action} failed: {error}") from error


class RedisBroker:
    """Many nodes, one Redis: see the module docstring for what it guarantees.

    redis_sentinel.SentinelBroker and redis_cluster.ClusterBroker are this broker on other
    deployments: they replace how it connects (``_connect``), and the cluster also how events
    are fanned out (``_fanout_link``, the live names and ``APPEND_SCRIPT``).
    """

    APPEND_SCRIPT = APPEND  # ends with a classic PUBLISH

    def __init__(self, url: str, settings: Settings) -> None:
        self.node = new_epoch()
        self._settings = settings
        self._wait_replicas = settings.server.redis_wait_replicas
        self.prefix, self._redis = self._connect(url)
        self._append = self._redis.register_script(self.APPEND_SCRIPT)
        self._read = self._redis.register_script(READ)
        self._recent = self._redis.register_script(RECENT)
        self._revoke = self._redis.register_script(REVOKE)
        self._live_prefix = f"{self.prefix}:live:".encode()
        self._presence = RedisPresence(self._redis, self.prefix)
        self._control_fanout = f"{self.prefix}:control".encode()
        self._revoked_key = f"{self.prefix}:revoked"
        self._control_sink: ControlSink | None = None
        # the newest event the link delivered, per followed channel (see history_nowait)
        self._heads: dict[str, Cursor] = {}
        self._link = self._fanout_link()
        self._sink: EventSink | None = None
        self._presence_sink: PresenceSink | None = None
        self._resync: GapSink | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._reads = asyncio.Semaphore(READS_AT_ONCE)
        self._closed = False
        self._supervisor = Supervisor()

    def _connect(self, url: str) -> tuple[str, Commands]:
        """The key prefix and the client of commands, for one server."""
        address, prefix = split_url(url)
        try:
            self._pool: ConnectionPool = BlockingConnectionPool.from_url(
                address,
                max_connections=POOL_SIZE,
                timeout=COMMAND_TIMEOUT,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),  # a retried publish could store twice
                client_name=self.client_name("commands", prefix),
            )
        except ValueError as error:
            raise ConfigError("server.broker", f"{url!r} is not a Redis URL: {error}") from error
        return prefix, Redis(connection_pool=self._pool)

    def _fanout_link(self) -> Fanout:
        """One pub/sub link: classic pub/sub reaches every node through one server. Its
        pings go through a connection of their own (``_ping_raw``): a pool of commands whose
        every connection is busy must not make a live link look dead."""
        kwargs = {**self._pool.connection_kwargs, "client_name": self.client_name("ping")}
        self._ping_pool = BlockingConnectionPool(
            connection_class=self._pool.connection_class,
            max_connections=1,
            timeout=COMMAND_TIMEOUT,
            **kwargs,
        )
        self._pinger = Redis(connection_pool=self._ping_pool)
        return PubSubLink(
            self._link_connection,
            self._ping_raw,
            f"{self.prefix}:ping:{self.node}".encode(),
            self._received,
            self._subscribed,
            self._link_lost,
            self._side_channels(),
        )

    def _side_channels(self) -> dict[bytes, Callable[[bytes], None]]:
        """Pub/sub channels every node follows beside the events: presence and control."""
        return {
            self._presence.fanout: self._presence_received,
            self._control_fanout: self._control_received,
        }

    def client_name(self, role: str, prefix: str | None = None) -> str:
        """The CLIENT SETNAME of this node's connections: ``<prefix>:<node>:<role>``."""
        return f"{prefix or self.prefix}:{self.node}:{role}"

    def start(
        self,
        sink: EventSink,
        resync: GapSink,
        presence: PresenceSink | None = None,
        *,
        supervisor: Supervisor | None = None,
        control: ControlSink | None = None,
    ) -> None:
        """Open the fan-out link; ``resync`` runs when a channel is subscribed again after the
        link was rebuilt (or after a ``subscribe`` that gave up is confirmed at last)."""
        self._sink, self._resync, self._presence_sink = sink, resync, presence
        self._control_sink = control
        if supervisor is not None:
            self._supervisor = supervisor
        self._link.start(self._supervisor)
        refreshing = self._supervisor.keep(REFRESHER, self._refresh_forever, REFRESH_BACKOFF)
        self._refresher = asyncio.get_running_loop().create_task(refreshing)

    async def close(self) -> None:
        self._sink = self._resync = self._presence_sink = self._control_sink = None
        self._closed = True
        await self._link.close()
        if self._refresher is not None:
            self._refresher.cancel()  # may be lost inside redis-py: the loop checks _closed
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self._release()

    async def _release(self) -> None:
        await self._pool.disconnect()
        await self._ping_pool.disconnect()

    # Keys and names.

    def keys(self, channel: str) -> list[str]:
        """The stream, meta and idempotency keys of ``channel`` (one hash slot)."""
        base = f"{self.prefix}:{{{channel}}}:"
        return [base + "s", base + "m", base + "k"]

    def _live_name(self, channel: str) -> bytes:
        return self._live_prefix + channel.encode()

    def _channel_of(self, name: bytes) -> str | None:
        """The channel of a live name, or None if ``name`` is not one."""
        if not name.startswith(self._live_prefix):
            return None
        return name[len(self._live_prefix) :].decode()

    def _limits(self, channel: str) -> tuple[int, int, int]:
        """History size, age limit in ms and meta lifetime in ms (0: no age limit)."""
        namespace = self._settings.namespace(namespace_of(channel))
        seconds = namespace.history_ttl_seconds
        ttl_ms = 0 if math.isinf(seconds) else max(1, round(seconds * 1000))
        return namespace.history_size, ttl_ms, ttl_ms + META_GRACE_MS if ttl_ms else 0

    # Publishing and history.

    async def publish(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> Event:
        """Store, then fan out, in one script; raise BrokerUnavailable if Redis failed."""
        size, ttl_ms, meta_ms = self._limits(channel)
        key = idempotency_key or ""
        args: list[EncodableT] = [new_epoch(), ttl_ms, meta_ms, size, event, data, key]
        # With WAIT the script stores only; the event is fanned out once replicas hold it.
        args += [b"" if self._wait_replicas else self._live_name(channel), channel]
        with translated("publish"):
            reply = await self._store(self.keys(channel), args)
        stored = stored_event(channel, reply)
        if self._wait_replicas and not repeated(reply):  # a repeat was fanned out, or is late
            await self._fan_out(stored)
        return stored

    async def _fan_out(self, event: Event) -> None:
        """Fan out an event that replicas hold. It is stored and acknowledged whatever
        happens here: if this fails, followers read it from history at the channel's next
        event or resync (a gap), so it is late, never lost."""
        try:
            await self._publish_raw(self._live_name(event.channel), live_body(event))
        except (RedisError, RedisClusterException, OSError) as error:
            log.warning("event %s of %s stored, fan-out failed: %s", event.id, event.channel, error)

    async def _store(self, keys: list[str], args: list[EncodableT]) -> Any:
        """Run APPEND; with ``redis_wait_replicas``, WAIT on the same connection until that
        many replicas hold the write (WAIT counts what this connection wrote)."""
        if not self._wait_replicas:
            return await self._append(keys=keys, args=args)
        async with self._redis.client() as connection:
            reply = await self._append(keys=keys, args=args, client=connection)
            replicas = await connection.wait(self._wait_replicas, WAIT_TIMEOUT_MS)
        confirm(replicas, self._wait_replicas)
        return reply

    async def history(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage:
        _size, ttl_ms, meta_ms = self._limits(channel)
        epoch, start = (since.epoch, since.offset + 1) if since is not None else ("", 0)
        args: list[EncodableT] = [new_epoch(), ttl_ms, meta_ms, epoch, start, limit, PAGE_BYTES]
        async with self._read_turn():
            with translated("history read"):
                try:
                    reply = await self._read(keys=self.keys(channel), args=args)
                except RedisConnectionError:  # a pooled connection Redis closed: reads may retry
                    reply = await self._read(keys=self.keys(channel), args=args)
        return page_of(channel, since, reply)

    def publish_nowait(
        self, channel: str, event: str, data: bytes, idempotency_key: str | None = None
    ) -> None:
        """Events are stored in Redis: always a round trip (``publish``)."""
        return None

    def history_nowait(self, channel: str, since: Cursor | None, limit: int) -> HistoryPage | None:
        """An empty page when ``since`` (or no cursor) is the newest event the link
        delivered of a channel this node follows; else None: history lives in Redis.

        A caught-up follower or long poll then costs no round trip. The answer is the one
        Redis would have given a moment earlier: an event stored since is on its way through
        the link, which wakes whoever waits for it. Heads are forgotten when the link is
        lost, and every channel is resynced once it is back.
        """
        head = self._heads.get(channel)
        if head is None or (since is not None and since != head):
            return None
        return HistoryPage((), head)

    async def recent(self, channel: str, count: int) -> HistoryPage:
        _size, ttl_ms, meta_ms = self._limits(channel)
        args: list[EncodableT] = [new_epoch(), ttl_ms, meta_ms, count]
        async with self._read_turn():
            with translated("history read"):
                try:
                    reply = await self._recent(keys=self.keys(channel), args=args)
                except RedisConnectionError:  # as in history: a read may be sent again
                    reply = await self._recent(keys=self.keys(channel), args=args)
        return recent_page(channel, reply)

    def recent_nowait(self, channel: str, count: int) -> HistoryPage | None:
        return None

    @contextlib.asynccontextmanager
    async def _read_turn(self) -> AsyncIterator[None]:
        """One of READS_AT_ONCE turns to read history; BrokerUnavailable after waiting
        READ_TURN_WAIT."""
        try:
            async with asyncio.timeout(READ_TURN_WAIT):
                await self._reads.acquire()
        except TimeoutError as error:
            raise BrokerUnavailable("Redis is busy: history reads waited too long") from error
        try:
            yield
        finally:
            self._reads.release()

    # Fan-out.

    async def subscribe(self, channel: str) -> None:
        """Return once Redis confirmed the subscription (once started): every event
        published after this returns reaches the sink. What was published before, the
        caller reads from history (the hub resyncs the channel).

        Raises BrokerUnavailable when Redis did not confirm it in time; the interest is kept,
        and the channel is subscribed, and resynced, as soon as the link is back.
        """
        await self._link.want(self._live_name(channel))

    async def unsubscribe(self, channel: str) -> None:
        self._heads.pop(channel, None)
        await self._link.drop(self._live_name(channel))

    async def check(self) -> None:
        """Before ``start``: PING. After: a ping published and received back via pub/sub."""
        with translated("check"):
            if self._sink is None:
                await self._redis.ping()
            else:
                await self._link.round_trip(CHECK_TIMEOUT)

    def _link_connection(self) -> AbstractConnection:
        """A connection for the pub/sub link: no read timeout, no retries, RESP2 messages."""
        options = link_options(self._pool.connection_kwargs, self.client_name("pubsub"))
        connection: AbstractConnection = self._pool.connection_class(**options)
        return connection

    async def _link_lost(self) -> None:
        """The link lost Redis: what it delivered may be behind now, forget the heads;
        idle command connections are likely dead too, drop them."""
        self._heads.clear()
        await self._pool.disconnect(inuse_connections=False)
        await self._ping_pool.disconnect(inuse_connections=False)

    async def _publish_raw(self, name: bytes, body: bytes) -> None:
        await self._redis.publish(name, body)

    async def _ping_raw(self, name: bytes, body: bytes) -> None:
        await self._pinger.publish(name, body)

    def _received(self, body: bytes) -> None:
        try:
            event = live_event(body)
        except ValueError:
            log.warning("dropped a malformed fan-out message: %r", body[:200])
            return
        if self._sink is None:
            return
        head = self._heads.get(event.channel)
        # forward only: with redis_wait_replicas nodes fan out concurrently, out of order
        if head is None or head.epoch != event.epoch or head.offset < event.offset:
            self._heads[event.channel] = event.cursor
        # the node's bug must not take the link down for every channel
        self._supervisor.run(self._sink, event)

    def _presence_received(self, body: bytes) -> None:
        try:
            change = decode_change(body)
        except ValueError:
            log.warning("dropped a malformed presence message: %r", body[:200])
            return
        if self._presence_sink is not None:
            self._supervisor.run(self._presence_sink, change)  # as for events

    def _control_received(self, body: bytes) -> None:
        try:
            message = decode_control(body)
        except ValueError:
            log.warning("dropped a malformed control message: %r", body[:200])
            return
        if self._control_sink is not None:
            self._supervisor.run(self._control_sink, message)  # as for events

    def _subscribed(self, name: bytes) -> None:
        channel = self._channel_of(name)
        if self._resync is not None and channel is not None:
            self._resync(channel)

    # Presence (redis_presence.py).

    async def presence_add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        with translated("presence add"):
            await self._presence.add(entries, lifetime)

    async def presence_remove(self, entries: Sequence[PresenceEntry]) -> None:
        with translated("presence remove"):
            await self._presence.remove(entries)

    async def presence_list(self, channel: str) -> list[PresenceEntry]:
        with translated("presence read"):
            return await self._presence.entries(channel)

    async def presence_sweep(self, channels: Sequence[str]) -> None:
        with translated("presence sweep"):
            await self._presence.sweep(channels)

    # Control between nodes, and revocations.

    async def broadcast_control(self, message: Control) -> None:
        """PUBLISH on the control channel: every node's link (on Redis Cluster, one shard
        link per node, as classic pub/sub reaches every shard) hands it to its sink."""
        with translated("control message"):
            await self._redis.publish(self._control_fanout, encode_control(message))

    async def revoke(self, revocation: Revocation) -> None:
        now = time.time()
        keep_ms = max(1, math.ceil((revocation.until - now) * 1000))
        args: list[EncodableT] = [
            revocation.sub,
            encode_revocation(revocation),
            now,
            keep_ms,
        ]
        with translated("revocation"):
            await self._revoke(keys=[self._revoked_key], args=args)

    async def revocations(self) -> list[Revocation]:
        with translated("revocations read"):
            held = await self._redis.hgetall(self._revoked_key)
        now = time.time()
        found = []
        for sub, value in held.items():
            try:
                revocation = decode_revocation(sub.decode(), value)
            except ValueError:
                continue  # not written by Tidings
            if revocation.until > now:
                found.append(revocation)
        return found

    # Keeping followed channels' epochs.

    async def _refresh_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(META_REFRESH_SECONDS)
            try:
                await self.refresh_followed()
            except (RedisError, RedisClusterException, OSError) as error:
                log.warning("could not refresh the expiry of followed channels: %s", error)

    async def refresh_followed(self) -> None:
        """Push back the expiry of every followed channel's epoch and offset."""
        named = (self._channel_of(name) for name in self._link.wanted)
        channels = [channel for channel in named if channel is not None]
        for start in range(0, len(channels), REFRESH_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels[start : start + REFRESH_CHUNK]:
                    _size, ttl_ms, meta_ms = self._limits(channel)
                    if ttl_ms:
                        pipe.pexpire(self.keys(channel)[1], meta_ms)
                await pipe.execute()
