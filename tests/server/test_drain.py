"""Draining (``Server.stop``): what each kind of connection is told, and when the node is done.

The drain runs on the server's loop while the test, on its own loop, watches the connections:
``begin_drain`` starts it and returns a future that completes when ``stop`` returns.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningServer
from tests.server.support import (
    PublishStandIn,
    RawConnection,
    client_frame,
    connection_count,
    get,
    wait_until,
    waiter_count,
    within,
    ws_handshake,
)

WINDOW = 5.0  # drain_seconds: long, so that "done at once" is told apart from "at the deadline"


def begin_drain(server: RunningServer) -> asyncio.Future[None]:
    """Start ``Server.stop`` on the server's loop; the future completes when it returns."""
    done = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)
    return asyncio.wrap_future(done)


async def draining(server: RunningServer) -> None:
    await wait_until(lambda: server.call(lambda: server.node.draining), "the drain")


async def finished(stopped: asyncio.Future[None], within_seconds: float) -> None:
    await within(asyncio.shield(stopped), "the drain to finish", within_seconds)


def refused_new_connections(server: RunningServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_held_long_poll_is_answered_204_with_its_cursor_and_closed(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=WINDOW)
    async with await RawConnection.open(server) as connection:
        await connection.send(get("/poll?channel=held"))
        cursor = (await connection.response()).json()["cursor"]
        await connection.send(get(f"/poll?channel=held&since={cursor}&timeout=30"))
        await wait_until(lambda: waiter_count(server, "held") == 1, "the poll to be held")
        stopped = begin_drain(server)
        answer = await connection.response()
        assert answer.status == 204
        assert answer.header("Tidings-Cursor") == cursor
        assert answer.header("Connection") == "close"
        assert await connection.closed_by_server() == b""
    # The last connection is gone: the node is done long before the window is up.
    await finished(stopped, WINDOW / 2)


async def test_idle_connections_close_new_ones_are_refused_and_readyz_answers_503(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=WINDOW)
    idle = await RawConnection.open(server)
    await idle.send(get("/healthz"))
    assert (await idle.response()).status == 200
    late = await RawConnection.open(server)
    await late.send(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # not finished yet
    await wait_until(lambda: server.call(lambda: len(server.node.connections)) == 2, "both")
    stopped = begin_drain(server)
    try:
        assert await idle.closed_by_server() == b"", "the idle keep-alive was not closed"
        assert await asyncio.to_thread(refused_new_connections, server)
        assert not stopped.done(), "the drain did not wait for the request being sent"
        await late.send(b"\r\n")
        answer = await late.response()
        assert answer.status == 503 and answer.error_code() == "unavailable"
        assert 1 <= int(answer.header("Retry-After") or 0) <= WINDOW
        assert answer.header("Connection") == "close"
        assert await late.closed_by_server() == b""
        await finished(stopped, WINDOW / 2)
    finally:
        await idle.close()
        await late.close()


async def test_while_draining_a_stream_is_refused_and_counted_and_readyz_answers_503(
    make_server: Callable[..., RunningServer], edge: str
) -> None:
    server = make_server(drain_seconds=WINDOW)
    entered = threading.Event()
    gate = hold_publishes(server, entered)  # a publish in flight keeps the drain going
    async with (
        await RawConnection.open(server) as late,
        await RawConnection.open(server) as ready,
        await RawConnection.open(server) as publisher,
    ):
        # sent before the drain: a draining standalone node accepts no new connection
        await late.send(b"GET /sse?channel=late HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await ready.send(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await publisher.send(publish_request("inflight"))
        assert await asyncio.to_thread(entered.wait, 5), "the publish never reached the broker"
        # the standalone edge counts every connection from its accept; the mount counts
        # the publish, the one request it has met (an ASGI app sees a request once its
        # head is complete)
        accepted = 3 if edge == "standalone" else 1
        await wait_until(lambda: connection_count(server) == accepted, "the connections")
        stopped = begin_drain(server)
        await draining(server)
        await late.send(b"\r\n")
        answer = await late.response()
        assert answer.status == 503 and answer.error_code() == "unavailable"
        refusals = server.call(lambda: dict(server.node.stats.refusals))
        assert refusals == {"draining": 1}
        await ready.send(b"\r\n")
        not_ready = await ready.response()
        assert not_ready.status == 503 and not_ready.error_code() == "unavailable"
        assert 1 <= int(not_ready.header("Retry-After") or 0) <= WINDOW
        assert not_ready.header("Connection") == "close"
        server.call(gate.set)
        assert (await publisher.response()).status == 200
        await finished(stopped, WINDOW / 2)


def publish_request(channel: str) -> bytes:
    body = orjson.dumps({"channel": channel, "data": 1})
    return (
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def hold_publishes(server: RunningServer, entered: threading.Event) -> asyncio.Event:
    """Make the broker hold every publish until the returned event is set."""

    def install() -> asyncio.Event:
        node = server.node
        assert node is not None
        gate = asyncio.Event()
        publish = node.broker.publish

        async def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await gate.wait()
            return await publish(*args, **kwargs)

        node.broker = PublishStandIn(node.broker, held)
        return gate

    return server.call(install)


async def test_a_publish_awaiting_the_broker_finishes_before_the_node_stops(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=WINDOW)
    entered = threading.Event()
    gate = hold_publishes(server, entered)
    async with await RawConnection.open(server) as connection:
        await connection.send(publish_request("inflight"))
        assert await asyncio.to_thread(entered.wait, 5), "the publish never reached the broker"
        stopped = begin_drain(server)
        await draining(server)
        assert not stopped.done()
        server.call(gate.set)
        answer = await connection.response()
        assert answer.status == 200, answer.body
        assert answer.json()["id"].endswith(".1")
        assert answer.header("Connection") == "close"
        assert await connection.closed_by_server() == b""
    await finished(stopped, WINDOW / 2)


def publish_text(data: int, ref: int) -> str:
    return orjson.dumps({"op": "publish", "channel": "chat:a", "data": data, "ref": ref}).decode()


async def test_a_websocket_publish_in_flight_is_answered_before_the_1012(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(drain_seconds=WINDOW, namespaces__chat__client_publish=True)
    entered = threading.Event()
    gate = hold_publishes(server, entered)
    async with connect(server.ws_url, proxy=None) as ws:
        await ws.send(publish_text(1, 7))
        assert await asyncio.to_thread(entered.wait, 5), "the publish never reached the broker"
        stopped = begin_drain(server)
        await draining(server)
        await ws.send(publish_text(2, 8))
        refused = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (refused["op"], refused["ref"], refused["code"]) == ("error", 8, "unavailable")
        server.call(gate.set)
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (answer["op"], answer["ref"], answer["id"][-2:]) == ("published", 7, ".1")
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("the server sent more than the answer before closing")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1012
    await finished(stopped, WINDOW / 2)


async def test_a_websocket_that_ignores_the_close_is_dropped_at_the_deadline(
    make_server: Callable[..., RunningServer],
) -> None:
    window = 0.5
    server = make_server(drain_seconds=window)
    async with await RawConnection.open(server) as connection:
        await connection.send(ws_handshake() + client_frame(b'{"op":"ping","ref":1}'))
        assert (await connection.head()).status == 101
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopped = begin_drain(server)
        # Never answer the close frame: only the deadline ends this connection.
        await finished(stopped, window + 3)
        elapsed = loop.time() - started
        assert window + 0.9 <= elapsed < window + 2.5, elapsed
        await connection.closed_by_server()
