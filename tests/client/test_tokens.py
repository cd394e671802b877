"""Connection tokens in the Python client, against the real server behind a token gate.

The gate (tests/client/gate.py) checks tokens as docs/protocol.md section 3 says: ``401`` before
any upgrade or stream, WebSocket close ``4001`` and the end of an SSE stream at expiry, ``401``
on the next poll. Tokens live one second, so a test sees several expiries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from tests.client.gate import token_gate
from tests.client.support import (
    FAST,
    QUICK_SERVER,
    collect,
    offset,
    publish_many,
    wait_until,
)
from tests.conftest import RunningServer
from tidings import Backoff, ClientError, ServerRejected, connect, publish, publish_async
from tidings.client import TRANSPORTS, ClientOptions
from tidings.client.events import Closed
from tidings.client.websocket import closed_by

MakeServer = Callable[..., RunningServer]
ROUNDS = 3  # token renewals each test goes through
TIMEOUT = 10.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_expiry_on_every_transport_loses_and_repeats_nothing(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    published: list[str] = []
    async with token_gate(server.port, lifetime=1.0) as gate:
        issued: list[str] = []

        async def token() -> str:
            # Publish while the client is between connections: the resume must bring these.
            if issued:
                published.extend(await publish_many(server, "news", [len(issued)] * 3))
            issued.append(gate.issue())
            return issued[-1]

        options = {**FAST, "poll_timeout": 0.3, "heartbeat_margin": 1.0}
        async with connect(gate.url, transport=transport, token=token, **options) as client:
            subscription = client.subscribe("news")
            await subscription.open()
            async with collect(subscription) as seen:
                for round_ in range(ROUNDS):
                    published.extend(await publish_many(server, "news", [f"r{round_}"] * 2))
                    await seen.wait_for(
                        lambda _, n=round_: len(issued) > n + 1, f"renewal {round_ + 1}"
                    )
                await seen.wait_events(len(published))
                events = list(seen.events)
    assert [event.id for event in events] == published
    offsets = [offset(event.id) for event in events]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert len(issued) >= ROUNDS + 1
    assert {(p.where, p.token in issued) for p in gate.presented} == {("header", True)}
    if transport == "websocket":
        # Close 4001 renews before reconnecting: the old token is never presented again.
        assert gate.refused == []
        assert gate.expired_streams >= ROUNDS
    else:
        assert len(gate.refused) >= ROUNDS  # the early end, then a 401, then the renewal


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_refused_even_when_renewed_is_raised_without_a_hot_loop(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return "never-issued"

    backoff = Backoff(initial=0.05, maximum=0.05, random=lambda: 1.0)
    async with token_gate(server.port) as gate:
        options = {**FAST, "backoff": backoff, "token_retries": 3}
        async with connect(gate.url, transport=transport, token=token, **options) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ServerRejected) as refused:
                async with asyncio.timeout(TIMEOUT):
                    await client.subscribe("news").open()
            elapsed = loop.time() - started
    assert refused.value.status == 401
    assert "3 renewed tokens were refused" in str(refused.value)
    assert calls == 4  # the first token and three renewals, then it stops
    assert len(gate.presented) == 4
    assert elapsed >= 0.1  # the second and third renewals waited the backoff


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_fixed_token_refused_is_raised_at_once(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with (
        token_gate(server.port) as gate,
        connect(gate.url, transport=transport, token="stale", **FAST) as client,
    ):
        with pytest.raises(ServerRejected) as refused:
            await client.subscribe("news").open()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert [(p.token, p.where) for p in gate.presented] == [("stale", "header")]


@pytest.mark.parametrize("transport", ["sse", "long_poll", "poll"])
async def test_a_forbidden_channel_is_raised_once_and_the_others_go_on(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with token_gate(server.port, lifetime=60, forbidden=frozenset({"secret"})) as gate:
        token = gate.issue()
        async with connect(gate.url, transport=transport, token=token, **FAST) as client:
            with pytest.raises(ServerRejected) as refused:
                await client.subscribe("secret").open()
            news = client.subscribe("news")
            await news.open()
            async with collect(news) as seen:
                ids = await publish_many(server, "news", ["still here"])
                assert [event.id for event in await seen.wait_events(1)] == ids
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert sum(1 for p in gate.presented if p.path != "/api/publish" and "secret" in p.path) == 0
    assert len(gate.refused) == 1


async def test_the_token_callable_is_asked_once_for_all_subscriptions(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUICK_SERVER)
    async with token_gate(server.port, lifetime=60) as gate:
        calls: list[str] = []

        def token() -> str:  # a plain function works as well as a coroutine function
            calls.append(gate.issue())
            return calls[-1]

        async with connect(gate.url, transport="sse", token=token, **FAST) as client:
            subscriptions = [client.subscribe(name) for name in ("a", "b", "c")]
            await asyncio.gather(*(s.open() for s in subscriptions))
    assert len(calls) == 1
    assert {p.token for p in gate.presented} == {calls[0]}


async def test_a_failing_token_callable_is_a_client_error(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)

    async def token() -> str:
        raise RuntimeError("the token service is down")

    async with connect(server.url, transport="sse", token=token, **FAST) as client:
        with pytest.raises(ClientError, match="the token service is down"):
            await client.subscribe("news").open()


def test_a_token_must_be_a_string_or_a_callable() -> None:
    with pytest.raises(ClientError, match="string or a callable"):
        connect(token=42)  # type: ignore[arg-type]


# Publishing with a token


async def test_client_publish_over_http_renews_an_expired_token(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with token_gate(server.port, lifetime=60) as gate:
        tokens = iter(["expired", gate.issue()])
        async with connect(gate.url, transport="poll", token=lambda: next(tokens)) as client:
            cursor = await client.publish("news", {"n": 1})
    assert offset(cursor) == 1
    assert [(p.path, p.token) for p in gate.presented] == [
        ("/api/publish", "expired"),
        ("/api/publish", "tok-1"),
    ]


async def test_one_shot_publishers_send_the_token(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with token_gate(server.port, lifetime=60) as gate:
        token = gate.issue()
        first = await publish_async("news", 1, url=gate.url, token=token)
        second = await asyncio.to_thread(publish, "news", 2, url=gate.url, token=token)
        with pytest.raises(ServerRejected) as refused:
            await publish_async("news", 3, url=gate.url, token="forged")
    assert (offset(first), offset(second)) == (1, 2)
    assert refused.value.status == 401
    assert [p.where for p in gate.presented] == ["header"] * 3
    with pytest.raises(ClientError, match="not both"):
        publish("news", 1, url=gate.url, api_key="k", token=token)


async def test_a_shared_websocket_closed_with_4001_renews_once(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with token_gate(server.port, lifetime=1.0) as gate:
        issued: list[str] = []

        async def token() -> str:
            issued.append(gate.issue())
            return issued[-1]

        async with (
            connect(gate.url, transport="websocket", token=token, **FAST) as client,
            contextlib.AsyncExitStack() as stack,
        ):
            subscriptions = [client.subscribe(name) for name in ("a", "b", "c")]
            await asyncio.gather(*(s.open() for s in subscriptions))
            seen = [await stack.enter_async_context(collect(s)) for s in subscriptions]
            await wait_until(
                lambda: all(s.connections == 2 for s in subscriptions), "every channel back"
            )
            assert len(issued) == 2  # one renewal for the three channels of the socket
            for name, collector in zip(("a", "b", "c"), seen, strict=True):
                ids = await publish_many(server, name, ["after"])
                assert [event.id for event in await collector.wait_events(1)] == ids
    assert gate.refused == []
    assert [p.path for p in gate.presented] == ["/ws", "/ws"]


def test_close_4001_asks_for_a_new_token_and_other_closes_do_not() -> None:
    assert closed_by(4001, "token expired", ClientOptions()) == Closed(
        "token expired", 0.0, unauthorized=True
    )
    assert not closed_by(1006, "gone", ClientOptions()).unauthorized
