"""Fixtures for the server tests: HTTP clients bound to the default ``server``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from tests.conftest import RunningServer
from tests.server.support import async_http_client, http_client


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with http_client(server) as client:
        yield client


@pytest.fixture
async def ahttp(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with async_http_client(server) as client:
        yield client


@pytest.fixture
def make_http(
    make_server: Callable[..., RunningServer],
) -> Iterator[Callable[[RunningServer], httpx.Client]]:
    """``make_http(server)``: a client for a server from ``make_server``, closed afterwards."""
    clients: list[httpx.Client] = []

    def make(server: RunningServer) -> httpx.Client:
        client = http_client(server)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
