"""``/admin`` and its feed: snapshots through the hub, only to key holders, free when unwatched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tests.conftest import RunningServer
from tests.server.support import (
    SSEClient,
    async_http_client,
    http_client,
    sse_stream,
    subscriber_count,
    wait_until,
)
from tidings.server.core.ops.admin import ADMIN_CHANNEL

KEY = {"Authorization": "Bearer admin-key"}


async def next_snapshot(stream: SSEClient) -> dict[str, Any]:
    message = await stream.next()
    assert message.event == "snapshot"
    snapshot: dict[str, Any] = orjson.loads(message.data)
    return snapshot


class Feed:
    """Snapshots read off an admin stream, remembering the channels ever shown as busy."""

    def __init__(self, stream: SSEClient) -> None:
        self.stream = stream
        self.fast_channels: set[str] = set()

    async def until(self, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read snapshots (one a second) until one meets ``condition``; at most ten."""
        for _ in range(10):
            snapshot = await next_snapshot(self.stream)
            self.fast_channels.update(row["channel"] for row in snapshot["channels"]["by_rate"])
            if condition(snapshot):
                return snapshot
        raise AssertionError(f"ten snapshots and none as expected; the last: {snapshot}")


async def test_the_feed_shows_the_node_moving(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(api_keys=("admin-key",))
    async with (
        async_http_client(server) as client,
        sse_stream(client, "/admin/stream", KEY) as feed,
        sse_stream(client, "/sse?channel=busy") as watcher,
    ):
        first = await next_snapshot(feed)
        assert first["workers"] == 1
        assert first["connections"]["admin"] == 1
        assert first["connections"]["sse"] == 1
        assert first["channels"]["by_followers"] == [{"channel": "busy", "followers": 1}]
        for n in range(5):
            published = await client.post(
                "/api/publish", json={"channel": "busy", "data": n}, headers=KEY
            )
            assert published.status_code == 200, published.text
        await watcher.take(5)
        feed_reader = Feed(feed)
        moved = await feed_reader.until(lambda s: s["publishes"]["total"] == 5)
        assert moved["deliveries"]["by_transport"]["sse"] == 5  # the feed itself is not counted
        assert moved["lag_ms"]["count"] == 5
        assert moved["lag_ms"]["p50"] is not None and moved["lag_ms"]["p99"] is not None
        rated = await feed_reader.until(lambda s: s["publishes"]["per_second"] is not None)
        assert rated["deliveries"]["per_second"] is not None
        await feed_reader.until(lambda s: bool(feed_reader.fast_channels))
        assert feed_reader.fast_channels == {"busy"}


async def test_no_subscriber_can_follow_the_admin_channel(server: RunningServer) -> None:
    async with async_http_client(server) as client:
        answer = await client.get("/sse", params={"channel": ADMIN_CHANNEL})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_channel"


async def test_the_feed_costs_nothing_once_nobody_watches(server: RunningServer) -> None:
    app = server.node
    assert app is not None
    async with async_http_client(server) as client, sse_stream(client, "/admin/stream") as feed:
        await next_snapshot(feed)  # from loopback, with no keys configured, no key is needed
        assert server.call(lambda: app.hub.arrivals is not None)
    await wait_until(lambda: subscriber_count(server, ADMIN_CHANNEL) == 0, "the feed to close")
    assert server.server.edge is not None
    feed = server.server.edge.routes.admin_feed
    server.call(feed.tick)  # the tick after the last page left
    offset = server.call(lambda: feed.offset)
    server.call(feed.tick)
    assert server.call(lambda: feed.offset) == offset  # no snapshot built
    assert server.call(lambda: app.hub.arrivals) is None  # no counting per channel


def test_the_page_is_served_and_can_be_turned_off(
    make_server: Callable[..., RunningServer],
) -> None:
    with http_client(make_server(api_keys=("admin-key",))) as http:
        page = http.get("/admin")  # the page holds no numbers: it asks for the key
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"/admin/stream" in page.content
    with http_client(make_server(admin=False)) as http:
        for path in ("/admin", "/admin/stream"):
            off = http.get(path)
            assert off.status_code == 404
            assert off.json()["error"]["code"] == "not_found"
