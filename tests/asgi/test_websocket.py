"""The WebSocket handshake as ASGI servers hand it over, called in-process with the messages.

Over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441), which has no ``Upgrade``
header; hypercorn passes it on as such. tests/e2e/test_http2.py shows it in Chromium.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.conftest import settings_with
from tidings.asgi import TidingsApp
from tidings.asgi.types import Message, Scope
from tidings.asgi.websocket import LastRun
from tidings.protocol import ws

TIMEOUT = 5.0


def websocket_scope(http_version: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8443"), (b"sec-websocket-version", b"13"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }


async def converse(scope: Scope) -> list[Message]:
    """Connect, subscribe, and leave once the mount answered; what the mount sent."""
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []
    answered = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] != "websocket.accept":
            answered.set()  # the subscribe's answer, or the handshake refused

    await incoming.put({"type": "websocket.connect"})
    subscribe = orjson.dumps({"op": "subscribe", "channel": "news", "ref": 1}).decode()
    await incoming.put({"type": "websocket.receive", "text": subscribe})
    async with TidingsApp(settings_with()) as tidings:
        serving = asyncio.ensure_future(tidings(scope, incoming.get, send))
        await asyncio.wait_for(answered.wait(), TIMEOUT)
        await incoming.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(serving, TIMEOUT)
    return sent


def subscribed(sent: list[Message]) -> dict[str, Any]:
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.send"]
    answer: dict[str, Any] = orjson.loads(sent[1]["text"])
    return answer


async def test_an_http2_websocket_without_upgrade_header_is_accepted() -> None:
    sent = await converse(websocket_scope("2", []))
    assert subscribed(sent)["op"] == "subscribed"


async def test_an_http11_websocket_is_accepted_as_before() -> None:
    upgrade = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
    sent = await converse(websocket_scope("1.1", upgrade))
    assert subscribed(sent)["op"] == "subscribed"


def test_a_run_of_frames_written_to_many_subscribers_is_taken_apart_once() -> None:
    runs = LastRun()
    run = ws.encode_text_frame(b'{"op":"event","n":1}') + ws.encode_text_frame(b'{"n":"\xc3\xa9"}')
    carried = runs.messages(run)
    assert carried == [('{"op":"event","n":1}', None), ('{"n":"é"}', None)]
    assert runs.messages(run) is carried  # the same bytes object: not decoded again
    copy = bytes(bytearray(run))
    assert runs.messages(copy) == carried and runs.messages(copy) is not carried
    closing = ws.encode_text_frame(b"{}") + ws.encode_close_frame(4000, "too slow")
    assert runs.messages(closing) == [("{}", None), ("too slow", 4000)]
