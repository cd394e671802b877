"""The fan-out of ``redis+cluster://``: one sharded pub/sub link per shard of Redis Cluster.

- A channel's live name, ``<prefix>:live:{<channel>}``, hashes to the slot of the channel's
  keys, so the APPEND script SPUBLISHes it on the shard that stored the event, and only the
  nodes' connections to that shard carry it: fan-out traffic crosses no other shard, and no
  message travels the cluster bus.
- The shards are read (``CLUSTER SLOTS``) when the fan-out starts: one PubSubLink per
  primary's slot ranges, each watched by a ping on a channel hashed into its own slots, so a
  shard that fails is noticed on its own. A link connects to the node that the cluster
  client's slot table names for its ping channel: after a failover, once the table is
  refreshed (each lost link asks for it), the promoted replica.
- Slots moved to another shard while nodes run (resharding) are not followed: restart the
  nodes after a resharding.
- The presence channel is classic pub/sub, carried by the first shard's link: Redis Cluster
  forwards classic messages to every shard, and every node needs every presence change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from tidings.brokers.redis_link import BACKOFF_CAP, BACKOFF_FIRST, SUBSCRIBE_TIMEOUT, PubSubLink
from tidings.exceptions import BrokerUnavailable
from tidings.supervisor import Supervisor

log = logging.getLogger("tidings.brokers.redis")

SLOTS = 16384
TAG_SEARCH = 100_000  # tags tried to hash a ping channel into a shard's slots

# (ping channel, connect, on losing the shard, carries the side channels) -> a link
MakeLink = Callable[
    [bytes, Callable[[], AbstractConnection], Callable[[], Awaitable[None]], bool], PubSubLink
]
# A node's connection options -> the options of a link's connection to it
LinkOptions = Callable[[dict[str, Any]], dict[str, Any]]
CLUSTER_ERRORS = (RedisError, RedisClusterException, OSError)


class ShardedLinks:
    """The Fanout of redis.py over every shard: routes each channel to its shard's link."""

    def __init__(
        self, cluster: RedisCluster, ping_prefix: str, make_link: MakeLink, options: LinkOptions
    ) -> None:
        self._cluster = cluster
        self._ping_prefix = ping_prefix
        self._make_link = make_link
        self._options = options
        self.wanted: set[bytes] = set()
        self._links: list[PubSubLink] = []
        self._by_slot: list[PubSubLink | None] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._supervisor: Supervisor | None = None

    def start(self, supervisor: Supervisor | None = None) -> None:
        self._supervisor = supervisor
        self._task = asyncio.get_running_loop().create_task(self._begin())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(link.close() for link in self._links))

    async def want(self, name: bytes) -> None:
        """Subscribe on the channel's shard; BrokerUnavailable (interest kept) if not in time."""
        self.wanted.add(name)
        if self._task is None:
            return
        await self._until_ready(SUBSCRIBE_TIMEOUT)
        await self._link_of(name).want(name)

    async def drop(self, name: bytes) -> None:
        self.wanted.discard(name)
        if self._ready.is_set():
            await self._link_of(name).drop(name)

    async def round_trip(self, timeout: float) -> None:
        """A ping through every shard's link: one shard down fails it."""
        await self._until_ready(timeout)
        outcomes = await asyncio.gather(
            *(link.round_trip(timeout) for link in self._links), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _until_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError as error:
            raise BrokerUnavailable("Redis Cluster's shards are not known yet") from error

    def _link_of(self, name: bytes) -> PubSubLink:
        link = self._by_slot[self._cluster.keyslot(name)]
        if link is None:
            raise BrokerUnavailable("no shard of Redis Cluster held this channel's slot")
        return link

    # Finding the shards.

    async def _begin(self) -> None:
        """Read the shards (retrying with backoff while the cluster is unreachable), then
        start a link on each, subscribed to the channels wanted meanwhile."""
        delay = BACKOFF_FIRST
        while not self._closing:
            try:
                slots: Any = await self._cluster.cluster_slots()  # parsed: a dict
                break
            except CLUSTER_ERRORS as error:
                log.warning("Redis Cluster: cannot read its slots (%s); retrying", error)
            await asyncio.sleep(delay)
            delay = min(BACKOFF_CAP, delay * 2)
        else:
            return
        shards: dict[object, list[tuple[int, int]]] = {}
        for (low, high), holders in slots.items():
            shards.setdefault(holders["primary"], []).append((int(low), int(high)))
        self._by_slot = [None] * SLOTS
        for ranges in shards.values():
            ping = self._ping_channel(ranges)
            link = self._make_link(
                ping, self._connector(ping), self._refresher(ping), not self._links
            )
            for low, high in ranges:
                for slot in range(low, high + 1):
                    self._by_slot[slot] = link
            self._links.append(link)
        for name in self.wanted:
            self._link_of(name).wanted.add(name)
        for link in self._links:
            link.start(self._supervisor)
        self._ready.set()

    def _ping_channel(self, ranges: list[tuple[int, int]]) -> bytes:
        """A ping channel name whose hash tag puts it in one of ``ranges``."""
        for n in range(TAG_SEARCH):
            name = f"{self._ping_prefix}:{{{n}}}".encode()
            slot = self._cluster.keyslot(name)
            if any(low <= slot <= high for low, high in ranges):
                return name
        raise RuntimeError(f"no tag below {TAG_SEARCH} hashes into {ranges}")

    def _connector(self, ping: bytes) -> Callable[[], AbstractConnection]:
        def connect() -> AbstractConnection:
            try:
                node = self._cluster.get_node_from_key(ping.decode())
            except RedisClusterException as error:
                raise RedisConnectionError(str(error)) from error
            if node is None:
                raise RedisConnectionError("Redis Cluster names no node for a shard")
            options = self._options(node.connection_kwargs)
            connection: AbstractConnection = node.connection_class(**options)
            return connection

        return connect

    def _refresher(self, ping: bytes) -> Callable[[], Awaitable[None]]:
        async def refresh() -> None:
            """A link lost its shard: a command to that shard through the cluster client
            makes the client refresh its slot table (on a connection error, or once a
            failover moved the slots), so the link's next connection finds the new primary."""
            with contextlib.suppress(*CLUSTER_ERRORS):
                await self._cluster.spublish(ping, b"")

        return refresh
