"""Connection tokens in the Python client against the real server (docs/protocol.md section 3).

The server checks JWTs itself: tokens live about two seconds, so every test that follows a
channel sees the server end a connection on expiry (WebSocket close ``4001``, the end of an SSE
stream, a long poll answered at ``exp``, then ``401``) and the client renew its token and
resume from its cursor, while a publisher keeps publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.client.support import FAST, QUICK_SERVER, collect, offset
from tests.conftest import RunningServer
from tests.server.tokens import SECRET, mint
from tidings import Backoff, ServerRejected, connect
from tidings.client import TRANSPORTS
from tidings.client import client as client_module

MakeServer = Callable[..., RunningServer]
API_KEY = "an-api-key-for-the-publisher"
LIFETIME = 2  # seconds a token lives (at most: exp is whole seconds)
EXPIRIES = 2  # token expiries each delivery test goes through
TIMEOUT = 20.0
MAX_PUBLISHED = 600  # the publisher's bound, whatever happens
PUBLISH_EVERY = 0.02
OPTIONS: dict[str, Any] = {**FAST, "poll_timeout": 0.5, "heartbeat_margin": 1.0}


def tokened_server(make_server: MakeServer) -> RunningServer:
    """Tokens on; ``secret`` needs one; clients may publish in ``chat`` with a publish claim.

    An API key is configured so that loopback HTTP publishing is not open to anyone: a token
    is then the only way a client publishes.
    """
    return make_server(
        api_keys=(API_KEY,),
        auth__token_secret=SECRET,
        namespaces__secret__public=False,
        namespaces__chat__public=False,
        namespaces__chat__client_publish=True,
        **QUICK_SERVER,
    )


def refusals(server: RunningServer) -> dict[str, int]:
    app = server.node
    assert app is not None
    return dict(server.call(lambda: dict(app.stats.refusals)))


@dataclass
class Issuer:
    """A token function: each call mints a fresh token and records when it was asked."""

    claims: dict[str, Any]
    lifetime: float = LIFETIME
    asked_at: list[float] = field(default_factory=list)
    expiries: list[int] = field(default_factory=list)

    async def __call__(self) -> str:
        now = time.time()
        exp = int(now + self.lifetime)
        self.asked_at.append(now)
        self.expiries.append(exp)
        return mint(lifetime=None, exp=exp, **self.claims)

    def renewed_after_expiry(self) -> bool:
        """Every renewal came once the token before it had expired, as the server says."""
        slack = 0.1  # the server's timer wheel and loop clock against the wall clock
        pairs = zip(self.asked_at[1:], self.expiries, strict=False)
        return all(asked >= exp - slack for asked, exp in pairs)


def keyed_http(server: RunningServer) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.AsyncClient(base_url=server.url, headers=headers, trust_env=False, timeout=TIMEOUT)


async def publish_keyed(http: httpx.AsyncClient, channel: str, data: Any) -> str:
    response = await http.post("/api/publish", json={"channel": channel, "data": data})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def publish_one(server: RunningServer, channel: str, data: Any) -> str:
    async with keyed_http(server) as http:
        return await publish_keyed(http, channel, data)


@contextlib.asynccontextmanager
async def publisher(server: RunningServer, channel: str) -> AsyncIterator[list[str]]:
    """Publish to ``channel`` every few milliseconds until the block ends (bounded in count)."""
    published: list[str] = []
    async with keyed_http(server) as http:
        stop = asyncio.Event()

        async def run() -> None:
            # Stopped between two publishes, never inside one, so every stored event is listed.
            for n in range(MAX_PUBLISHED):
                published.append(await publish_keyed(http, channel, n))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PUBLISH_EVERY)
                if stop.is_set():
                    return

        task = asyncio.create_task(run())
        try:
            yield published
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_renewed_tokens_lose_and_repeat_nothing_across_expiries(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened_server(make_server)
    issuer = Issuer({"sub": "ann", "channels": ["secret:*"]})
    async with connect(server.url, transport=transport, token=issuer, **OPTIONS) as client:
        subscription = client.subscribe("secret:feed")
        await subscription.open()
        async with collect(subscription) as seen:
            async with publisher(server, "secret:feed") as published:
                await seen.wait_for(
                    lambda _: len(issuer.asked_at) > EXPIRIES, "two renewals", TIMEOUT
                )
            await seen.wait_events(len(published), TIMEOUT)
            events = list(seen.events)
    assert [event.id for event in events] == published
    offsets = [offset(event.id) for event in events]
    assert offsets == list(range(1, len(published) + 1))
    assert issuer.renewed_after_expiry(), (issuer.asked_at, issuer.expiries)
    assert subscription.connections > EXPIRIES
    assert len(published) < MAX_PUBLISHED  # the renewals came before the publisher ran out
    # Each expiry costs at most one refused request (the 401 after an SSE stream or a poll
    # ended); a WebSocket closed with 4001 renews before it reconnects.
    refused = refusals(server).get("unauthorized", 0)
    assert refused <= (0 if transport == "websocket" else len(issuer.asked_at)), refused


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_without_the_channel_is_a_403_for_the_application(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened_server(make_server)
    issuer = Issuer({"channels": ["secret:mine"]}, lifetime=60)
    async with connect(server.url, transport=transport, token=issuer, **OPTIONS) as client:
        theirs = client.subscribe("secret:theirs")
        with pytest.raises(ServerRejected) as refused:
            async with asyncio.timeout(TIMEOUT):
                async for _ in theirs:
                    pass
        with pytest.raises(StopAsyncIteration):
            await anext(theirs)  # the subscription is over, not retried
        mine = client.subscribe("secret:mine")  # the same client and token go on
        await mine.open()
        async with collect(mine) as seen:
            published = await publish_one(server, "secret:mine", "allowed")
            assert [event.id for event in await seen.wait_events(1)] == [published]
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert "secret:theirs" in refused.value.message
    assert len(issuer.asked_at) == 1
    assert refusals(server) == {"forbidden": 1}  # asked once: no loop


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_function_returning_expired_tokens_ends_after_the_retries(
    make_server: MakeServer, transport: str
) -> None:
    server = tokened_server(make_server)
    issuer = Issuer({"channels": ["secret:*"]}, lifetime=-10)
    backoff = Backoff(initial=0.05, maximum=0.05, random=lambda: 1.0)
    options = {**OPTIONS, "backoff": backoff, "token_retries": 3}
    async with connect(server.url, transport=transport, token=issuer, **options) as client:
        subscription = client.subscribe("secret:feed")
        started = time.monotonic()
        with pytest.raises(ServerRejected) as refused:
            async with asyncio.timeout(TIMEOUT):
                await subscription.open()
        elapsed = time.monotonic() - started
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert "expired" in refused.value.message
    assert "3 renewed tokens were refused in a row" in refused.value.message
    assert len(issuer.asked_at) == 4  # the first token and three renewals
    assert refusals(server) == {"unauthorized": 4}
    assert elapsed >= 0.1  # the second and third renewals waited the backoff


# --- publishing over the WebSocket with a token's publish claim -----------------------------


@pytest.fixture
def http_publishes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every publish the client sends over HTTP instead of the socket."""
    sent: list[dict[str, Any]] = []
    real = client_module.post_publish

    async def recording(
        http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> str:
        sent.append(body)
        return await real(http, url, body, headers)

    monkeypatch.setattr(client_module, "post_publish", recording)
    return sent


async def test_websocket_publish_with_the_publish_claim(
    make_server: MakeServer, http_publishes: list[dict[str, Any]]
) -> None:
    server = tokened_server(make_server)
    issuer = Issuer({"channels": ["chat:*"], "publish": ["chat:lobby"]}, lifetime=60)
    async with connect(server.url, transport="websocket", token=issuer, **OPTIONS) as client:
        lobby = client.subscribe("chat:lobby")
        await lobby.open()
        async with collect(lobby) as seen:
            first = await client.publish("chat:lobby", {"text": "hi"})
            assert http_publishes == []  # over the socket
            with pytest.raises(ServerRejected) as refused:
                await client.publish("chat:other", {"text": "not mine"})
            second = await client.publish("chat:lobby", {"text": "still"})
            events = await seen.wait_events(2)
    assert [(event.id, event.data) for event in events] == [
        (first, {"text": "hi"}),
        (second, {"text": "still"}),
    ]
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert "chat:other" in refused.value.message
    # The refusal was tried once over HTTP (an API key could publish there; this token
    # cannot), and the channel the claim allows stayed on the socket.
    assert [body["channel"] for body in http_publishes] == ["chat:other"]
    assert refusals(server) == {"forbidden": 2}
    assert len(issuer.asked_at) == 1


async def test_websocket_publish_without_a_publish_claim_is_refused(
    make_server: MakeServer, http_publishes: list[dict[str, Any]]
) -> None:
    server = tokened_server(make_server)
    issuer = Issuer({"channels": ["chat:*"]}, lifetime=60)
    async with connect(server.url, transport="websocket", token=issuer, **OPTIONS) as client:
        lobby = client.subscribe("chat:lobby")
        await lobby.open()
        async with collect(lobby) as seen:
            with pytest.raises(ServerRejected) as refused:
                await client.publish("chat:lobby", "no claim")
            published = await publish_one(server, "chat:lobby", "from the API")
            events = await seen.wait_events(1)  # the socket stayed open
    assert [event.id for event in events] == [published]
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert "publish claim" in refused.value.message
    assert [body["channel"] for body in http_publishes] == ["chat:lobby"]
    assert refusals(server) == {"forbidden": 2}  # the socket's answer, then HTTP's


async def test_an_sse_stream_ended_by_expiry_comes_back_without_the_long_retry(
    make_server: MakeServer,
) -> None:
    """The stream opens with ``retry: 5000``; its end at expiry asks for no wait (the next
    request meets the 401 and renews), so the renewal follows the expiry at once."""
    server = make_server(
        api_keys=(API_KEY,),
        auth__token_secret=SECRET,
        namespaces__secret__public=False,
        sse_retry_ms=5000,
        drain_seconds=0,
    )
    issuer = Issuer({"channels": ["secret:*"]})
    async with connect(server.url, transport="sse", token=issuer, **OPTIONS) as client:
        subscription = client.subscribe("secret:feed")
        await subscription.open()
        async with collect(subscription) as seen:
            async with publisher(server, "secret:feed") as published:
                await seen.wait_for(
                    lambda _: subscription.connections > 1 and len(issuer.asked_at) > 1,
                    "the stream back with a renewed token",
                    TIMEOUT,
                )
            await seen.wait_events(len(published), TIMEOUT)
    assert [event.id for event in seen.events] == published
    assert issuer.renewed_after_expiry()
    assert issuer.asked_at[1] - issuer.expiries[0] < 1.0
    assert len(published) < MAX_PUBLISHED
