"""Hub.resync: when a broker's fan-out link was down, followers catch up from history.

The memory broker never loses live delivery, so the tests store an event behind the hub's
back (as a broker whose pub/sub link dropped would) and then call ``resync``.
"""

from __future__ import annotations

import asyncio

import orjson
import websockets

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    async_http_client,
    offset,
    publish,
    sse_stream,
    subscriber_count,
    wait_until,
    waiter_count,
)


def store_silently(server: RunningServer, channel: str, data: bytes) -> None:
    """Append to history without fan-out, then tell the hub the link is back."""
    app = server.node
    assert app is not None

    def run() -> None:
        app.broker._log(channel).append("message", data, None)  # type: ignore[attr-defined]
        app.hub.resync(channel)

    server.call(run)


async def test_an_sse_stream_gets_what_live_delivery_missed(server: RunningServer) -> None:
    first = publish(server, "quiet", 1)
    async with (
        async_http_client(server) as client,
        sse_stream(client, f"/sse?channel=quiet&since={first}") as stream,
    ):
        await wait_until(lambda: subscriber_count(server, "quiet") == 1, "the follower")
        store_silently(server, "quiet", b"2")
        message = await stream.next()
        assert (offset(message.last_event_id), message.data) == (2, "2")


async def test_a_websocket_gets_what_live_delivery_missed(server: RunningServer) -> None:
    publish(server, "quiet", 1)
    async with websockets.connect(server.ws_url) as socket:
        await socket.send('{"op": "subscribe", "channel": "quiet", "ref": 1}')
        assert orjson.loads(await socket.recv(TIMEOUT))["op"] == "subscribed"
        store_silently(server, "quiet", b"2")
        event = orjson.loads(await socket.recv(TIMEOUT))
        assert (event["op"], offset(event["id"]), event["data"]) == ("event", 2, 2)


async def test_a_held_long_poll_is_answered_with_what_was_missed(server: RunningServer) -> None:
    first = publish(server, "quiet", 1)
    async with async_http_client(server) as client:
        poll = client.get("/poll", params={"channel": "quiet", "since": first, "timeout": 10})
        task = asyncio.ensure_future(poll)
        await wait_until(lambda: waiter_count(server, "quiet") == 1, "the held poll")
        store_silently(server, "quiet", b"2")
        answer = (await asyncio.wait_for(task, TIMEOUT)).json()
        assert [(offset(e["id"]), e["data"]) for e in answer["events"]] == [(2, 2)]
