"""Fixtures for the NATS-only tests: a prefix of the test's own on the shared server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import pytest

from tests.nats.support import NATS_URL, isolated_nats_url
from tidings.config import Settings, load_settings

if TYPE_CHECKING:
    from tidings.brokers.nats import NatsBroker

MakeNats = Callable[..., "NatsBroker"]


def settings_for(url: str, environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(environ={**(environ or {}), "TIDINGS_SERVER_BROKER": url})


@pytest.fixture
async def nats_url() -> AsyncIterator[str]:
    """``nats://127.0.0.1:4222?prefix=<unique>``; skipped loudly when NATS is not running."""
    async with isolated_nats_url(NATS_URL) as url:
        yield url


@pytest.fixture
async def make_nats(nats_url: str) -> AsyncIterator[MakeNats]:
    """``make_nats()``: one more node (a NatsBroker) on the test's prefix, closed afterwards."""
    from tidings.brokers.nats import NatsBroker

    made: list[NatsBroker] = []

    def make(environ: Mapping[str, str] | None = None, url: str | None = None) -> NatsBroker:
        broker = NatsBroker(url or nats_url, settings_for(url or nats_url, environ))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()
