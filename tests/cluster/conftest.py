"""Fixtures for the cluster tests: nodes that are always stopped, brokers on unique prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.cluster.support import Node, start_nodes
from tests.nats.support import NATS_URL, isolated_nats_url
from tests.redis.support import REDIS_URL, isolated_redis_url

StartNodes = Callable[..., Awaitable[list[Node]]]


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> str:
    """The broker's URL, with a prefix of the test's own."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def start() -> AsyncIterator[StartNodes]:
    """``await start(broker_url, 3, env)``: that many nodes (with ``TIDINGS_*`` from ``env``);
    every one is stopped at the end."""
    started: list[Node] = []

    async def make(broker: str, count: int, env: dict[str, str] | None = None) -> list[Node]:
        return await start_nodes(broker, count, started, env)

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
