"""Fixtures for the cluster tests: nodes that are always stopped, brokers on unique prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.cluster.support import Node, start_nodes
from tests.nats.support import NATS_URL, isolated_nats_url
from tests.redis.support import REDIS_URL, isolated_redis_url

StartNodes = Callable[[str, int], Awaitable[list[Node]]]


@pytest.fixture
async def start() -> AsyncIterator[StartNodes]:
    """``await start(broker_url, 3)``: that many nodes; every one is stopped at the end."""
    started: list[Node] = []

    async def make(broker: str, count: int) -> list[Node]:
        return await start_nodes(broker, count, started)

    yield make
    for node in started:
        node.stop()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with isolated_redis_url(REDIS_URL) as url:
        yield url


@pytest.fixture
async def nats_url() -> AsyncIterator[str]:
    async with isolated_nats_url(NATS_URL) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client
