"""Fixtures of the Redis tests: nodes (brokers) on the shared Redis or on a private server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from tests.redis.support import PrivateRedis, delete_keys, require_redis, unique_prefix
from tidings.brokers import broker_for
from tidings.brokers.redis import RedisBroker
from tidings.config import load_settings


@pytest.fixture
def redis_url() -> str:
    """The shared Redis; skipped loudly (failed under CI=true) when it is not running."""
    return require_redis()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of the test's own; its keys on the shared Redis are deleted afterwards."""
    unique = unique_prefix()
    yield unique
    await delete_keys(redis_url, unique)


MakeNode = Callable[..., RedisBroker]


@pytest.fixture
async def make_node(redis_url: str, prefix: str) -> AsyncIterator[MakeNode]:
    """``make_node()``: a broker (one "node") with the test's prefix; closed afterwards.

    ``make_node(url=...)`` puts it on another Redis, ``make_node(environ={...})`` sets
    ``TIDINGS_*`` settings.
    """
    made: list[RedisBroker] = []

    def make(url: str | None = None, environ: Mapping[str, str] | None = None) -> RedisBroker:
        settings = load_settings(environ=dict(environ or {}))
        broker = broker_for(f"{url or redis_url}?prefix={prefix}", settings)
        assert isinstance(broker, RedisBroker)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


MakeRedis = Callable[..., PrivateRedis]


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[MakeRedis]:
    """``private_redis(appendonly=True)``: a redis-server of the test's own, not started yet."""
    servers: list[PrivateRedis] = []

    def make(appendonly: bool = False) -> PrivateRedis:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = PrivateRedis(directory, appendonly)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()
