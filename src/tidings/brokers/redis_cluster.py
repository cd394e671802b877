"""``redis+cluster://``: the ``redis://`` broker on Redis Cluster (7.0 or later).

URL: ``redis+cluster://[[user]:password@]host:port[,host:port...][?prefix=]``, a few of the
cluster's nodes (the others are discovered). What changes from redis.py:

- **One slot per channel.** A channel's keys carry the hash tag ``{<channel>}`` (the same
  names as on one server, see redis_scripts), so its offset, epoch, stream and idempotency
  keys live on one shard and the APPEND script stays atomic there.
- **Sharded pub/sub** (redis_shards.py): APPEND ends with ``SPUBLISH`` on
  ``<prefix>:live:{<channel>}``, in the same slot, so an event is fanned out by the shard
  that stored it and by no other.
- **Failover.** When a primary dies its replica is promoted after ``cluster-node-timeout``
  and an election. Meanwhile the channels of that shard fail: publishes raise
  BrokerUnavailable (a 503 with ``Retry-After``), and ``check`` fails because that shard's
  link is down; the other shards keep serving. The link rebuilds on the promoted replica and
  resyncs its channels from history. No command is retried by the client (a retried publish
  could store twice).
- **Acknowledged writes** are on the primary only: replication is asynchronous, so a
  failover can lose the last ones. With ``server.redis_wait_replicas`` a publish is
  acknowledged only once that many replicas hold it (README, "Beyond one broker server").
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.typing import EncodableT

from tidings.brokers.redis import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_PREFIX,
    POOL_SIZE,
    WAIT_TIMEOUT_MS,
    Commands,
    Fanout,
    RedisBroker,
    checked_prefix,
    confirm,
    link_options,
)
from tidings.brokers.redis_addresses import parse_addresses
from tidings.brokers.redis_link import PubSubLink
from tidings.brokers.redis_scripts import SHARDED_APPEND
from tidings.brokers.redis_shards import CLUSTER_ERRORS, ShardedLinks
from tidings.exceptions import BrokerUnavailable, ConfigError


class ClusterBroker(RedisBroker):
    """The Redis broker over the shards of a Redis Cluster."""

    APPEND_SCRIPT = SHARDED_APPEND  # ends with SPUBLISH, in the channel's slot

    def _connect(self, url: str) -> tuple[str, Commands]:
        where = parse_addresses(url, ("prefix",))
        if where.path:
            raise ConfigError("server.broker", f"{url!r}: Redis Cluster has no databases")
        prefix = checked_prefix(where.options.get("prefix", DEFAULT_PREFIX))
        self._username, self._password = where.username, where.password
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in where.hosts],
            max_connections=POOL_SIZE,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a retried publish could store twice
            client_name=self.client_name("commands", prefix),
            username=where.username,
            password=where.password,
        )
        self._primaries: dict[str, Redis] = {}
        return prefix, self._cluster

    def _fanout_link(self) -> Fanout:
        return ShardedLinks(
            self._cluster,
            f"{self.prefix}:ping:{self.node}",
            self._shard_link,
            lambda kwargs: link_options(kwargs, self.client_name("pubsub")),
        )

    def _shard_link(
        self,
        ping: bytes,
        connect: Callable[[], AbstractConnection],
        on_lost: Callable[[], Awaitable[None]],
        carries_side: bool,
    ) -> PubSubLink:
        side = self._side_channels() if carries_side else {}

        async def lost() -> None:
            # what any shard's link delivered may be behind now: caught-up reads go to Redis
            # until the resync after the link is back, as when a single Redis's link is lost
            self._heads.clear()
            await on_lost()

        return PubSubLink(
            connect,
            self._publish_raw,
            ping,
            self._received,
            self._subscribed,
            lost,
            side,
            sharded=True,
        )

    async def _release(self) -> None:
        for primary in self._primaries.values():
            await primary.aclose()
        await self._cluster.aclose()

    # Names: a live channel shares its channel's slot.

    def _live_name(self, channel: str) -> bytes:
        return self._live_prefix + b"{" + channel.encode() + b"}"

    def _channel_of(self, name: bytes) -> str | None:
        if not (name.startswith(self._live_prefix) and name.endswith(b"}")):
            return None
        return name[len(self._live_prefix) + 1 : -1].decode()

    async def _publish_raw(self, name: bytes, body: bytes) -> None:
        try:
            await self._cluster.spublish(name, body)
        except RedisClusterException as error:  # the link expects Redis errors only
            raise RedisConnectionError(f"Redis Cluster: {error}") from error

    async def _store(self, keys: list[str], args: list[EncodableT]) -> Any:
        """APPEND on the channel's shard; WAIT, as on one server, on the connection that
        wrote, which the cluster client cannot pin: a client of that primary's own does."""
        if not self._wait_replicas:
            return await self._append(keys=keys, args=args)
        primary = await self._primary_of(keys[0])
        try:
            async with primary.client() as connection:
                reply = await self._append(keys=keys, args=args, client=connection)
                replicas = await connection.wait(self._wait_replicas, WAIT_TIMEOUT_MS)
        except (RedisError, OSError):
            await self._relearn(keys[1])
            raise
        confirm(replicas, self._wait_replicas)
        return reply

    async def _relearn(self, key: str) -> None:
        """The primary failed or answered MOVED: a read of the same slot through the cluster
        client makes it refresh its slot table, so the next publish finds the new primary."""
        with contextlib.suppress(*CLUSTER_ERRORS):
            await self._cluster.exists(key)

    async def _primary_of(self, key: str) -> Redis:
        """A client of the primary that holds ``key`` as the slot table says (a stale table
        gets a MOVED error: a 503, and the table is refreshed by the links meanwhile)."""
        await self._cluster.initialize()  # once: the table is read on first use
        try:
            node = self._cluster.get_node_from_key(key)
        except RedisClusterException as error:
            raise BrokerUnavailable(f"Redis Cluster: {error}") from error
        if node is None:
            raise BrokerUnavailable("Redis Cluster names no primary for this channel")
        primary = self._primaries.get(node.name)
        if primary is None:
            primary = self._primaries[node.name] = Redis(
                host=node.host,
                port=int(node.port),
                max_connections=POOL_SIZE,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                client_name=self.client_name("commands"),
                username=self._username,
                password=self._password,
            )
        return primary
