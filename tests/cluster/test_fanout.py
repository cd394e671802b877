"""Three real nodes on one broker: what is published to one reaches subscribers on the others,
over every technique, in order, at exact offsets."""

from __future__ import annotations

import contextlib
import uuid

import httpx
import pytest

import tidings
from tests.client.support import FAST, collect
from tests.cluster.conftest import StartNodes
from tests.cluster.support import offset, publish

TRANSPORTS = ["websocket", "sse", "long_poll", "poll"]
COUNT = 30


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, URL with a prefix of the test's own)."""
    return request.param, str(request.getfixturevalue(f"{request.param}_url"))


async def test_events_published_to_one_node_reach_every_technique_on_the_others(
    broker: tuple[str, str], start: StartNodes, http: httpx.AsyncClient
) -> None:
    _, url = broker
    a, b, c = await start(url, 3)
    channel = "fanout-" + uuid.uuid4().hex[:8]
    first = await publish(http, a, channel, {"n": 0})
    assert offset(first) == 1

    async with contextlib.AsyncExitStack() as stack:
        collectors = []
        for node in (b, c):
            for transport in TRANSPORTS:
                client = await stack.enter_async_context(
                    tidings.connect(node.url, transport=transport, **FAST)
                )
                seen = await stack.enter_async_context(
                    collect(client.subscribe(channel, since=first))
                )
                collectors.append((node.port, transport, seen))

        ids = [await publish(http, a, channel, {"n": n}) for n in range(1, COUNT + 1)]
        assert [offset(cursor) for cursor in ids] == list(range(2, COUNT + 2))

        for port, transport, seen in collectors:
            try:
                events = await seen.wait_events(COUNT, timeout=20)
            except AssertionError as error:
                logs = "\n".join(f"--- node {n.port}\n{n.logs()[-3000:]}" for n in (a, b, c))
                got = [offset(event.id) for event in seen.events]
                raise AssertionError(
                    f"{transport} on {port}: {error}; offsets {got}\n{logs}"
                ) from None
            assert [event.id for event in events] == ids, (port, transport)
            assert [event.data for event in events] == [{"n": n} for n in range(1, COUNT + 1)]
            assert all(event.channel == channel for event in events)
