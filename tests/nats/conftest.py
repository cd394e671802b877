"""Fixtures for the NATS-only tests: a prefix of the test's own on the shared server, or a
server of the test's own."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.nats.support import NATS_SERVER, NATS_URL, PrivateNats, isolated_nats_url, require_nats
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


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    """A nats-server on a free port, not started yet; stopped at the end whatever happens."""
    await require_nats()  # nats-py and a NATS to compare with; skipped loudly otherwise
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip(f"NATS-SERVER IS NOT INSTALLED at {NATS_SERVER}: outage tests did not run")
    server = PrivateNats(tmp_path / "jetstream")
    try:
        yield server
    finally:
        await server.stop()
