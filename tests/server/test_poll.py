"""``GET /poll``: short and long polling (docs/protocol.md section 5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.server.support import (
    RawConnection,
    apublish,
    apublish_batch,
    async_http_client,
    epoch,
    get,
    offset,
    query,
    wait_until,
    waiter_count,
)
from tidings.server.core.transports.poll import PARSED_TARGET_BYTES


async def poll(client: httpx.AsyncClient, channels: list[str], **params: Any) -> httpx.Response:
    return await client.get("/poll?" + query(channels, **params))


def assert_cursor_headers(response: httpx.Response, cursor: str) -> None:
    assert response.headers["tidings-cursor"] == cursor
    assert response.headers["etag"] == f'"{cursor}"'
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"tidings-cursor", "etag"} <= exposed


async def start_long_poll(
    server: RunningServer, client: httpx.AsyncClient, channels: list[str], **params: Any
) -> asyncio.Task[httpx.Response]:
    """Send a long poll and return once the server holds it (its waiters are registered)."""
    before = [waiter_count(server, c) for c in channels]
    task = asyncio.create_task(poll(client, channels, **params))
    await wait_until(
        lambda: (
            task.done()
            or all(waiter_count(server, c) > n for c, n in zip(channels, before, strict=True))
        ),
        "the long poll to be held",
    )
    assert not task.done(), f"the long poll was answered at once: {task.result().text}"
    return task


async def test_short_poll_without_since_starts_from_now(ahttp: httpx.AsyncClient) -> None:
    empty = await poll(ahttp, ["s"])
    assert empty.status_code == 200
    assert empty.headers["content-type"] == "application/json"
    body = empty.json()
    assert body["events"] == [] and offset(body["cursor"]) == 0 and "resets" not in body
    assert_cursor_headers(empty, body["cursor"])
    ids = [await apublish(ahttp, "s", n) for n in range(2)]
    later = (await poll(ahttp, ["s"])).json()
    assert later == {"events": [], "cursor": ids[1]}


async def test_since_returns_the_events_after_it_in_order(ahttp: httpx.AsyncClient) -> None:
    ids = [await apublish(ahttp, "o", n, event=f"e{n}") for n in range(5)]
    response = await poll(ahttp, ["o"], since=ids[1])
    assert response.status_code == 200
    body = response.json()
    assert [e["data"] for e in body["events"]] == [2, 3, 4]
    assert [e["id"] for e in body["events"]] == ids[2:]
    assert [e["event"] for e in body["events"]] == ["e2", "e3", "e4"]
    assert all(e["channel"] == "o" and isinstance(e["ts"], int) for e in body["events"])
    assert set(body["events"][0]) == {"channel", "id", "event", "data", "ts"}
    assert body["cursor"] == ids[4]
    assert_cursor_headers(response, ids[4])
    more = await apublish(ahttp, "o", 5)
    follow = (await poll(ahttp, ["o"], since=body["cursor"])).json()
    assert [(e["id"], e["data"]) for e in follow["events"]] == [(more, 5)]
    assert follow["cursor"] == more
    assert (await poll(ahttp, ["o"], since=more)).json() == {"events": [], "cursor": more}


async def test_limit_pages_through_everything_exactly(ahttp: httpx.AsyncClient) -> None:
    ids = [await apublish(ahttp, "lim", n) for n in range(10)]
    cursor = f"{epoch(ids[0])}.0"
    seen: list[int] = []
    sizes = []
    while True:
        body = (await poll(ahttp, ["lim"], since=cursor, limit=3)).json()
        if not body["events"]:
            break
        sizes.append(len(body["events"]))
        seen.extend(e["data"] for e in body["events"])
        assert body["cursor"] == body["events"][-1]["id"]
        cursor = body["cursor"]
    assert seen == list(range(10))
    assert sizes == [3, 3, 3, 1]
    assert cursor == ids[-1]


async def test_default_limit_is_100(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(namespaces__default__history_size=500)
    async with async_http_client(server) as client:
        ids = await apublish_batch(client, "dl", list(range(150)))
        body = (await poll(client, ["dl"], since=f"{epoch(ids[0])}.0")).json()
        assert [e["data"] for e in body["events"]] == list(range(100))
        assert body["cursor"] == ids[99]
        top = (await poll(client, ["dl"], since=f"{epoch(ids[0])}.0", limit=1000)).json()
        assert len(top["events"]) == 150


async def test_etag_and_if_none_match_give_304(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "et", 1)
    first = await poll(ahttp, ["et"], since=cursor)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag == f'"{cursor}"'
    again = await ahttp.get("/poll?" + query(["et"], since=cursor), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert_cursor_headers(again, cursor)
    new = await apublish(ahttp, "et", 2)
    changed = await ahttp.get(
        "/poll?" + query(["et"], since=cursor), headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert [e["id"] for e in changed.json()["events"]] == [new]
    assert_cursor_headers(changed, new)


async def test_if_none_match_with_another_etag_is_a_200(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "et2", 1)
    response = await ahttp.get(
        "/poll?" + query(["et2"], since=cursor), headers={"If-None-Match": '"other.1"'}
    )
    assert response.status_code == 200
    assert response.json() == {"events": [], "cursor": cursor}


async def test_304_on_the_same_keep_alive_connection_keeps_it_usable(
    server: RunningServer,
) -> None:
    async with async_http_client(server) as client:
        cursor = await apublish(client, "ka", 1)
    async with await RawConnection.open(server) as connection:
        for _ in range(2):
            await connection.send(
                get(f"/poll?channel=ka&since={cursor}", f'If-None-Match: "{cursor}"')
            )
            response = await connection.response()
            assert response.status == 304 and response.body == b""
            assert response.header("Content-Length") is None
        await connection.send(get("/healthz"))
        assert (await connection.response()).status == 200


async def test_polls_behind_by_the_same_events_get_the_same_answer(
    ahttp: httpx.AsyncClient,
) -> None:
    start = await apublish(ahttp, "behind", 0)
    ids = [await apublish(ahttp, "behind", n) for n in (1, 2)]
    first = await poll(ahttp, ["behind"], since=start, timeout=5)
    second = await poll(ahttp, ["behind"], since=start)
    for response in (first, second):
        assert response.status_code == 200
        assert [e["id"] for e in response.json()["events"]] == ids
        assert_cursor_headers(response, ids[1])
    assert first.content == second.content
    newer = await apublish(ahttp, "behind", 3)
    third = await poll(ahttp, ["behind"], since=start)
    assert [e["id"] for e in third.json()["events"]] == [*ids, newer]
    assert_cursor_headers(third, newer)
    limited = await poll(ahttp, ["behind"], since=start, limit=1)
    assert [e["id"] for e in limited.json()["events"]] == ids[:1]
    assert_cursor_headers(limited, ids[0])


async def test_restricted_origins_answer_each_poll_for_its_origin(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(allowed_origins="https://good.example,https://other.example")
    async with async_http_client(server) as client:
        start = await apublish(client, "origins", 0)
        cursor = await apublish(client, "origins", 1)
        for origin in ("https://good.example", "https://other.example"):
            events = await client.get(
                "/poll?" + query(["origins"], since=start), headers={"Origin": origin}
            )
            nothing = await client.get(
                "/poll?" + query(["origins"], since=cursor),
                headers={"Origin": origin, "If-None-Match": f'"{cursor}"'},
            )
            assert (events.status_code, nothing.status_code) == (200, 304)
            for response in (events, nothing):
                assert response.headers["access-control-allow-origin"] == origin
                assert response.headers["vary"] == "Origin"
        unknown = await client.get("/poll?" + query(["origins"], since=start))
        assert "access-control-allow-origin" not in unknown.headers


async def test_long_poll_is_held_until_a_publish(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    cursor = await apublish(ahttp, "lp", "old")
    task = await start_long_poll(server, ahttp, ["lp"], since=cursor, timeout=20)
    new = await apublish(ahttp, "lp", {"new": True})
    response = await asyncio.wait_for(task, 5)
    assert response.status_code == 200
    body = response.json()
    assert [(e["id"], e["data"]) for e in body["events"]] == [(new, {"new": True})]
    assert body["cursor"] == new
    assert_cursor_headers(response, new)
    assert waiter_count(server, "lp") == 0


async def test_long_poll_without_since_waits_from_now(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    await apublish(ahttp, "now", "old")
    task = await start_long_poll(server, ahttp, ["now"], timeout=20)
    new = await apublish(ahttp, "now", "new")
    body = (await asyncio.wait_for(task, 5)).json()
    assert [e["data"] for e in body["events"]] == ["new"]
    assert body["cursor"] == new


async def test_many_long_polls_are_woken_together(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    cursor = await apublish(ahttp, "many", 0)
    clients = [async_http_client(server) for _ in range(5)]
    try:
        tasks = [
            await start_long_poll(server, c, ["many"], since=cursor, timeout=20) for c in clients
        ]
        new = await apublish(ahttp, "many", 1)
        responses = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    finally:
        for client in clients:
            await client.aclose()
    for response in responses:
        assert response.status_code == 200
        assert response.json()["cursor"] == new
        assert [e["data"] for e in response.json()["events"]] == [1]


async def test_long_poll_times_out_with_204(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "to", 1)
    started = time.monotonic()
    response = await poll(ahttp, ["to"], since=cursor, timeout=0.3)
    elapsed = time.monotonic() - started
    assert response.status_code == 204
    assert response.content == b""
    assert_cursor_headers(response, cursor)
    assert 0.25 <= elapsed < 3, elapsed
    again = await poll(ahttp, ["to"], since=cursor)  # the same connection goes on
    assert again.json() == {"events": [], "cursor": cursor}


async def test_timeout_above_max_poll_seconds_is_lowered(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_poll_seconds=0.5)
    async with async_http_client(server) as client:
        started = time.monotonic()
        response = await poll(client, ["mx"], timeout=25)
        elapsed = time.monotonic() - started
    assert response.status_code == 204
    assert 0.4 <= elapsed < 4, elapsed


async def test_multi_channel_poll(ahttp: httpx.AsyncClient) -> None:
    a = [await apublish(ahttp, "pa", n) for n in range(3)]
    b = [await apublish(ahttp, "pb", n) for n in range(2)]
    since = f"{epoch(a[0])}.0,{b[0]}"
    body = (await poll(ahttp, ["pa", "pb"], since=since)).json()
    assert [(e["channel"], e["data"]) for e in body["events"] if e["channel"] == "pa"] == [
        ("pa", 0),
        ("pa", 1),
        ("pa", 2),
    ]
    assert [e["id"] for e in body["events"] if e["channel"] == "pb"] == [b[1]]
    assert body["cursor"] == f"{a[2]},{b[1]}"
    assert (await poll(ahttp, ["pa", "pb"], since=body["cursor"])).json()["events"] == []


async def test_multi_channel_limit_moves_each_cursor_past_what_it_returned(
    ahttp: httpx.AsyncClient,
) -> None:
    a = [await apublish(ahttp, "qa", n) for n in range(3)]
    b = [await apublish(ahttp, "qb", n) for n in range(3)]
    cursor = f"{epoch(a[0])}.0,{epoch(b[0])}.0"
    seen: dict[str, list[int]] = {"qa": [], "qb": []}
    for _ in range(10):
        body = (await poll(ahttp, ["qa", "qb"], since=cursor, limit=2)).json()
        if not body["events"]:
            break
        assert len(body["events"]) <= 2
        for event in body["events"]:
            seen[event["channel"]].append(event["data"])
        cursor = body["cursor"]
    assert seen == {"qa": [0, 1, 2], "qb": [0, 1, 2]}
    assert cursor == f"{a[2]},{b[2]}"


async def test_multi_channel_long_poll_woken_by_either_channel(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    a, b = await apublish(ahttp, "wa", 0), await apublish(ahttp, "wb", 0)
    task = await start_long_poll(server, ahttp, ["wa", "wb"], since=f"{a},{b}", timeout=20)
    new = await apublish(ahttp, "wb", 1)
    body = (await asyncio.wait_for(task, 5)).json()
    assert [(e["channel"], e["data"]) for e in body["events"]] == [("wb", 1)]
    assert body["cursor"] == f"{a},{new}"
    assert waiter_count(server, "wa") == waiter_count(server, "wb") == 0


async def test_resets_beside_another_channels_events(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=3)
    async with async_http_client(server) as client:
        a = [await apublish(client, "ga", n) for n in range(10)]
        b = [await apublish(client, "gb", n) for n in range(2)]
        started = time.monotonic()
        response = await poll(client, ["ga", "gb"], since=f"{a[1]},{b[0]}", timeout=20)
        assert time.monotonic() - started < 3  # a reset is answered at once, not held
        body = response.json()
        assert response.status_code == 200
        assert body["resets"] == [{"channel": "ga", "id": a[9], "reason": "gap"}]
        assert [(e["channel"], e["data"]) for e in body["events"]] == [("gb", 1)]
        assert body["cursor"] == f"{a[9]},{b[1]}"
        assert_cursor_headers(response, body["cursor"])
        follow = (await poll(client, ["ga", "gb"], since=body["cursor"])).json()
        assert follow == {"events": [], "cursor": body["cursor"]}


async def test_reset_for_another_epoch(ahttp: httpx.AsyncClient) -> None:
    cursor = await apublish(ahttp, "pe", 1)
    stale = ("Aa1" if epoch(cursor) != "Aa1" else "Bb2") + ".1"
    body = (await poll(ahttp, ["pe"], since=stale, timeout=20)).json()
    assert body == {
        "events": [],
        "cursor": cursor,
        "resets": [{"channel": "pe", "id": cursor, "reason": "epoch"}],
    }


async def test_abandoned_long_poll_is_forgotten(server: RunningServer) -> None:
    connection = await RawConnection.open(server)
    await connection.send(get("/poll?channel=gone&timeout=20"))
    await wait_until(lambda: waiter_count(server, "gone") == 1, "the long poll to be held")
    connection.abort()
    await wait_until(lambda: waiter_count(server, "gone") == 0, "the waiter to be removed")


async def test_a_poll_of_a_long_target_is_answered_and_its_parse_not_kept(
    server: RunningServer,
) -> None:
    """Parsed polls are kept by target, up to PARSED_TARGET_BYTES: a longer target (here a
    long token) is parsed at each poll, and answered as any other."""
    node = server.node
    assert node is not None
    short = "/poll?channel=kept"
    long = "/poll?channel=unkept&token=" + "t" * PARSED_TARGET_BYTES
    async with async_http_client(server) as client:
        for _ in range(2):
            for target in (short, long):
                response = await client.get(target)
                assert response.status_code == 200, response.text
                assert response.json()["events"] == []
    kept = server.call(lambda: sorted(node.parsed_polls))
    assert short.encode() in kept
    assert not any(len(target) >= PARSED_TARGET_BYTES for target in kept)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"timeout": "abc"}, "invalid_field"),
        ({"timeout": "-1"}, "invalid_field"),
        ({"timeout": "inf"}, "invalid_field"),
        ({"timeout": "nan"}, "invalid_field"),
        ({"limit": "0"}, "invalid_field"),
        ({"limit": "1001"}, "invalid_field"),
        ({"limit": "-5"}, "invalid_field"),
        ({"limit": "2.5"}, "invalid_field"),
        ({"since": "x"}, "invalid_cursor"),
        ({"since": "a.1,a.2"}, "invalid_cursor"),
    ],
)
async def test_bad_parameters_are_a_400(
    ahttp: httpx.AsyncClient, params: dict[str, str], code: str
) -> None:
    response = await poll(ahttp, ["bad"], **params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_channel_errors(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_channels_per_connection=2)
    async with async_http_client(server) as client:
        cases = [
            ("/poll", "invalid_channel"),
            ("/poll?channel=a&channel=a", "invalid_channel"),
            ("/poll?channel=a&channel=b&channel=c", "too_many_channels"),
            ("/poll?channel=a&channel=b&since=a.1", "invalid_cursor"),
        ]
        for target, code in cases:
            response = await client.get(target)
            assert (response.status_code, response.json()["error"]["code"]) == (400, code)


async def test_fractional_timeout_is_allowed(ahttp: httpx.AsyncClient) -> None:
    response = await poll(ahttp, ["fr"], timeout="0.05")
    assert response.status_code == 204
