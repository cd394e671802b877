"""Connection and rate limits per client address, trusted proxies, and refusal counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    FrameReader,
    RawConnection,
    Response,
    client_frame,
    client_json,
    close_code,
    connection_count,
    get,
    wait_until,
    within,
    ws_handshake,
)
from tidings.config import ServerSettings, load_settings
from tidings.exceptions import ConfigError, RateLimited
from tidings.server.core.limits import (
    UNKNOWN_ADDRESS,
    RateTable,
    TrustedProxies,
    exposure_warning,
)

MakeServer = Callable[..., RunningServer]


def refusals(server: RunningServer) -> dict[str, int]:
    app = server.node
    assert app is not None
    return dict(server.call(lambda: dict(app.stats.refusals)))


def open_by_address(server: RunningServer) -> dict[str, int]:
    app = server.node
    assert app is not None
    return dict(server.call(lambda: dict(app.limits.open_by_address)))


async def request(connection: RawConnection, target: str, *headers: str) -> Response:
    await connection.send(get(target, *headers))
    return await connection.response()


async def publish(connection: RawConnection, channel: str, *headers: str) -> Response:
    body = orjson.dumps({"channel": channel, "data": 1})
    head = [
        "POST /api/publish HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    await connection.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return await connection.response()


async def refused_at_accept(server: RunningServer) -> Response:
    """Connect, send nothing, and read the answer the server writes before closing."""
    connection = await RawConnection.open(server)
    try:
        response = await connection.response()
        await connection.closed_by_server()
    finally:
        await connection.close()
    return response


# --- client address -------------------------------------------------------------------------


PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # left: the client's word
        ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # two proxies deep
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # every hop a proxy: the first
        ("127.0.0.1", "203.0.113.5:4711", "203.0.113.5"),
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # dual-stack view of a proxy
        ("127.0.0.1", "203.0.113.5, not-an-address", UNKNOWN_ADDRESS),
        ("127.0.0.1", " , ", "127.0.0.1"),
        ("192.0.2.7", "127.0.0.1", "192.0.2.7"),  # spoofed by an untrusted peer: ignored
        ("192.0.2.7", "10.1.1.1, 203.0.113.5", "192.0.2.7"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, client: str) -> None:
    assert PROXIES.client_address(peer, forwarded) == client


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert load_settings(flags={"trusted_proxies": ["10.0.0.0/8", "::1"]})
    with pytest.raises(ConfigError) as error:
        load_settings(flags={"trusted_proxies": ["10.0.0.0/8", "proxy.local"]})
    assert error.value.key == "server.trusted_proxies"


def test_warning_when_publishing_is_open_to_a_local_proxy() -> None:
    warning = exposure_warning(ServerSettings(host="0.0.0.0"))
    assert warning is not None
    assert "api_keys" in warning and "trusted_proxies" in warning
    assert exposure_warning(ServerSettings(host="", api_keys=("k",))) is None
    for host in ("127.0.0.1", "::1", "localhost"):
        assert exposure_warning(ServerSettings(host=host)) is None


async def test_publish_from_loopback_only_counts_the_forwarded_client(
    make_server: MakeServer,
) -> None:
    server = make_server(trusted_proxies="127.0.0.1")
    async with await RawConnection.open(server) as connection:
        response = await publish(connection, "news", "X-Forwarded-For: 203.0.113.5")
        assert response.status == 403
        assert response.error_code() == "forbidden"
        assert (await publish(connection, "news")).status == 200  # the proxy's own request


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_server: MakeServer,
) -> None:
    server = make_server(trusted_proxies="10.0.0.0/8", poll_rate_per_address=1)
    async with await RawConnection.open(server) as connection:
        assert (await publish(connection, "news", "X-Forwarded-For: 203.0.113.5")).status == 200
        first = await request(connection, "/poll?channel=news", "X-Forwarded-For: 198.51.100.1")
        assert first.status == 200
        second = await request(connection, "/poll?channel=news", "X-Forwarded-For: 198.51.100.2")
        assert second.status == 429  # one peer, one bucket, whatever it claims to be


# --- connection limits ----------------------------------------------------------------------


async def test_over_max_connections_answers_503_at_once(make_server: MakeServer) -> None:
    server = make_server(max_connections=2)
    first = await RawConnection.open(server)
    second = await RawConnection.open(server)
    try:
        await wait_until(lambda: connection_count(server) == 2, "two open connections")
        response = await refused_at_accept(server)
        assert response.status == 503
        assert response.error_code() == "unavailable"
        assert response.header("Retry-After") == "5"
        assert response.header("Connection") == "close"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url, proxy=None, open_timeout=TIMEOUT):
                pass
        assert refused.value.response.status_code == 503
        assert refusals(server) == {"max_connections": 2}
        assert (await request(first, "/healthz")).status == 200  # the admitted are served
    finally:
        await first.close()
    await wait_until(lambda: connection_count(server) == 1, "the first connection to go")
    try:
        async with await RawConnection.open(server) as third:
            assert (await request(third, "/healthz")).status == 200
    finally:
        await second.close()


async def test_over_max_connections_per_address_answers_429(make_server: MakeServer) -> None:
    server = make_server(max_connections_per_address=2)
    plain = await RawConnection.open(server)
    stream = await RawConnection.open(server)
    await stream.send(get("/sse?channel=news"))
    assert (await stream.head()).status == 200  # a stream keeps its place in the count
    response = await refused_at_accept(server)
    assert response.status == 429
    assert response.error_code() == "rate_limited"
    assert response.header("Retry-After") == "5"
    assert refusals(server) == {"max_connections_per_address": 1}
    assert open_by_address(server) == {"127.0.0.1": 2}
    await plain.close()
    await stream.close()
    await wait_until(lambda: not open_by_address(server), "the address to leave the table")
    async with await RawConnection.open(server) as again:
        assert (await request(again, "/healthz")).status == 200


async def test_a_proxy_is_counted_by_forwarded_address(make_server: MakeServer, edge: str) -> None:
    server = make_server(trusted_proxies="127.0.0.1", max_connections_per_address=1)
    client = "X-Forwarded-For: 203.0.113.5"
    held = await RawConnection.open(server)
    await held.send(get("/sse?channel=news", client))
    assert (await held.head()).status == 200
    assert open_by_address(server) == {"203.0.113.5": 1}  # not the proxy's own address
    async with await RawConnection.open(server) as pooled:
        refused = await request(pooled, "/healthz", client)
        assert refused.status == 429
        assert refused.error_code() == "rate_limited"
        assert refused.header("Retry-After") == "5"
        other = await request(pooled, "/healthz", "X-Forwarded-For: 203.0.113.6")
        assert other.status == 200  # the proxy's connection serves its next client
        # the standalone edge counts the proxy's connection under the client it last
        # carried; the mount counts requests in flight, and this one is answered
        counted = {"203.0.113.6": 1} if edge == "standalone" else {}
        assert open_by_address(server) == {"203.0.113.5": 1, **counted}
    assert refusals(server) == {"max_connections_per_address": 1}
    await held.close()
    await wait_until(lambda: not open_by_address(server), "every address to leave the table")


# --- rate limits ----------------------------------------------------------------------------


def test_token_bucket_refills_and_says_when() -> None:
    table = RateTable(2.0)
    assert [table.charge("a", 0.0) for _ in range(3)] == [0, 0, 1]  # burst of two
    assert table.charge("b", 0.0) == 0  # buckets are per address
    assert table.charge("a", 0.5) == 0  # half a second refills one
    slow = RateTable(0.1)  # one every ten seconds: burst 1, wait rounded up
    assert slow.charge("a", 0.0) == 0
    assert slow.charge("a", 1.0) == 9


def test_rate_table_is_bounded_against_rotating_addresses() -> None:
    table = RateTable(1.0, max_addresses=1000)
    for number in range(20_000):
        table.charge(f"10.{number // 65536}.{number // 256 % 256}.{number % 256}", 0.0)
        assert len(table) <= 1000
    assert len(table) == 1000


def test_idle_buckets_are_evicted_by_new_addresses() -> None:
    table = RateTable(1.0)
    for number in range(500):
        table.charge(f"old-{number}", 0.0)
    for number in range(500):
        table.charge(f"new-{number}", 10.0)  # every old bucket has refilled by now
    assert len(table) == 500


def test_rate_limited_waits_at_least_a_second() -> None:
    assert RateLimited("slow down", 0).retry_after == 1


async def test_poll_rate_limit(make_server: MakeServer) -> None:
    server = make_server(poll_rate_per_address=1)
    async with await RawConnection.open(server) as connection:
        assert (await request(connection, "/poll?channel=news")).status == 200
        response = await request(connection, "/poll?channel=news")
        assert response.status == 429
        assert response.error_code() == "rate_limited"
        assert response.header("Retry-After") == "1"
        assert (await request(connection, "/healthz")).status == 200  # still open
    assert refusals(server) == {"rate_limited_poll": 1}


async def test_publish_rate_limit_over_http(make_server: MakeServer) -> None:
    server = make_server(publish_rate_per_address=2)
    async with await RawConnection.open(server) as connection:
        assert [(await publish(connection, "news")).status for _ in range(2)] == [200, 200]
        response = await publish(connection, "news")
        assert response.status == 429
        assert response.error_code() == "rate_limited"
        assert response.header("Retry-After") == "1"
    assert refusals(server) == {"rate_limited_publish": 1}


async def test_publish_rate_limit_over_websocket(make_server: MakeServer) -> None:
    server = make_server(publish_rate_per_address=1, namespaces__chat__client_publish=True)
    async with connect(server.ws_url, proxy=None, open_timeout=TIMEOUT) as ws:

        async def ask(message: dict[str, Any]) -> dict[str, Any]:
            await ws.send(orjson.dumps(message).decode())
            answer: dict[str, Any] = orjson.loads(await within(ws.recv(), "an answer"))
            return answer

        message = {"op": "publish", "channel": "chat:a", "data": 1}
        assert (await ask({**message, "ref": 1}))["op"] == "published"
        refused = await ask({**message, "ref": 2})
        assert refused["op"] == "error"
        assert refused["ref"] == 2
        assert refused["code"] == "rate_limited"
        assert await ask({"op": "ping", "ref": 3}) == {"op": "pong", "ref": 3}
    assert refusals(server) == {"rate_limited_publish": 1}


# --- sizes and channels are counted ---------------------------------------------------------


async def test_too_large_refusals_are_counted(make_server: MakeServer) -> None:
    server = make_server(max_message_bytes=1024, namespaces__chat__client_publish=True)
    big = {"channel": "news", "data": "x" * 2000}
    async with await RawConnection.open(server) as connection:
        body = orjson.dumps(big)
        head = f"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        await connection.send(head.encode() + body)
        response = await connection.response()
        assert (response.status, response.error_code()) == (413, "too_large")
        batch = orjson.dumps({"events": [big]})
        head = f"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {len(batch)}\r\n\r\n"
        await connection.send(head.encode() + batch)
        results = (await connection.response()).json()["results"]
        assert results[0]["error"]["code"] == "too_large"
    async with await RawConnection.open(server) as connection:
        head = "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
        await connection.send(head.encode())
        assert (await connection.response()).status == 413  # refused from its head
    async with await RawConnection.open(server) as connection:
        await connection.send(ws_handshake())
        assert (await connection.head()).status == 101
        await connection.send(client_json({**big, "op": "publish", "channel": "chat:a"}))
        reader = FrameReader()
        while not (frames := reader.feed(await within(connection.reader.read(65536), "error"))):
            pass  # a read that held only a heartbeat's ping
        assert orjson.loads(frames[0][1])["code"] == "too_large"
        await connection.send(client_frame(b"x" * 8000))  # over the frame limit: 1009
        while not (frames := reader.feed(await within(connection.reader.read(65536), "close"))):
            pass
        assert frames[0][0] == 0x8 and close_code(frames[0][1]) == 1009
    await wait_until(lambda: refusals(server).get("too_large") == 5, "five too_large counted")


async def test_too_many_channels_refusals_are_counted(make_server: MakeServer) -> None:
    server = make_server(max_channels_per_connection=1)
    async with await RawConnection.open(server) as connection:
        response = await request(connection, "/sse?channel=a&channel=b")
        assert (response.status, response.error_code()) == (400, "too_many_channels")
    async with connect(server.ws_url, proxy=None, open_timeout=TIMEOUT) as ws:
        for ref, channel in ((1, "a"), (2, "b")):
            await ws.send(
                orjson.dumps({"op": "subscribe", "channel": channel, "ref": ref}).decode()
            )
            answer = orjson.loads(await within(ws.recv(), "an answer"))
        assert answer["code"] == "too_many_channels"
    assert refusals(server) == {"too_many_channels": 2}
