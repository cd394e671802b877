"""``rewind=N`` (docs/protocol.md sections 1, 4, 5 and 6): a subscription without a cursor
starts with the last N events of history, then goes on live, on every technique.

Every test runs on both edges and on each broker: memory:// answers from this process
(no await between the read and the subscription), redis:// and nats:// through I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import RunningServer
from tests.nats.support import NATS_URL, isolated_nats_url
from tests.redis.support import REDIS_URL, isolated_redis_url
from tests.server.support import (
    apublish,
    async_http_client,
    offset,
    query,
    sse_stream,
)
from tests.server.test_poll import start_long_poll
from tests.server.test_websocket import receive, request, subscribe, websocket

pytestmark = pytest.mark.timeout(60)

BROKERS = ["memory://", REDIS_URL, NATS_URL]
SMALL_HISTORY = 3


@pytest.fixture(params=BROKERS, ids=["memory", "redis", "nats"])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    url: str = request.param
    if url.startswith("redis"):
        async with isolated_redis_url(url) as isolated:
            yield isolated
    elif url.startswith("nats"):
        async with isolated_nats_url(url) as isolated:
            yield isolated
    else:
        yield url


@pytest.fixture
def node(make_server: Callable[..., RunningServer], broker_url: str) -> RunningServer:
    """History of ``SMALL_HISTORY`` events per channel; rewinds of at most 10."""
    return make_server(
        broker=broker_url, max_rewind=10, namespaces__default__history_size=SMALL_HISTORY
    )


@pytest.fixture
async def client(node: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with async_http_client(node) as http:
        yield http


async def published(client: httpx.AsyncClient, channel: str, count: int) -> list[str]:
    return [await apublish(client, channel, n) for n in range(1, count + 1)]


def before(cursor: str) -> str:
    """The cursor just before ``cursor``, in the same epoch."""
    epoch, _, number = cursor.rpartition(".")
    return f"{epoch}.{int(number) - 1}"


# SSE


async def test_sse_starts_with_the_last_events_then_goes_live(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 3)
    async with sse_stream(client, "/sse?" + query(["news"], rewind=2)) as stream:
        assert stream.start == before(ids[1])
        rewound = await stream.take(2)
        assert [(m.last_event_id, m.data) for m in rewound] == [(ids[1], "2"), (ids[2], "3")]
        live = await apublish(client, "news", "live")
        message = await stream.next()
        assert (message.last_event_id, message.data) == (live, '"live"')


async def test_sse_rewind_beyond_history_gives_what_it_holds_without_a_reset(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 5)  # history holds the last 3
    async with sse_stream(client, "/sse?" + query(["news"], rewind=10)) as stream:
        assert stream.start == before(ids[2])
        rewound = await stream.take(3)
        assert [m.last_event_id for m in rewound] == ids[2:]
        assert {m.event for m in rewound} == {"message"}


async def test_sse_rewind_with_a_cursor_is_ignored(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 3)
    target = "/sse?" + query(["news"], rewind=3, since=ids[1])
    async with sse_stream(client, target) as stream:
        assert stream.start == ids[1]
        message = await stream.next()
        assert (message.last_event_id, message.data) == (ids[2], "3")
    headers = {"Last-Event-ID": ids[2]}  # a browser's own reconnect: nothing missed
    async with sse_stream(client, "/sse?" + query(["news"], rewind=3), headers) as stream:
        assert stream.start == ids[2]
        live = await apublish(client, "news", "after")
        assert (await stream.next()).last_event_id == live


async def test_sse_rewinds_every_channel_and_of_an_empty_one_starts_now(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    a = await published(client, "a", 2)
    async with sse_stream(client, "/sse?" + query(["a", "empty"], rewind=5, envelope=1)) as s:
        start_a, start_empty = s.start.split(",")
        assert start_a == before(a[0])
        assert offset(start_empty) == 0
        rewound = [orjson.loads((await s.next()).data) for _ in range(2)]
        assert [(e["channel"], e["id"]) for e in rewound] == [("a", a[0]), ("a", a[1])]
        live = await apublish(client, "empty", "first")
        event = orjson.loads((await s.next()).data)
        assert (event["channel"], event["id"]) == ("empty", live)


async def test_rewind_is_lowered_to_max_rewind(
    make_server: Callable[..., RunningServer], broker_url: str
) -> None:
    server = make_server(broker=broker_url, max_rewind=2)
    async with async_http_client(server) as client:
        ids = await published(client, "news", 5)
        answer = await client.get("/poll?" + query(["news"], rewind=1000))
        assert [e["id"] for e in answer.json()["events"]] == ids[3:]


# Polls


async def test_a_short_poll_answers_the_last_events_and_the_cursor_after_them(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 5)
    answer = await client.get("/poll?" + query(["news"], rewind=10))
    assert answer.status_code == 200
    body = answer.json()
    assert [(e["id"], e["data"]) for e in body["events"]] == [(ids[2], 3), (ids[3], 4), (ids[4], 5)]
    assert body["cursor"] == ids[4]
    assert "resets" not in body


async def test_a_rewound_poll_pages_by_limit_and_continues_exactly(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 3)
    first = (await client.get("/poll?" + query(["news"], rewind=3, limit=2))).json()
    assert [e["id"] for e in first["events"]] == ids[:2]
    assert first["cursor"] == ids[1]
    rest = (await client.get("/poll?" + query(["news"], since=first["cursor"]))).json()
    assert [e["id"] for e in rest["events"]] == ids[2:]


async def test_a_rewound_poll_with_a_cursor_ignores_the_rewind(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 3)
    body = (await client.get("/poll?" + query(["news"], rewind=3, since=ids[1]))).json()
    assert [e["id"] for e in body["events"]] == ids[2:]


async def test_a_rewound_long_poll_on_an_empty_channel_waits_for_the_next_event(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    held = await start_long_poll(node, client, ["quiet"], rewind=5, timeout=10)
    live = await apublish(client, "quiet", "news")
    answer = await asyncio.wait_for(held, 10)
    assert [e["id"] for e in answer.json()["events"]] == [live]


async def test_a_rewound_long_poll_answers_at_once_from_history(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 2)
    answer = await client.get("/poll?" + query(["news"], rewind=1, timeout=10))
    assert [e["id"] for e in answer.json()["events"]] == ids[1:]


@pytest.mark.parametrize("value", ["-1", "x", "1.5", "+2", " 3", "true"])
@pytest.mark.parametrize("path", ["/sse", "/poll"])
async def test_a_rewind_that_is_not_a_whole_number_is_refused(
    node: RunningServer, client: httpx.AsyncClient, path: str, value: str
) -> None:
    answer = await client.get(f"{path}?" + query(["news"], rewind=value))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_field"
    with_cursor = await client.get(f"{path}?" + query(["news"], rewind=value, since="e.0"))
    assert with_cursor.status_code == 400  # ignored with a cursor, but still checked


# WebSocket


async def test_websocket_subscribe_rewinds_then_goes_live(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 5)
    async with websocket(node) as ws:
        answer = await subscribe(ws, "news", ref=1, rewind=10)
        assert answer == {"op": "subscribed", "ref": 1, "channel": "news", "id": before(ids[2])}
        rewound = [await receive(ws) for _ in range(3)]
        assert [(m["op"], m["id"], m["data"]) for m in rewound] == [
            ("event", ids[2], 3),
            ("event", ids[3], 4),
            ("event", ids[4], 5),
        ]
        live = await apublish(client, "news", "live")
        assert (await receive(ws))["id"] == live


async def test_websocket_rewind_with_since_is_ignored(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 3)
    async with websocket(node) as ws:
        answer = await subscribe(ws, "news", ref=2, rewind=3, since=ids[1])
        assert (answer["id"], answer["recovered"]) == (ids[1], True)
        assert (await receive(ws))["id"] == ids[2]
        live = await apublish(client, "news", "live")
        assert (await receive(ws))["id"] == live


async def test_websocket_rewind_of_zero_starts_now(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    ids = await published(client, "news", 2)
    async with websocket(node) as ws:
        answer = await subscribe(ws, "news", ref=3, rewind=0)
        assert answer["id"] == ids[1]
        live = await apublish(client, "news", "live")
        assert (await receive(ws))["id"] == live


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, [1]])
async def test_a_websocket_rewind_that_is_not_a_whole_number_is_an_error(
    node: RunningServer, value: Any
) -> None:
    async with websocket(node) as ws:
        answer = await request(
            ws, {"op": "subscribe", "channel": "news", "ref": 4, "rewind": value}
        )
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", 4, "invalid_field")
        assert (await subscribe(ws, "news", ref=5))["op"] == "subscribed"  # still open
