"""Fixtures of the hub's unit tests: a started Hub on a memory broker, closed afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from tidings.brokers import broker_for
from tidings.config import load_settings
from tidings.hub.hub import Hub

MakeHub = Callable[..., Hub]


@pytest.fixture
async def make_hub() -> AsyncIterator[MakeHub]:
    """``make_hub({"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "5"})``: a started hub."""
    made: list[Hub] = []

    def make(environ: Mapping[str, str] | None = None) -> Hub:
        settings = load_settings(environ=dict(environ or {}))
        hub = Hub(broker_for("memory://", settings), settings, asyncio.get_running_loop())
        hub.start()
        made.append(hub)
        return hub

    yield make
    for hub in made:
        await hub.close()


@pytest.fixture
async def hub(make_hub: MakeHub) -> Hub:
    return make_hub()
