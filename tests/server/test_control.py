"""``POST /api/disconnect`` and ``POST /api/unsubscribe`` on one node (docs/protocol.md
sections 3, 4, 5, 6 and 7): what each technique sees, revoked tokens, and the API's rules.
tests/cluster/test_control.py proves the same across nodes, through Redis and NATS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningServer
from tests.server.support import (
    SSEClient,
    async_http_client,
    query,
    sse_stream,
    within,
)
from tests.server.test_poll import start_long_poll
from tests.server.test_websocket import assert_usable, expect_closed, receive, subscribe, websocket
from tests.server.tokens import SECRET, mint
from tidings.protocol.control import Revocation

pytestmark = pytest.mark.timeout(60)

API_KEY = "control-key-for-tests"
KEY = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def node(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(api_keys=(API_KEY,), auth__token_secret=SECRET)


@pytest.fixture
async def client(node: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with async_http_client(node) as http:
        yield http


def token(sub: str, **claims: Any) -> str:
    claims.setdefault("iat", int(time.time()) - 1)
    return mint(sub=sub, **claims)


async def control(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    return await client.post(f"/api/{path}", content=orjson.dumps(body), headers=KEY)


async def reached(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> int:
    answer = await control(client, path, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == body["sub"]
    count: int = answer.json()["connections"]
    return count


async def apublish(client: httpx.AsyncClient, channel: str, data: Any) -> str:
    answer = await client.post("/api/publish", json={"channel": channel, "data": data}, headers=KEY)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def rest_of(stream: SSEClient) -> list[Any]:
    """Read the stream to its end; every message after what was already taken."""
    messages = list(stream.pending)
    stream.pending.clear()
    async for chunk in stream._chunks:
        stream.raw += chunk
        messages.extend(stream.parser.feed(chunk))
    return messages


async def ended(stream: SSEClient) -> list[Any]:
    return await within(rest_of(stream), "the SSE stream to end")


# The API's own rules


@pytest.mark.parametrize("path", ["disconnect", "unsubscribe"])
async def test_the_control_api_needs_the_api_key(node: RunningServer, path: str) -> None:
    async with async_http_client(node) as client:
        body = {"sub": "u", "channel": "news"}
        bare = await client.post(f"/api/{path}", json=body)
        assert (bare.status_code, bare.json()["error"]["code"]) == (401, "unauthorized")
        user = {"Authorization": f"Bearer {token('u')}"}  # a connection token never opens it
        assert (await client.post(f"/api/{path}", json=body, headers=user)).status_code == 401
        assert (await client.get(f"/api/{path}", headers=KEY)).status_code == 405


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("disconnect", b"{", "invalid_json"),
        ("disconnect", b"[1]", "invalid_json"),
        ("disconnect", b"{}", "invalid_field"),
        ("disconnect", b'{"sub": ""}', "invalid_field"),
        ("disconnect", b'{"sub": 7}', "invalid_field"),
        ("disconnect", b'{"sub": "u", "reconnect": "no"}', "invalid_field"),
        ("unsubscribe", b'{"sub": "u"}', "invalid_channel"),
        ("unsubscribe", b'{"sub": "u", "channel": "bad channel"}', "invalid_channel"),
        ("unsubscribe", b'{"channel": "news"}', "invalid_field"),
    ],
)
async def test_a_bad_control_request_is_refused_and_reaches_nobody(
    node: RunningServer, client: httpx.AsyncClient, path: str, body: bytes, code: str
) -> None:
    async with websocket(node, f"/ws?token={token('u')}") as ws:
        await subscribe(ws, "news")
        answer = await client.post(f"/api/{path}", content=body, headers=KEY)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, code)
        await assert_usable(ws)


async def test_an_unknown_sub_reaches_no_connection_and_is_no_error(
    client: httpx.AsyncClient,
) -> None:
    assert await reached(client, "disconnect", {"sub": "nobody"}) == 0
    assert await reached(client, "disconnect", {"sub": "nobody", "reconnect": False}) == 0
    assert await reached(client, "unsubscribe", {"sub": "nobody", "channel": "news"}) == 0


async def test_without_api_keys_loopback_may_call_it(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(auth__token_secret=SECRET)
    async with async_http_client(server) as client:
        assert (await client.post("/api/disconnect", json={"sub": "u"})).status_code == 200


# Disconnect


async def test_disconnect_ends_every_connection_of_the_sub_and_no_other(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    alice, bob = token("alice"), token("bob")
    async with (
        websocket(node, f"/ws?token={alice}") as ws,
        websocket(node, f"/ws?token={bob}") as other,
        sse_stream(client, "/sse?" + query(["news"], token=alice)) as stream,
    ):
        await subscribe(ws, "news")
        await subscribe(other, "news")
        poll = await start_long_poll(node, client, ["news"], token=alice, timeout=30)
        assert await reached(client, "disconnect", {"sub": "alice", "reconnect": True}) == 3
        await expect_closed(ws, 4002)
        messages = await ended(stream)
        assert [(m.event, orjson.loads(m.data)) for m in messages] == [
            ("tidings.disconnect", {"reconnect": True})
        ]
        assert stream.raw.endswith(b"retry: 0\n\n")  # come back at once
        held = await within(poll, "the long poll's answer")
        assert held.status_code == 204
        assert held.headers["tidings-cursor"]
        await assert_usable(other)
        # reconnecting is allowed: the token is still good
        again = await client.get("/poll?" + query(["news"], token=alice))
        assert again.status_code == 200
    assert await reached(client, "disconnect", {"sub": "alice"}) == 0  # idempotent


async def test_disconnect_without_reconnect_refuses_the_tokens_issued_before_it(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    old, no_iat = token("carol"), mint(sub="carol")
    async with (
        websocket(node, f"/ws?token={old}") as ws,
        sse_stream(client, "/sse?" + query(["news"], token=old)) as stream,
    ):
        await subscribe(ws, "news")
        poll = await start_long_poll(node, client, ["news"], token=old, timeout=30)
        assert await reached(client, "disconnect", {"sub": "carol", "reconnect": False}) == 3
        await expect_closed(ws, 4003)
        messages = await ended(stream)
        assert [(m.event, orjson.loads(m.data)) for m in messages] == [
            ("tidings.disconnect", {"reconnect": False})
        ]
        held = await within(poll, "the long poll's answer")
        assert held.status_code == 204
    cursor = held.headers["tidings-cursor"]
    for refused in (old, no_iat):
        for target in (
            "/poll?" + query(["news"], token=refused, since=cursor, timeout=5),
            "/sse?" + query(["news"], token=refused),
        ):
            answer = await client.get(target)
            assert answer.status_code == 401, target
            assert "revoked" in answer.json()["error"]["message"]
        with pytest.raises(InvalidStatus) as handshake:
            async with websocket(node, f"/ws?token={refused}"):
                pass
        assert handshake.value.response.status_code == 401
    fresh = token("carol", iat=int(time.time()) + 1)  # issued after the call
    assert (await client.get("/poll?" + query(["news"], token=fresh))).status_code == 200
    other = token("dave")
    assert (await client.get("/poll?" + query(["news"], token=other))).status_code == 200


async def test_a_token_that_lives_longer_than_max_token_seconds_is_refused(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(auth__token_secret=SECRET, auth__max_token_seconds=600)
    async with async_http_client(server) as client:
        long = await client.get("/poll?" + query(["news"], token=mint(lifetime=3600, sub="u")))
        assert long.status_code == 401
        assert "max_token_seconds" in long.json()["error"]["message"]
        short = await client.get("/poll?" + query(["news"], token=mint(lifetime=60, sub="u")))
        assert short.status_code == 200


# Unsubscribe


async def test_unsubscribe_ends_the_channel_on_every_technique_and_tells_the_client(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    erin = token("erin")
    async with (
        websocket(node, f"/ws?token={erin}") as ws,
        sse_stream(client, "/sse?" + query(["news"], token=erin)) as single,
        sse_stream(client, "/sse?" + query(["news", "chat"], token=erin, envelope=1)) as multi,
    ):
        await subscribe(ws, "news", ref=1)
        await subscribe(ws, "chat", ref=2)
        poll = await start_long_poll(node, client, ["chat", "news"], token=erin, timeout=30)
        body = {"sub": "erin", "channel": "news"}
        assert await reached(client, "unsubscribe", body) == 4
        assert await receive(ws) == {
            "op": "unsubscribed",
            "ref": None,
            "channel": "news",
            "reason": "server",
        }
        told = {"channel": "news", "reason": "server"}
        messages = await ended(single)  # its last channel: the stream ends
        assert [(m.event, orjson.loads(m.data)) for m in messages] == [
            ("tidings.unsubscribed", told)
        ]
        message = await multi.next()
        assert (message.event, orjson.loads(message.data)) == ("tidings.unsubscribed", told)
        held = (await within(poll, "the long poll's answer")).json()
        assert held["events"] == [] and held["unsubscribed"] == ["news"]
        assert len(held["cursor"].split(",")) == 2

        await apublish(client, "news", "not for erin")
        live = await apublish(client, "chat", "for erin")
        assert (await receive(ws))["id"] == live  # nothing of news came before it
        event = orjson.loads((await multi.next()).data)
        assert (event["channel"], event["id"]) == ("chat", live)
        assert await reached(client, "unsubscribe", body) == 0  # idempotent


async def on_node(node: RunningServer, coroutine: Any) -> Any:
    """Await ``coroutine`` on the server's own loop."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, node.loop))


async def test_a_revocation_the_node_missed_is_applied_at_its_next_reload(
    node: RunningServer, client: httpx.AsyncClient
) -> None:
    """A node that missed the control message (its link was down) learns the revocation
    from the broker: it refuses the tokens and ends their connections, sparing a token
    issued after it."""
    old, fresh = token("gina"), token("gina", iat=int(time.time()) + 2)
    app = node.node
    assert app is not None
    async with (
        websocket(node, f"/ws?token={old}") as ws,
        websocket(node, f"/ws?token={fresh}") as spared,
    ):
        await subscribe(ws, "news")
        await subscribe(spared, "news")
        now = time.time()
        await on_node(node, app.broker.revoke(Revocation("gina", now + 1, now + 600)))
        assert (await client.get("/poll?" + query(["news"], token=old))).status_code == 200
        await on_node(node, app._reload())  # what the node does every RELOAD_SECONDS
        await expect_closed(ws, 4003)
        assert (await client.get("/poll?" + query(["news"], token=old))).status_code == 401
        assert (await client.get("/poll?" + query(["news"], token=fresh))).status_code == 200
        await assert_usable(spared)
