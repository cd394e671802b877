"""``GET /ws`` (docs/protocol.md 6) with the ``websockets`` client, and by hand for pings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    FrameReader,
    RawConnection,
    apublish,
    apublish_batch,
    async_http_client,
    client_frame,
    close_code,
    connection_count,
    epoch,
    offset,
    subscriber_count,
    wait_until,
    within,
    ws_handshake,
)

EVENT_FIELDS = {"op", "channel", "id", "event", "data", "ts"}


@asynccontextmanager
async def websocket(server: RunningServer, path: str = "/ws") -> AsyncIterator[ClientConnection]:
    url = server.ws_url.removesuffix("/ws") + path
    async with connect(url, proxy=None, open_timeout=TIMEOUT, ping_interval=None) as ws:
        yield ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = await within(ws.recv(), "a WebSocket message")
    assert isinstance(message, str), "every server message is a JSON text frame"
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await send(ws, message)
    return await receive(ws)


async def assert_usable(ws: ClientConnection, ref: int = 999) -> None:
    """The connection still answers: a ping gets its pong (and nothing came before it)."""
    assert await request(ws, {"op": "ping", "ref": ref}) == {"op": "pong", "ref": ref}


async def subscribe(
    ws: ClientConnection, channel: str, ref: int = 1, **extra: Any
) -> dict[str, Any]:
    answer = await request(ws, {"op": "subscribe", "channel": channel, "ref": ref, **extra})
    assert answer["op"] == "subscribed", answer
    return answer


async def expect_closed(ws: ClientConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await within(ws.recv(), "the server to close")
    assert closed.value.rcvd is not None, "the server closed without a close frame"
    assert closed.value.rcvd.code == code


async def test_ping_echoes_its_ref(server: RunningServer) -> None:
    async with websocket(server) as ws:
        assert await request(ws, {"op": "ping", "ref": 5}) == {"op": "pong", "ref": 5}
        assert await request(ws, {"op": "ping"}) == {"op": "pong", "ref": None}
        assert await request(ws, {"op": "ping", "ref": -7}) == {"op": "pong", "ref": -7}


async def test_subscribe_from_now_then_events(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    head = await apublish(ahttp, "news", "old")
    async with websocket(server) as ws:
        answer = await subscribe(ws, "news", ref=1)
        assert answer == {"op": "subscribed", "ref": 1, "channel": "news", "id": head}
        cursor = await apublish(ahttp, "news", {"text": "hi"}, event="greeting")
        event = await receive(ws)
    assert set(event) == EVENT_FIELDS
    assert event["op"] == "event"
    assert (event["channel"], event["id"], event["event"]) == ("news", cursor, "greeting")
    assert event["data"] == {"text": "hi"}
    assert offset(cursor) == offset(head) + 1


async def test_subscribe_to_a_new_channel_starts_at_zero(server: RunningServer) -> None:
    async with websocket(server) as ws:
        answer = await subscribe(ws, "fresh", ref=3)
        assert offset(answer["id"]) == 0
        assert "recovered" not in answer


async def test_unsubscribe_stops_events(server: RunningServer, ahttp: httpx.AsyncClient) -> None:
    async with websocket(server) as ws:
        await subscribe(ws, "un")
        answer = await request(ws, {"op": "unsubscribe", "channel": "un", "ref": 2})
        assert answer == {"op": "unsubscribed", "ref": 2, "channel": "un"}
        await apublish(ahttp, "un", 1)  # stored and fanned out before this returns
        await assert_usable(ws)  # the pong is the next message: no event was sent
        await subscribe(ws, "un", ref=4)  # and it can subscribe again


async def test_since_recovers_missed_events_after_subscribed(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    ids = [await apublish(ahttp, "rec", n) for n in range(5)]
    async with websocket(server) as ws:
        answer = await subscribe(ws, "rec", ref=7, since=ids[0])
        assert answer == {
            "op": "subscribed",
            "ref": 7,
            "channel": "rec",
            "id": ids[0],
            "recovered": True,
        }
        missed = [await receive(ws) for _ in range(4)]
        assert [(m["op"], m["id"], m["data"]) for m in missed] == [
            ("event", i, n) for n, i in enumerate(ids[1:], start=1)
        ]
        live = await apublish(ahttp, "rec", 5)
        assert (await receive(ws))["id"] == live


async def test_since_at_the_head_recovers_nothing(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    cursor = await apublish(ahttp, "hd", 1)
    async with websocket(server) as ws:
        answer = await subscribe(ws, "hd", since=cursor)
        assert answer["recovered"] is True and answer["id"] == cursor
        await assert_usable(ws)


async def test_since_out_of_history_is_not_recovered_and_resets(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=3)
    async with async_http_client(server) as client, websocket(server) as ws:
        ids = [await apublish(client, "gap", n) for n in range(10)]
        answer = await subscribe(ws, "gap", ref=1, since=ids[1])
        assert answer == {
            "op": "subscribed",
            "ref": 1,
            "channel": "gap",
            "id": ids[1],
            "recovered": False,
        }
        reset = await receive(ws)
        assert reset == {"op": "reset", "channel": "gap", "id": ids[9], "reason": "gap"}
        live = await apublish(client, "gap", 10)
        event = await receive(ws)
        assert (event["op"], event["id"], event["data"]) == ("event", live, 10)


async def test_since_of_another_epoch_resets(
    server: RunningServer, ahttp: httpx.AsyncClient
) -> None:
    cursor = await apublish(ahttp, "oe", 1)
    stale = ("Qq1" if epoch(cursor) != "Qq1" else "Rr2") + ".1"
    async with websocket(server) as ws:
        answer = await subscribe(ws, "oe", since=stale)
        assert answer["recovered"] is False
        assert await receive(ws) == {
            "op": "reset",
            "channel": "oe",
            "id": cursor,
            "reason": "epoch",
        }


async def test_publish_where_clients_may(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(namespaces__chat__client_publish=True)
    async with websocket(server) as publisher, websocket(server) as listener:
        await subscribe(publisher, "chat:lobby")
        await subscribe(listener, "chat:lobby")
        await send(
            publisher,
            {"op": "publish", "channel": "chat:lobby", "data": {"t": 1}, "event": "say", "ref": 3},
        )
        got = [await receive(publisher), await receive(publisher)]
        published = next(m for m in got if m["op"] == "published")
        own = next(m for m in got if m["op"] == "event")
        assert published == {
            "op": "published",
            "ref": 3,
            "channel": "chat:lobby",
            "id": published["id"],
        }
        assert offset(published["id"]) == 1
        assert (own["id"], own["event"], own["data"]) == (published["id"], "say", {"t": 1})
        heard = await receive(listener)
        assert heard == own


async def test_publish_idempotency_key_over_websocket(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__chat__client_publish=True)
    async with websocket(server) as ws:
        message = {"op": "publish", "channel": "chat:x", "data": 1, "idempotency_key": "k"}
        first = await request(ws, {**message, "ref": 1})
        again = await request(ws, {**message, "ref": 2})
        assert first["op"] == again["op"] == "published"
        assert first["id"] == again["id"]
        assert again["ref"] == 2


async def test_publish_is_forbidden_where_clients_may_not(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__chat__client_publish=True)
    async with async_http_client(server) as client, websocket(server) as ws:
        answer = await request(ws, {"op": "publish", "channel": "news", "data": 1, "ref": 8})
        assert answer["op"] == "error" and answer["ref"] == 8
        assert answer["code"] == "forbidden" and answer["message"]
        await assert_usable(ws)
        polled = (await client.get("/poll", params={"channel": "news"})).json()
        assert offset(polled["cursor"]) == 0  # nothing was published


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"op": "publish", "channel": "chat:a", "ref": 1}, "invalid_field"),
        (
            {"op": "publish", "channel": "chat:a", "data": 1, "event": "tidings.x", "ref": 1},
            "invalid_field",
        ),
        ({"op": "publish", "channel": "chat:a", "data": "x" * 100, "ref": 1}, "too_large"),
        ({"op": "publish", "channel": "bad name", "data": 1, "ref": 1}, "invalid_channel"),
    ],
    ids=["no-data", "reserved-event", "too-large", "bad-channel"],
)
async def test_bad_publish_is_an_error(
    make_server: Callable[..., RunningServer], message: dict[str, Any], code: str
) -> None:
    server = make_server(namespaces__chat__client_publish=True, max_message_bytes=64)
    async with websocket(server) as ws:
        answer = await request(ws, message)
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", 1, code)
        await assert_usable(ws)


@pytest.mark.parametrize(
    ("raw", "ref", "code"),
    [
        ("{not json", None, "invalid_json"),
        ("[1, 2]", None, "invalid_json"),
        ('{"op": "ping", "ref": "one"}', None, "invalid_field"),
        ('{"op": "dance", "ref": 4}', 4, "unknown_op"),
        ('{"ref": 4}', 4, "unknown_op"),
        ('{"op": "subscribe", "channel": "no spaces", "ref": 5}', 5, "invalid_channel"),
        ('{"op": "subscribe", "ref": 5}', 5, "invalid_channel"),
        ('{"op": "subscribe", "channel": "a", "since": "bad", "ref": 6}', 6, "invalid_cursor"),
        ('{"op": "subscribe", "channel": "a", "since": 5, "ref": 6}', 6, "invalid_field"),
        ('{"op": "unsubscribe", "channel": "never", "ref": 7}', 7, "not_subscribed"),
        ('{"op": "presence", "channel": "a", "ref": 8}', 8, "presence_disabled"),
    ],
)
async def test_request_errors_leave_the_connection_usable(
    server: RunningServer, raw: str, ref: int | None, code: str
) -> None:
    async with websocket(server) as ws:
        await ws.send(raw)
        answer = await receive(ws)
        assert set(answer) == {"op", "ref", "code", "message"}
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", ref, code)
        assert answer["message"]
        await assert_usable(ws)


async def test_already_subscribed(server: RunningServer) -> None:
    async with websocket(server) as ws:
        await subscribe(ws, "twice", ref=1)
        answer = await request(ws, {"op": "subscribe", "channel": "twice", "ref": 2})
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", 2, "already_subscribed")
        await assert_usable(ws)


async def test_too_many_channels(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_channels_per_connection=2)
    async with websocket(server) as ws:
        await subscribe(ws, "one", ref=1)
        await subscribe(ws, "two", ref=2)
        answer = await request(ws, {"op": "subscribe", "channel": "three", "ref": 3})
        assert (answer["op"], answer["ref"], answer["code"]) == ("error", 3, "too_many_channels")
        await assert_usable(ws)
        await request(ws, {"op": "unsubscribe", "channel": "one", "ref": 4})
        await subscribe(ws, "three", ref=5)  # room again after an unsubscribe


async def test_binary_frame_closes_with_1003(server: RunningServer) -> None:
    async with websocket(server) as ws:
        await ws.send(b'{"op": "ping"}')
        await expect_closed(ws, 1003)


async def test_frame_over_the_limit_closes_with_1009(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_bytes=1024)
    limit = 1024 + 4096
    async with websocket(server) as ws:
        head = b'{"op": "ping", "ref": 1, "pad": "'
        at_limit = head + b"x" * (limit - len(head) - 2) + b'"}'
        assert len(at_limit) == limit
        await ws.send(at_limit.decode())
        assert await receive(ws) == {"op": "pong", "ref": 1}
        await ws.send("x" * (limit + 1))
        await expect_closed(ws, 1009)


async def test_upgrade_is_required(ahttp: httpx.AsyncClient) -> None:
    response = await ahttp.get("/ws")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_field"


async def test_clean_close_forgets_the_connection(server: RunningServer) -> None:
    before = connection_count(server)
    async with websocket(server) as ws:
        await subscribe(ws, "bye")
        assert connection_count(server) == before + 1
    await wait_until(lambda: connection_count(server) == before, "the connection to be dropped")


async def open_raw_websocket(server: RunningServer) -> tuple[RawConnection, FrameReader]:
    connection = await RawConnection.open(server)
    await connection.send(ws_handshake())
    response = await connection.head()
    assert response.status == 101
    return connection, FrameReader(pings=True)


@pytest.mark.standalone_only("the ASGI server sends its own pings")
async def test_server_pings_and_a_client_that_answers_stays(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(heartbeat_seconds=0.2, ws_ping_timeout_seconds=0.3)
    connection, frames = await open_raw_websocket(server)
    try:
        pings = 0
        started = time.monotonic()
        while pings < 6:  # 6 heartbeats: well past heartbeat + ping timeout
            data = await within(connection.reader.read(4096), "a ping")
            assert data, "the server closed a connection that answers its pings"
            for opcode, payload in frames.feed(data):
                assert opcode == 0x9, (opcode, payload)
                pings += 1
                await connection.send(client_frame(payload, opcode=0xA))
        assert time.monotonic() - started >= 0.8
        await connection.send(client_frame(b'{"op": "ping", "ref": 1}'))
        while True:
            data = await within(connection.reader.read(4096), "the pong")
            assert data
            answers = [p for op, p in frames.feed(data) if op == 0x1]
            if answers:
                assert orjson.loads(answers[0]) == {"op": "pong", "ref": 1}
                break
    finally:
        await connection.close()


@pytest.mark.standalone_only("the ASGI server finds dead peers by its own pings")
async def test_a_client_that_never_answers_pings_is_dropped(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(heartbeat_seconds=0.2, ws_ping_timeout_seconds=0.3)
    connection, frames = await open_raw_websocket(server)
    try:
        started = time.monotonic()
        pings = 0
        while True:
            try:
                data = await within(connection.reader.read(4096), "the server to give up", 5)
            except ConnectionResetError:
                break
            if not data:
                break
            pings += sum(1 for opcode, _ in frames.feed(data) if opcode == 0x9)
        elapsed = time.monotonic() - started
    finally:
        await connection.close()
    assert pings >= 1
    # silent for heartbeat + ping timeout (0.5 s), noticed at the next heartbeat
    assert 0.45 <= elapsed < 2.0, elapsed
    await wait_until(lambda: connection_count(server) == 0, "the connection to be forgotten")


async def test_websocket_subscriber_count_follows_subscriptions(server: RunningServer) -> None:
    async with websocket(server) as ws:
        await subscribe(ws, "sc")
        assert subscriber_count(server, "sc") == 1
        await request(ws, {"op": "unsubscribe", "channel": "sc", "ref": 2})
        assert subscriber_count(server, "sc") == 0
        await subscribe(ws, "sc", ref=3)
    await wait_until(
        lambda: subscriber_count(server, "sc") == 0, "the subscription to end with the connection"
    )


async def test_raw_close_frame_gets_a_close_back(server: RunningServer) -> None:
    connection, frames = await open_raw_websocket(server)
    try:
        await connection.send(client_frame(b"\x03\xe8bye", opcode=0x8))
        received: list[tuple[int, bytes]] = []
        while True:
            data = await within(connection.reader.read(4096), "the close answer")
            if not data:
                break
            received.extend(frames.feed(data))
        closes = [payload for opcode, payload in received if opcode == 0x8]
        assert closes and close_code(closes[0]) == 1000
    finally:
        await connection.close()
    await wait_until(lambda: connection_count(server) == 0, "the connection to end")


async def test_recovery_spans_several_history_pages(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=3000)
    async with async_http_client(server) as client, websocket(server) as ws:
        ids: list[str] = []
        for start in range(0, 2500, 1000):
            ids += await apublish_batch(
                client, "pages", list(range(start, min(start + 1000, 2500)))
            )
        answer = await subscribe(ws, "pages", since=f"{epoch(ids[0])}.0")
        assert answer["recovered"] is True
        events = [await receive(ws) for _ in range(2500)]
        assert [e["data"] for e in events] == list(range(2500))
        assert [e["id"] for e in events] == ids
        await assert_usable(ws)


@pytest.mark.standalone_only("the ASGI server reads the handshake")
async def test_handshake_and_first_frame_in_one_write(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(ws_handshake() + client_frame(b'{"op": "ping", "ref": 3}'))
        assert (await connection.head()).status == 101
        frames = FrameReader()
        received: list[tuple[int, bytes]] = []
        while not received:
            data = await within(connection.reader.read(4096), "the pong")
            assert data
            received.extend(frames.feed(data))
        assert received[0] == (0x1, b'{"op":"pong","ref":3}')


async def test_server_stop_closes_with_1012(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    async with websocket(server) as ws:
        await subscribe(ws, "stop")
        await asyncio.to_thread(server.stop)
        await expect_closed(ws, 1012)


async def test_a_disallowed_origin_is_refused(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(allowed_origins="https://good.example")
    async with connect(server.ws_url, proxy=None, origin="https://good.example") as ws:
        await assert_usable(ws)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url, proxy=None, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    assert server.node is not None and server.node.stats.refusals == {"forbidden": 1}
