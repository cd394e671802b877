"""The HTTP/1.1 edge, byte by byte: keep-alive, pipelining, and every way a request goes wrong.

After each bad input the server must go on serving other clients, so every refusal test ends
by asking a fresh connection for ``/healthz``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import orjson
import pytest

from tests.conftest import RunningServer
from tests.server.support import RawConnection, assert_still_serving, get, publish


def post(target: str, body: bytes, *headers: str) -> bytes:
    lines = [
        f"POST {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_keep_alive_serves_two_requests_on_one_connection(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        for _ in range(2):
            await connection.send(get("/healthz"))
            response = await connection.response()
            assert response.status == 200
            assert response.header("Connection") is None  # not "close"
            assert response.json() == {"status": "ok"}


async def test_connection_close_is_honoured(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz", "Connection: close"))
        response = await connection.response()
        assert response.status == 200
        assert response.header("Connection") == "close"
        assert await connection.closed_by_server() == b""


async def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    """Three requests in one write: the first is answered later (a task), yet first."""
    before = publish(server, "pipe", "before")
    body = orjson.dumps({"channel": "pipe", "data": "pipelined"})
    async with await RawConnection.open(server) as connection:
        await connection.send(
            post("/api/publish", body) + get("/healthz") + get(f"/poll?channel=pipe&since={before}")
        )
        published = await connection.response()
        health = await connection.response()
        polled = await connection.response()
    assert published.status == 200
    cursor = published.json()["id"]
    assert health.json() == {"status": "ok"}
    assert polled.status == 200
    assert [e["data"] for e in polled.json()["events"]] == ["pipelined"]
    assert polled.json()["cursor"] == cursor


async def test_three_pipelined_gets_come_back_in_request_order(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz") + get("/no/such/path") + get("/poll?channel=p3"))
        statuses = [(await connection.response()).status for _ in range(3)]
    assert statuses == [200, 404, 200]


async def test_plain_heads_and_others_in_one_write_are_answered_in_order(
    server: RunningServer,
) -> None:
    """A GET read whole, a publish with a body, a GET cut in two by the writes: each kind of
    head the edge reads (plain ones in one call, the rest by httptools) in one stream."""
    body = orjson.dumps({"channel": "mix", "data": "between"})
    second = get("/poll?channel=mix", 'If-None-Match: "x"', "Connection: keep-alive")
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz") + post("/api/publish", body) + second[:20])
        assert (await connection.response()).json() == {"status": "ok"}
        published = await connection.response()
        await connection.send(second[20:] + get("/healthz", "Connection: close"))
        polled = await connection.response()
        closing = await connection.response()
        assert await connection.closed_by_server() == b""
    assert published.status == 200
    assert polled.status == 200 and polled.json()["cursor"] == published.json()["id"]
    assert closing.status == 200 and closing.header("Connection") == "close"


async def test_malformed_request_line_is_a_400_and_closes(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(b"THIS IS NOT HTTP\r\n\r\n")
        response = await connection.response()
        assert response.status == 400
        assert response.header("Content-Type") == "application/json"
        assert response.header("Connection") == "close"
        assert response.error_code() == "invalid_field"
        assert await connection.closed_by_server() == b""
    await assert_still_serving(server)


async def test_headers_over_max_header_bytes_are_a_431(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_header_bytes=1024)
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz", "X-Filler: " + "a" * 2000))
        response = await connection.response()
        assert response.status == 431
        assert response.error_code() == "too_large"
        assert await connection.closed_by_server() == b""
    async with await RawConnection.open(server) as connection:  # just under the limit: fine
        await connection.send(get("/healthz", "X-Filler: " + "a" * 800))
        assert (await connection.response()).status == 200
    await assert_still_serving(server)


async def test_content_length_over_the_publish_limit_is_refused_before_the_body(
    make_server: Callable[..., RunningServer],
) -> None:
    """The body is never sent: a 413 that arrives proves the server did not wait for it."""
    server = make_server(max_message_bytes=1024)  # body limit: 1,000 events of 1,024 bytes
    head = (
        "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1024001\r\n\r\n"
    )
    async with await RawConnection.open(server) as connection:
        await connection.send(head.encode())
        response = await connection.response()
        assert response.status == 413
        assert response.error_code() == "too_large"
        assert await connection.closed_by_server() == b""
    await assert_still_serving(server)


async def test_chunked_body_over_the_limit_is_a_413(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_bytes=16)  # body limit: 16,000 bytes
    chunk = b"x" * 20000
    request = (
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(chunk)
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    async with await RawConnection.open(server) as connection:
        await connection.send(request)
        response = await connection.response()
        assert response.status == 413
        assert response.error_code() == "too_large"
    await assert_still_serving(server)


async def test_a_chunked_publish_batch_over_a_plain_body_s_limit_is_taken(
    server: RunningServer,
) -> None:
    """A chunked body declares no length: the publish path's own limit applies to it as it
    comes, not the 64 KB of other paths."""
    batch = orjson.dumps({"events": [{"channel": "chunked", "data": "x" * 1000}] * 100})
    assert len(batch) > 65536
    request = (
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(batch) + batch + b"\r\n0\r\n\r\n"
    )
    async with await RawConnection.open(server) as connection:
        await connection.send(request)
        response = await connection.response()
        assert response.status == 200, response
    await assert_still_serving(server)


async def test_unknown_path_is_a_404_and_the_connection_goes_on(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/nowhere?x=1"))
        response = await connection.response()
        assert response.status == 404
        assert response.header("Content-Type") == "application/json"
        assert response.error_code() == "not_found"
        await connection.send(get("/healthz"))
        assert (await connection.response()).status == 200


@pytest.mark.parametrize(
    ("request_bytes", "allowed"),
    [
        (post("/poll?channel=a", b"{}"), "GET"),
        (get("/api/publish"), "POST"),
        (b"DELETE /sse?channel=a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "GET"),
    ],
    ids=["post-poll", "get-publish", "delete-sse"],
)
async def test_wrong_method_is_a_405_with_allow(
    server: RunningServer, request_bytes: bytes, allowed: str
) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(request_bytes)
        response = await connection.response()
        assert response.status == 405
        assert response.error_code() == "method_not_allowed"
        allow = response.header("Allow")
        assert allow is not None
        assert allowed in [method.strip() for method in allow.split(",")]
        await connection.send(get("/healthz"))
        assert (await connection.response()).status == 200


async def test_half_sent_request_is_a_408_after_the_read_timeout(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(read_timeout_seconds=0.5)
    async with await RawConnection.open(server) as connection:
        started = time.monotonic()
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        response = await connection.response()
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert response.error_code() == "invalid_field"
        assert await connection.closed_by_server() == b""
    assert 0.4 <= elapsed < 3, elapsed
    await assert_still_serving(server)


async def test_idle_keep_alive_connection_is_closed_without_an_answer(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(read_timeout_seconds=0.3)
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/healthz"))
        assert (await connection.response()).status == 200
        assert await connection.closed_by_server() == b""  # no 408 for a request never begun
    await assert_still_serving(server)


async def test_error_answers_are_json_on_every_refusal(server: RunningServer) -> None:
    """One connection per case: the body is the section 8 object with a readable message."""
    cases = [
        (get("/sse"), 400, "invalid_channel"),
        (get("/poll?channel=a&since=nope"), 400, "invalid_cursor"),
        (post("/api/publish", b"{"), 400, "invalid_json"),
        (get("/missing"), 404, "not_found"),
    ]
    for request_bytes, status, code in cases:
        async with await RawConnection.open(server) as connection:
            await connection.send(request_bytes)
            response = await connection.response()
            assert (response.status, response.error_code()) == (status, code), request_bytes
            assert response.header("Content-Type") == "application/json"


async def test_a_hundred_pipelined_requests_behind_a_slow_one(server: RunningServer) -> None:
    """A publish (answered from a task) then 99 polls, all in one write: 100 answers, in order."""
    body = orjson.dumps({"channel": "many", "data": "x"})
    polls = b"".join(get(f"/poll?channel=many&limit={n}") for n in range(1, 100))
    async with await RawConnection.open(server) as connection:
        await connection.send(post("/api/publish", body) + polls)
        published = await connection.response()
        answers = [await connection.response() for _ in range(99)]
    cursor = published.json()["id"]
    assert all(a.status == 200 and a.json() == {"events": [], "cursor": cursor} for a in answers)


async def test_http_1_0_request_is_answered_and_closed(server: RunningServer) -> None:
    async with await RawConnection.open(server) as connection:
        await connection.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        response = await connection.response()
        assert response.status == 200
        assert await connection.closed_by_server() == b""


async def test_half_sent_body_is_a_408(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(read_timeout_seconds=0.3)
    head = b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
    async with await RawConnection.open(server) as connection:
        await connection.send(head + b'{"channel": ')
        response = await connection.response()
        assert response.status == 408
        assert await connection.closed_by_server() == b""
    await assert_still_serving(server)


async def test_request_line_over_max_header_bytes_is_a_431(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_header_bytes=1024)
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/poll?channel=" + "a" * 1100))
        response = await connection.response()
        assert response.status == 431
        assert response.error_code() == "too_large"
    await assert_still_serving(server)


def test_the_browser_client_is_served_with_an_etag(server: RunningServer) -> None:
    import httpx

    first = httpx.get(server.url + "/tidings.js")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/javascript")
    assert b"export class Tidings" in first.content
    etag = first.headers["etag"]
    again = httpx.get(server.url + "/tidings.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


async def test_a_peer_that_stops_acknowledging_is_dropped_within_the_dead_peer_window(
    make_server: Callable[..., RunningServer],
) -> None:
    # An SSE stream has no reads to notice a vanished client: the kernel must give up on it
    # within the WebSocket's dead-peer window (heartbeat plus ping timeout), not ~15 minutes.
    server = make_server(heartbeat_seconds=2, ws_ping_timeout_seconds=3)
    async with await RawConnection.open(server) as connection:
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await connection.response()).status == 200

        def user_timeouts() -> list[int]:
            app = server.node
            assert app is not None
            return [
                c.transport.get_extra_info("socket").getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT
                )
                for c in app.connections
                if getattr(c, "transport", None) is not None
            ]

        assert server.call(user_timeouts) == [5000]


@pytest.mark.timeout(30)
async def test_a_connection_storm_is_taken_a_connection_per_loop_turn(
    server: RunningServer,
) -> None:
    # The loop is held while 200 clients connect and send their requests, so the kernel
    # has all of them queued when it comes back. The edge takes them one per loop turn,
    # each turn also running what else is due (a delivery, a heartbeat): a storm cannot hold
    # the loop for the length of the queue.
    node = server.node
    assert node is not None
    grown: list[int] = []

    def watch(before: int, turns: int) -> None:
        now = len(node.connections)
        grown.append(now - before)
        if turns:
            server.loop.call_soon(watch, now, turns - 1)

    publisher = await RawConnection.open(server)
    server.loop.call_soon_threadsafe(time.sleep, 0.5)
    server.loop.call_soon_threadsafe(lambda: watch(len(node.connections), 5000))
    storm = [await RawConnection.open(server) for _ in range(200)]
    for connection in storm:
        connection.writer.write(get("/healthz"))
    await publisher.send(post("/api/publish", orjson.dumps({"channel": "c", "data": 1})))
    assert (await publisher.response()).status == 200
    for connection in storm:
        assert (await connection.response()).status == 200
    assert max(grown) <= 2, grown
    for connection in [publisher, *storm]:
        connection.writer.close()
