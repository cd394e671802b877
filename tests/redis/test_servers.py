"""Two Tidings servers (two nodes) on one Redis, end to end over HTTP and SSE."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import RunningServer
from tests.server.support import (
    apublish,
    async_http_client,
    epoch,
    offset,
    publish,
    sse_stream,
)

pytestmark = pytest.mark.timeout(30)

MakeServer = Callable[..., RunningServer]


@pytest.fixture
def nodes(make_server: MakeServer, redis_url: str, prefix: str) -> tuple[RunningServer, ...]:
    broker = f"{redis_url}?prefix={prefix}"
    return make_server(broker=broker), make_server(broker=broker)


async def test_an_event_published_on_one_node_reaches_a_stream_on_the_other(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    a, b = nodes
    async with async_http_client(b) as client, sse_stream(client, "/sse?channel=news") as stream:
        cursor = publish(a, "news", {"n": 1})
        message = await stream.next()
        assert (message.last_event_id, message.data) == (cursor, '{"n":1}')


async def test_a_client_resumes_on_another_node_exactly(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    a, b = nodes
    first = publish(a, "news", 1)
    async with async_http_client(b) as on_b:
        later = [await apublish(on_b, "news", n) for n in (2, 3)]
    assert [epoch(cursor) for cursor in later] == [epoch(first)] * 2
    assert [offset(cursor) for cursor in [first, *later]] == [1, 2, 3]
    async with (
        async_http_client(a) as on_a,
        sse_stream(on_a, "/sse?channel=news", {"Last-Event-ID": first}) as stream,
    ):
        assert [(await stream.next()).last_event_id for _ in later] == later


async def test_both_nodes_are_ready(nodes: tuple[RunningServer, RunningServer]) -> None:
    for node in nodes:
        async with async_http_client(node) as client:
            response = await client.get("/readyz")
            assert response.status_code == 200, response.text
