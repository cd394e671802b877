"""Connection tokens on every transport (docs/protocol.md section 3): refusals, expiry, logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningServer, settings_with
from tests.server.support import (
    TIMEOUT,
    RawConnection,
    Response,
    async_http_client,
    get,
    within,
)
from tests.server.test_websocket import assert_usable, receive, request, subscribe
from tests.server.tokens import (
    SECRET,
    forge,
    mint,
    public_pem,
    rsa_key,
    short_lived,
    write_public_key,
)
from tidings.exceptions import ConfigError
from tidings.server.core.access import TokenVerifier
from tidings.server.core.transports.stream import StreamConnection
from tidings.server.uvloop.server import Server

API_KEY = "an-api-key"
BAD_TOKENS = {
    "garbage": "not-a-jwt",
    "bad signature": mint(key="not the server's secret, but thirty-two bytes", channels=["*"]),
    "expired": mint(lifetime=-5, channels=["*"]),
    "alg none": forge({"alg": "none"}, {"channels": ["*"], "exp": int(time.time()) + 600}),
}


@pytest.fixture
def tokened(make_server: Callable[..., RunningServer]) -> RunningServer:
    """Tokens on; every namespace private except ``news``; clients may publish in ``chat``."""
    return make_server(
        api_keys=(API_KEY,),
        auth__token_secret=SECRET,
        namespaces__default__public=False,
        namespaces__news__public=True,
        namespaces__chat__client_publish=True,
    )


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


async def answer(server: RunningServer, target: str, *headers: str) -> Response:
    """The status, headers and (when framed by Content-Length) body of one request."""
    async with await RawConnection.open(server) as connection:
        await connection.send(get(target, *headers))
        response = await connection.head()
        length = response.header("Content-Length")
        if length is not None:
            response.body = await within(connection.reader.readexactly(int(length)), "a body")
        return response


async def refused(server: RunningServer, target: str, *headers: str) -> tuple[int, str]:
    response = await answer(server, target, *headers)
    return response.status, response.error_code()


def refusals(server: RunningServer) -> dict[str, int]:
    app = server.node
    assert app is not None
    return dict(server.call(lambda: dict(app.stats.refusals)))


# --- SSE and polls ---------------------------------------------------------------------------

SUBSCRIBE_PATHS = ["/sse?channel={}", "/poll?channel={}"]


@pytest.mark.parametrize("path", SUBSCRIBE_PATHS)
async def test_a_private_channel_needs_a_token(tokened: RunningServer, path: str) -> None:
    assert await refused(tokened, path.format("secret")) == (401, "unauthorized")
    assert await refused(tokened, path.format("news:today&channel=secret")) == (
        401,
        "unauthorized",
    )
    assert refusals(tokened) == {"unauthorized": 2}


@pytest.mark.parametrize("path", SUBSCRIBE_PATHS)
@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_a_bad_token_is_refused_even_for_a_public_channel(
    tokened: RunningServer, path: str, kind: str
) -> None:
    token = BAD_TOKENS[kind]
    for channel in ("secret", "news:today"):
        target = path.format(channel)
        assert await refused(tokened, target, bearer(token)) == (401, "unauthorized")
        target += f"&token={quote(token)}"
        assert await refused(tokened, target) == (401, "unauthorized")


@pytest.mark.parametrize("path", SUBSCRIBE_PATHS)
async def test_a_token_without_the_channel_is_forbidden(tokened: RunningServer, path: str) -> None:
    token = mint(channels=["other", "news:*"])
    assert await refused(tokened, path.format("secret"), bearer(token)) == (403, "forbidden")
    target = path.format("news:today&channel=secret") + f"&token={token}"
    assert await refused(tokened, target) == (403, "forbidden")
    assert refusals(tokened) == {"forbidden": 2}


@pytest.mark.parametrize("path", SUBSCRIBE_PATHS)
async def test_a_token_with_the_channel_is_served(tokened: RunningServer, path: str) -> None:
    token = mint(channels=["secret"])
    assert (await answer(tokened, path.format("secret"), bearer(token))).status == 200
    assert (await answer(tokened, path.format("secret") + f"&token={token}")).status == 200
    assert (await answer(tokened, path.format("news:today"))).status == 200  # public, no token


@pytest.mark.parametrize("path", SUBSCRIBE_PATHS)
async def test_a_prefix_pattern_allows_its_prefix_only(tokened: RunningServer, path: str) -> None:
    token = mint(channels=["chat:*"])
    for channel in ("chat:lobby", "chat:a/b"):
        assert (await answer(tokened, path.format(channel), bearer(token))).status == 200
    for channel in ("chatter", "chat", "secret"):
        assert await refused(tokened, path.format(channel), bearer(token)) == (403, "forbidden")


async def test_other_authorization_schemes_are_not_tokens(tokened: RunningServer) -> None:
    """A proxy's Basic credentials pass through: they are not a bad token."""
    basic = "Authorization: Basic dTpw"
    assert (await answer(tokened, "/poll?channel=news:a", basic)).status == 200
    token = mint(channels=["secret"])
    assert (await answer(tokened, f"/poll?channel=secret&token={token}", basic)).status == 200


