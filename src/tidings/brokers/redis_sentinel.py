"""``redis+sentinel://``: the ``redis://`` broker on the primary that Redis Sentinel names.

URL: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[?prefix=&db=]``,
the addresses being the sentinels'. Everything in redis.py holds; what Sentinel adds:

- Each new connection asks the sentinels for the current primary, so after a failover the
  command connections and the fan-out link (rebuilt as soon as its ping stops coming back)
  reach the promoted replica. Until then publishes fail with BrokerUnavailable (a 503 with
  ``Retry-After``) and ``check`` fails.
- Replication is asynchronous: a publish acknowledged by the old primary just before it died
  may not have reached the replica that is promoted, and is then lost. With
  ``server.redis_wait_replicas = 1`` a publish is acknowledged only once a replica holds it
  (README, "Beyond one broker server", has the measured loss and cost).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from tidings.brokers.redis import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_PREFIX,
    POOL_SIZE,
    Commands,
    RedisBroker,
    checked_prefix,
)
from tidings.brokers.redis_addresses import parse_addresses
from tidings.exceptions import ConfigError


class SentinelBroker(RedisBroker):
    """The Redis broker on the primary of a Sentinel-watched group."""

    def _connect(self, url: str) -> tuple[str, Commands]:
        where = parse_addresses(url, ("prefix", "db"))
        if not where.path or "/" in where.path:
            raise ConfigError("server.broker", f"{url!r}: name the primary: .../master-name")
        prefix = checked_prefix(where.options.get("prefix", DEFAULT_PREFIX))
        db = where.options.get("db", "0")
        if not db.isdigit():
            raise ConfigError("server.broker", f"{url!r}: db must be a number")
        sentinels = Sentinel(
            list(where.hosts),
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        client: Redis = sentinels.master_for(
            where.path,
            db=int(db),
            username=where.username,
            password=where.password,
            max_connections=POOL_SIZE,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a retried publish could store twice
            client_name=self.client_name("commands", prefix),
        )
        self._pool = client.connection_pool
        # Kept apart: redis-py reorders Sentinel.sentinels as it asks them, and concurrent
        # lookups during a failover can drop one from that list, which then never closes.
        self._sentinel_clients = list(sentinels.sentinels)
        return prefix, client

    async def _release(self) -> None:
        try:
            await super()._release()
        finally:
            for sentinel in self._sentinel_clients:
                await sentinel.aclose()
