"""Two Tidings servers on one NATS: what a client sees across nodes, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    async_http_client,
    epoch,
    offset,
    publish,
    sse_stream,
    wait_until,
    waiter_count,
)

pytestmark = pytest.mark.timeout(30)

MakeServer = Callable[..., RunningServer]


async def test_an_event_published_on_one_node_streams_from_another(
    make_server: MakeServer, nats_url: str
) -> None:
    a, b = make_server(broker=nats_url), make_server(broker=nats_url)
    async with async_http_client(b) as client, sse_stream(client, "/sse?channel=news") as stream:
        assert offset(stream.start) == 0
        cursor = await asyncio.to_thread(publish, a, "news", {"n": 1})
        message = await stream.next()
        assert (message.last_event_id, message.data) == (cursor, '{"n":1}')
        assert epoch(cursor) == epoch(stream.start)


async def test_a_client_resumes_on_another_node_from_its_cursor(
    make_server: MakeServer, nats_url: str
) -> None:
    a, b = make_server(broker=nats_url), make_server(broker=nats_url)
    first = await asyncio.to_thread(publish, a, "chat:lobby", "one")
    missed = [await asyncio.to_thread(publish, a, "chat:lobby", n) for n in ("two", "three")]
    async with async_http_client(b) as client:
        answer = await client.get("/poll", params={"channel": "chat:lobby", "since": first})
        body = answer.json()
        assert [event["id"] for event in body["events"]] == missed
        poll = client.get(
            "/poll", params={"channel": "chat:lobby", "since": body["cursor"], "timeout": 10}
        )
        held = asyncio.ensure_future(poll)
        await wait_until(lambda: waiter_count(b, "chat:lobby") == 1, "the held poll on b")
        later = await asyncio.to_thread(publish, a, "chat:lobby", "four")
        answered = (await asyncio.wait_for(held, TIMEOUT)).json()
        assert [(event["id"], event["data"]) for event in answered["events"]] == [(later, "four")]


async def test_both_nodes_are_ready(make_server: MakeServer, nats_url: str) -> None:
    for node in (make_server(broker=nats_url), make_server(broker=nats_url)):
        async with async_http_client(node) as client:
            assert (await client.get("/readyz")).status_code == 200