async def test_an_rs256_server_refuses_hs256_signed_with_its_public_key(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    private = rsa_key()
    server = make_server(
        auth__token_public_key_file=str(write_public_key(tmp_path, private)),
        namespaces__default__public=False,
    )
    good = mint(key=private, algorithm="RS256", channels=["*"])
    assert (await answer(server, "/poll?channel=a", bearer(good))).status == 200
    claims = {"channels": ["*"], "exp": int(time.time()) + 60}
    forged = forge({"alg": "HS256", "typ": "JWT"}, claims, public_pem(private))
    assert await refused(server, "/poll?channel=a", bearer(forged)) == (401, "unauthorized")


async def test_a_bad_key_file_stops_the_server(tmp_path: Path) -> None:
    settings = settings_with(auth__token_public_key_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"auth\.token_public_key_file"):
        await Server(settings).start()


# --- WebSocket -------------------------------------------------------------------------------


def handshake(target: str, *headers: str, version: str = "13") -> bytes:
    return get(
        target,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"Sec-WebSocket-Version: {version}",
        *headers,
    )


def ws_connect(server: RunningServer, token: str | None = None, **options: Any) -> Any:
    url = server.ws_url + (f"?token={token}" if token else "")
    return connect(url, proxy=None, open_timeout=TIMEOUT, ping_interval=None, **options)


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_a_bad_token_is_a_401_before_the_upgrade(tokened: RunningServer, kind: str) -> None:
    token = BAD_TOKENS[kind]
    for target, headers in ((f"/ws?token={quote(token)}", ()), ("/ws", (bearer(token),))):
        async with await RawConnection.open(tokened) as connection:
            await connection.send(handshake(target, *headers))
            response = await connection.response()
            assert (response.status, response.error_code()) == (401, "unauthorized")
            await connection.closed_by_server()


async def subscribe_error(ws: ClientConnection, channel: str) -> str:
    answer = await request(ws, {"op": "subscribe", "channel": channel, "ref": 7})
    assert answer["op"] == "error" and answer["ref"] == 7 and answer["message"], answer
    return str(answer["code"])


async def test_subscribing_needs_a_token_that_allows_the_channel(tokened: RunningServer) -> None:
    async with ws_connect(tokened) as ws:
        assert await subscribe_error(ws, "secret") == "unauthorized"
        await subscribe(ws, "news:today")
        await assert_usable(ws)
    async with ws_connect(tokened, mint(channels=["chat:*"])) as ws:
        await subscribe(ws, "chat:lobby")
        for channel in ("chatter", "secret"):
            assert await subscribe_error(ws, channel) == "forbidden"
        await subscribe(ws, "news:today", ref=2)
        await assert_usable(ws)
    assert refusals(tokened) == {"unauthorized": 1, "forbidden": 2}


async def test_the_token_can_come_as_a_header(tokened: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {mint(channels=['secret'])}"}
    async with ws_connect(tokened, additional_headers=headers) as ws:
        await subscribe(ws, "secret")


async def test_a_token_on_a_public_namespace_is_kept(tokened: RunningServer) -> None:
    async with ws_connect(tokened, mint(sub="ann", info={"name": "Ann"})) as ws:
        await subscribe(ws, "news:today")
        app = tokened.node
        assert app is not None
        opened = tokened.call(lambda: list(app.connections))
        streams = [c for c in opened if isinstance(c, StreamConnection)]
        assert [(c.identity.sub, c.identity.info) for c in streams] == [("ann", {"name": "Ann"})]


async def publish_answer(ws: ClientConnection, channel: str, ref: int = 3) -> dict[str, Any]:
    return await request(ws, {"op": "publish", "channel": channel, "data": 1, "ref": ref})


async def test_publishing_needs_the_publish_claim(tokened: RunningServer) -> None:
    async with ws_connect(tokened, mint(publish=["chat:lobby"])) as ws:
        assert (await publish_answer(ws, "chat:lobby"))["op"] == "published"
        for channel in ("chat:other", "news:today", "secret"):
            answer = await publish_answer(ws, channel)
            assert (answer["op"], answer["code"]) == ("error", "forbidden"), answer
        await assert_usable(ws)
    async with ws_connect(tokened) as ws:
        answer = await publish_answer(ws, "chat:lobby")
        assert (answer["op"], answer["code"]) == ("error", "unauthorized"), answer
        await assert_usable(ws)


async def expect_close(ws: ClientConnection, code: int, timeout: float) -> str:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await within(ws.recv(), "the server to close", timeout)
    assert closed.value.rcvd is not None, "the server closed without a close frame"
    assert closed.value.rcvd.code == code
    return closed.value.rcvd.reason


async def test_an_expiring_token_closes_the_websocket_with_4001(tokened: RunningServer) -> None:
    async with ws_connect(tokened, short_lived(channels=["secret"])) as ws:
        await subscribe(ws, "secret")
        reason = await expect_close(ws, 4001, timeout=TIMEOUT)
    assert reason == "token expired: fetch a new token and reconnect"


# --- expiry on SSE and long polls ----------------------------------------------------------


async def test_an_expiring_token_ends_the_sse_stream(tokened: RunningServer) -> None:
    token = short_lived(channels=["secret"])
    async with await RawConnection.open(tokened) as connection:
        await connection.send(get("/sse?channel=secret", bearer(token)))
        assert (await connection.head()).status == 200
        rest = await connection.body_until_closed()
        assert rest.startswith(b"retry: ") and rest.endswith(b"\n\n")
        assert rest.endswith(b"\n\nretry: 0\n\n")  # come back at once: the 401 renews
    assert await refused(tokened, "/sse?channel=secret", bearer(token)) == (401, "unauthorized")


async def test_a_long_poll_does_not_outlive_its_token(tokened: RunningServer) -> None:
    token = short_lived(channels=["secret"])
    first = await answer(tokened, "/poll?channel=secret", bearer(token))
    cursor = first.json()["cursor"]
    started = time.monotonic()
    target = f"/poll?channel=secret&since={cursor}&timeout=30"
    held = await answer(tokened, target, bearer(token))
    assert held.status == 204 and held.header("Tidings-Cursor") == cursor
    assert time.monotonic() - started < TIMEOUT
    assert await refused(tokened, target, bearer(token)) == (401, "unauthorized")


# --- POST /api/publish -------------------------------------------------------------------------


async def post(server: RunningServer, body: Any, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    async with async_http_client(server) as client:
        return await client.post("/api/publish", json=body, headers=headers)


async def test_publish_with_a_token(tokened: RunningServer) -> None:
    token = f"Bearer {mint(publish=['chat:*'])}"
    ok = await post(tokened, {"channel": "chat:lobby", "data": 1}, token)
    assert ok.status_code == 200 and ok.json()["channel"] == "chat:lobby"
    for channel in ("news:today", "secret", "chatter"):  # no client_publish, or no claim
        refused = await post(tokened, {"channel": channel, "data": 1}, token)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


async def test_a_batch_with_a_token_refuses_entries_one_by_one(tokened: RunningServer) -> None:
    token = f"Bearer {mint(publish=['chat:lobby'])}"
    channels = ["chat:lobby", "chat:other", "secret", "chat:lobby"]
    body = {"events": [{"channel": channel, "data": n} for n, channel in enumerate(channels)]}
    results = (await post(tokened, body, token)).json()["results"]
    assert [result.get("error", {}).get("code") for result in results] == [
        None,
        "forbidden",
        "forbidden",
        None,
    ]
    assert refusals(tokened) == {"forbidden": 2}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-key", "Bearer a.b.c", f"Bearer {BAD_TOKENS['bad signature']}"],
)
async def test_publish_without_a_valid_key_or_token_is_401(
    tokened: RunningServer, authorization: str | None
) -> None:
    response = await post(tokened, {"channel": "chat:lobby", "data": 1}, authorization)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


async def test_the_api_key_still_publishes_anywhere(tokened: RunningServer) -> None:
    response = await post(tokened, {"channel": "secret", "data": 1}, f"Bearer {API_KEY}")
    assert response.status_code == 200


async def test_a_token_does_not_open_the_history_api(tokened: RunningServer) -> None:
    token = mint(channels=["*"], publish=["*"])
    status = await refused(tokened, "/api/history?channel=secret", bearer(token))
    assert status == (401, "unauthorized")


# --- tokens stay out of the logs -------------------------------------------------------------


async def test_a_token_in_the_query_never_reaches_the_log(
    tokened: RunningServer,
    edge: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    good, bad = mint(sub="secret-holder", channels=["*"]), BAD_TOKENS["bad signature"]
    for token in (good, bad):
        for path in ("/sse?channel=secret", "/poll?channel=secret&timeout=x", "/ws?channel=x"):
            await answer(tokened, f"{path}&token={token}")
        async with await RawConnection.open(tokened) as connection:  # a failed handshake
            await connection.send(handshake(f"/ws?token={token}", version="99"))
            # the standalone edge checks the token first; an ASGI server checks the
            # handshake before the app sees it (docs/asgi.md, "What is weaker under ASGI")
            refused = 400 if token is good or edge == "mount" else 401
            assert (await connection.response()).status == refused

    def failing(self: TokenVerifier, token: str) -> Any:
        raise RuntimeError("the verifier failed")

    monkeypatch.setattr(TokenVerifier, "verify", failing)
    assert (await answer(tokened, f"/poll?channel=secret&token={good}")).status == 500
    assert "request GET /poll failed" in caplog.text  # the log was captured at all
    for token in (good, bad):
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text  # not even the signature


async def test_events_still_flow_to_a_token_holder(tokened: RunningServer) -> None:
    async with ws_connect(tokened, mint(channels=["chat:*"])) as ws:
        await subscribe(ws, "chat:lobby")
        await post(tokened, {"channel": "chat:lobby", "data": "hi"}, f"Bearer {API_KEY}")
        event = await receive(ws)
        assert (event["op"], event["data"]) == ("event", "hi")
