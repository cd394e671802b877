"""``GET /sse`` (docs/protocol.md section 4), read with httpx and the project's SSE parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.server.support import (
    SSEClient,
    SSEStream,
    apublish,
    apublish_batch,
    async_http_client,
    epoch,
    offset,
    query,
    sse_stream,
    subscriber_count,
    wait_until,
)
from tidings.protocol.sse import RESET_EVENT, encode_comment


async def head(client: httpx.AsyncClient, channel: str) -> str:
    response = await client.get("/poll", params={"channel": channel})
    return str(response.json()["cursor"])


async def test_stream_headers(ahttp: httpx.AsyncClient) -> None:
    async with ahttp.stream("GET", "/sse?channel=news") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers


async def test_stream_opens_with_retry_and_the_starting_cursor(
    ahttp: httpx.AsyncClient,
) -> None:
    for n in range(3):
        await apublish(ahttp, "news", n)
    start = await head(ahttp, "news")
    assert offset(start) == 3
    async with sse_stream(ahttp, "/sse?channel=news") as stream:
        assert stream.raw.startswith(f"retry: 2000\nid: {start}\n\n".encode())
        assert stream.parser.retry == 2000
        assert stream.parser.last_event_id == start
        assert stream.pending == []  # the opening block dispatches nothing


async def test_events_carry_data_name_and_cursor(ahttp: httpx.AsyncClient) -> None:
    values: list[tuple[Any, str]] = [
        ({"text": "hi"}, "message"),
        (None, "nothing"),
        ("two\nlines\r\n", "message"),
        ([1, 2.5, "é ✓"], "chat:line"),
    ]
    async with sse_stream(ahttp, "/sse?channel=news") as stream:
        ids = [await apublish(ahttp, "news", data, event=name) for data, name in values]
        messages = await stream.take(len(values))
    for message, (data, name), cursor in zip(messages, values, ids, strict=True):
        assert json.loads(message.data) == data
        assert message.event == name
        assert message.last_event_id == cursor
    assert [offset(i) for i in ids] == [1, 2, 3, 4]


async def test_heartbeat_comment(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(heartbeat_seconds=0.2)
    async with async_http_client(server) as client, sse_stream(client, "/sse?channel=q") as stream:
        await stream.feed_until(lambda: stream.parser.comments >= 2, "two heartbeats")
        assert stream.comments[:2] == [" ping", " ping"]
        assert b"\n: ping\n\n" in stream.raw
        assert stream.pending == []


async def test_since_resumes_after_the_cursor(ahttp: httpx.AsyncClient) -> None:
    ids = [await apublish(ahttp, "r", n) for n in range(5)]
    async with sse_stream(ahttp, f"/sse?channel=r&since={ids[1]}") as stream:
        assert stream.start == ids[1]
        messages = await stream.take(3)
        assert [json.loads(m.data) for m in messages] == [2, 3, 4]
        assert [m.last_event_id for m in messages] == ids[2:]
        live = await apublish(ahttp, "r", 5)
        message = await stream.next()
        assert (json.loads(message.data), message.last_event_id) == (5, live)


async def test_last_event_id_wins_over_since(ahttp: httpx.AsyncClient) -> None:
    ids = [await apublish(ahttp, "le", n) for n in range(5)]
    target = f"/sse?channel=le&since={ids[0]}"
    async with sse_stream(ahttp, target, headers={"Last-Event-ID": ids[2]}) as stream:
        assert stream.start == ids[2]
        messages = await stream.take(2)
    assert [json.loads(m.data) for m in messages] == [3, 4]


async def test_since_at_the_head_waits_for_new_events(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "h", "old")
    async with sse_stream(ahttp, f"/sse?channel=h&since={cursor}") as stream:
        new = await apublish(ahttp, "h", "new")
        message = await stream.next()
    assert (json.loads(message.data), message.last_event_id) == ("new", new)


async def test_envelope_holds_the_whole_event(ahttp: httpx.AsyncClient) -> None:
    async with sse_stream(ahttp, "/sse?channel=env&envelope=1") as stream:
        cursor = await apublish(ahttp, "env", {"x": 1}, event="custom")
        message = await stream.next()
    event = json.loads(message.data)
    assert set(event) == {"channel", "id", "event", "data", "ts"}
    assert event["channel"] == "env"
    assert event["id"] == cursor == message.last_event_id
    assert event["event"] == message.event == "custom"
    assert event["data"] == {"x": 1}


async def test_multi_channel_stream_ids_are_cursor_lists(ahttp: httpx.AsyncClient) -> None:
    await apublish(ahttp, "mb", "before")
    start_a, start_b = await head(ahttp, "ma"), await head(ahttp, "mb")
    async with sse_stream(ahttp, "/sse?" + query(["ma", "mb"], envelope=1)) as stream:
        assert stream.start == f"{start_a},{start_b}"
        a1 = await apublish(ahttp, "ma", "a1")
        b2 = await apublish(ahttp, "mb", "b2")
        a2 = await apublish(ahttp, "ma", "a2")
        messages = await stream.take(3)
    assert [m.last_event_id for m in messages] == [f"{a1},{start_b}", f"{a1},{b2}", f"{a2},{b2}"]
    events = [json.loads(m.data) for m in messages]
    assert [(e["channel"], e["data"], e["id"]) for e in events] == [
        ("ma", "a1", a1),
        ("mb", "b2", b2),
        ("ma", "a2", a2),
    ]


async def test_multi_channel_resume_with_a_cursor_list(ahttp: httpx.AsyncClient) -> None:
    a = [await apublish(ahttp, "ra", n) for n in range(3)]
    b = [await apublish(ahttp, "rb", n) for n in range(3)]
    target = "/sse?" + query(["ra", "rb"], since=f"{a[0]},{b[1]}", envelope=1)
    async with sse_stream(ahttp, target) as stream:
        assert stream.start == f"{a[0]},{b[1]}"
        messages = await stream.take(3)
    events = [json.loads(m.data) for m in messages]
    assert [e["id"] for e in events if e["channel"] == "ra"] == a[1:]
    assert [e["id"] for e in events if e["channel"] == "rb"] == b[2:]
    for message, event in zip(messages, events, strict=True):
        position = ["ra", "rb"].index(event["channel"])
        assert message.last_event_id.split(",")[position] == event["id"]
    assert messages[-1].last_event_id == f"{a[2]},{b[2]}"


async def expect_reset(stream: SSEClient, channel: str, cursor: str, reason: str) -> None:
    message = await stream.next()
    assert message.event == RESET_EVENT
    assert json.loads(message.data) == {"channel": channel, "id": cursor, "reason": reason}


async def test_reset_for_a_cursor_of_another_epoch(ahttp: httpx.AsyncClient) -> None:
    ids = [await apublish(ahttp, "ep", n) for n in range(3)]
    stale = ("Zz9" if not epoch(ids[0]).startswith("Zz9") else "Yy8") + ".2"
    async with sse_stream(ahttp, f"/sse?channel=ep&since={stale}") as stream:
        await expect_reset(stream, "ep", ids[2], "epoch")
        assert stream.parser.last_event_id == ids[2]
        new = await apublish(ahttp, "ep", "after")
        message = await stream.next()
    assert (json.loads(message.data), message.last_event_id) == ("after", new)


async def test_reset_for_an_offset_beyond_the_last_event(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "bey", 1)
    async with sse_stream(ahttp, f"/sse?channel=bey&since={epoch(cursor)}.99") as stream:
        await expect_reset(stream, "bey", cursor, "epoch")


async def test_reset_for_a_gap_then_live_events(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=5)
    async with async_http_client(server) as client:
        ids = [await apublish(client, "gap", n) for n in range(20)]
        async with sse_stream(client, f"/sse?channel=gap&since={ids[1]}") as stream:
            await expect_reset(stream, "gap", ids[19], "gap")
            assert stream.parser.last_event_id == ids[19]
            new = await apublish(client, "gap", 20)
            message = await stream.next()
            assert (json.loads(message.data), message.last_event_id) == (20, new)


async def test_reset_in_one_channel_beside_anothers_events(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=3)
    async with async_http_client(server) as client:
        a = [await apublish(client, "xa", n) for n in range(10)]
        b = [await apublish(client, "xb", n) for n in range(2)]
        target = "/sse?" + query(["xa", "xb"], since=f"{a[0]},{b[0]}")
        async with sse_stream(client, target) as stream:
            messages = await stream.take(2)
    by_event = {m.event: m for m in messages}
    assert set(by_event) == {RESET_EVENT, "message"}
    assert json.loads(by_event[RESET_EVENT].data) == {
        "channel": "xa",
        "id": a[9],
        "reason": "gap",
    }
    assert json.loads(by_event["message"].data) == 1
    assert messages[-1].last_event_id == f"{a[9]},{b[1]}"


@pytest.mark.parametrize(
    ("target", "headers", "code"),
    [
        ("/sse", {}, "invalid_channel"),
        ("/sse?channel=", {}, "invalid_channel"),
        ("/sse?channel=bad%20name", {}, "invalid_channel"),
        ("/sse?channel=a&channel=a", {}, "invalid_channel"),
        ("/sse?channel=a&since=nope", {}, "invalid_cursor"),
        ("/sse?channel=a&since=abc.01", {}, "invalid_cursor"),
        ("/sse?channel=a&channel=b&since=abc.1", {}, "invalid_cursor"),
        ("/sse?channel=a&since=abc.1,abc.2", {}, "invalid_cursor"),
        ("/sse?channel=a", {"Last-Event-ID": "garbage"}, "invalid_cursor"),
        ("/sse?channel=a&envelope=yes", {}, "invalid_field"),
        ("/sse?" + query(["c1", "c2", "c3", "c4", "c5"]), {}, "too_many_channels"),
    ],
)
async def test_bad_parameters_are_a_json_400_before_any_stream(
    make_server: Callable[..., RunningServer],
    target: str,
    headers: dict[str, str],
    code: str,
) -> None:
    server = make_server(max_channels_per_connection=4)
    async with async_http_client(server) as client:
        response = await client.get(target, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def test_four_channels_is_within_the_limit(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_channels_per_connection=4)
    async with (
        async_http_client(server) as client,
        sse_stream(client, "/sse?" + query(["c1", "c2", "c3", "c4"])) as stream,
    ):
        assert len(stream.start.split(",")) == 4


async def test_client_going_away_ends_the_subscription(server: RunningServer) -> None:
    async with async_http_client(server) as client, sse_stream(client, "/sse?channel=bye"):
        assert subscriber_count(server, "bye") == 1
    await wait_until(lambda: subscriber_count(server, "bye") == 0, "the stream to be detached")


async def test_recovery_spans_several_history_pages(
    make_server: Callable[..., RunningServer],
) -> None:
    """More missed events than one page of history (1,000): all of them, in order."""
    server = make_server(namespaces__default__history_size=3000)
    async with async_http_client(server) as client:
        ids = []
        for start in range(0, 2500, 1000):
            ids += await apublish_batch(
                client, "pages", list(range(start, min(start + 1000, 2500)))
            )
        since = f"{epoch(ids[0])}.0"
        async with sse_stream(client, f"/sse?channel=pages&since={since}") as stream:
            messages = await stream.take(2500)
    assert [json.loads(m.data) for m in messages] == list(range(2500))
    assert [m.last_event_id for m in messages] == ids


async def open_raw_streams(server: RunningServer, count: int) -> list[SSEStream]:
    streams = []
    for _ in range(count):
        stream = await SSEStream.open(server, "/sse?channel=drain")
        await stream.feed_until(lambda s=stream: s.parser.last_event_id != "", "the opening")
        streams.append(stream)
    return streams


HEARTBEAT = encode_comment()


async def drain_retries(streams: list[SSEStream], server: RunningServer) -> list[int]:
    """Stop the server; return the ``retry:`` each stream was sent before it ended."""
    await asyncio.to_thread(server.stop)
    retries = []
    for stream in streams:
        rest = await stream.connection.body_until_closed()
        await stream.close()
        while rest.startswith(HEARTBEAT):  # heartbeats written before the drain's retry
            rest = rest[len(HEARTBEAT) :]
        assert rest.startswith(b"retry: ") and rest.endswith(b"\n\n"), rest
        stream.parser.retry = None
        stream.parser.feed(rest)
        assert stream.parser.retry is not None
        retries.append(stream.parser.retry)
    return retries


async def test_drain_sends_retry_and_ends_the_stream(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=5)
    streams = await open_raw_streams(server, 2)
    retries = await drain_retries(streams, server)
    assert all(0 <= retry <= 5000 for retry in retries), retries


async def test_drain_retry_is_spread_over_the_window(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=5)
    streams = await open_raw_streams(server, 8)
    retries = await drain_retries(streams, server)
    assert all(0 <= retry <= 5000 for retry in retries), retries
    assert len(set(retries)) > 1, f"every client comes back after {retries[0]} ms at once"


async def test_a_disallowed_origin_is_refused(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(allowed_origins="https://good.example")
    async with async_http_client(server) as client:
        good = await client.get("/poll?channel=o", headers={"Origin": "https://good.example"})
        assert good.headers["access-control-allow-origin"] == "https://good.example"
        headers = {"Origin": "https://evil.example"}
        async with client.stream("GET", "/sse?channel=o", headers=headers) as response:
            assert response.status_code == 403
            assert (await response.aread()) and response.json()["error"]["code"] == "forbidden"
