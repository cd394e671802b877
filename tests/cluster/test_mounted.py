"""The mount and ``tidings serve`` as one cluster, on Redis and on NATS.

A FastAPI app with ``tidings.asgi.app()`` at ``/rt`` runs under uvicorn in a subprocess of
its own (``tests/cluster/mounted_app.py``) beside a ``tidings serve`` node on the same broker.
They are interchangeable: what is published on either (HTTP publish API, or the host app's
in-process ``realtime.publish``) reaches every technique on both; a cursor one gave resumes
exactly on the other; a subscriber whose node stops carries on from the other with
``Last-Event-ID``; and presence is one list across both.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

import tidings
from tests.client.support import FAST, collect, resets_of
from tests.cluster.support import (
    LeanSSE,
    MountedNode,
    Node,
    offset,
    publish,
    wait_until,
    wait_until_async,
)
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.timeout(120)

TRANSPORTS = ["websocket", "sse", "long_poll"]
COUNT = 30
ROOM = "chat:room"
ANONYMOUS = {"sub": None, "info": None}
PRESENCE_ENV = {"TIDINGS_NAMESPACES_CHAT_PRESENCE": "true"}
Side = Node | MountedNode



@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.stop()


async def start_pair(
    broker: str, started: list[ServeProcess], env: dict[str, str] | None = None
) -> tuple[Node, MountedNode]:
    """A ``tidings serve`` node and the mounted app on ``broker``, started side by side."""
    node, mounted = Node(broker, env), MountedNode(broker, env)
    started.extend((node, mounted))
    await asyncio.gather(
        asyncio.to_thread(node.wait_listening), asyncio.to_thread(mounted.wait_listening)
    )
    return node, mounted


async def publish_in_host(
    http: httpx.AsyncClient, mounted: MountedNode, channel: str, data: Any
) -> str:
    """Through the host app's own route, which calls ``await realtime.publish(...)``."""
    answer = await http.post(f"{mounted.host_url}/host/publish/{channel}", json=data)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def name(side: Side) -> str:
    return "the mount" if isinstance(side, MountedNode) else "tidings serve"


async def test_what_either_side_publishes_reaches_every_technique_on_both(
    broker: str, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    node, mounted = await start_pair(broker, processes)
    channel = "mixed-" + uuid.uuid4().hex[:8]
    first = await publish(http, node, channel, {"n": 0})

    async with contextlib.AsyncExitStack() as stack:
        collectors = []
        for side in (node, mounted):
            for transport in TRANSPORTS:
                client = await stack.enter_async_context(
                    tidings.connect(side.url, transport=transport, **FAST)
                )
                seen = await stack.enter_async_context(
                    collect(client.subscribe(channel, since=first))
                )
                collectors.append((name(side), transport, seen))

        # In turn: tidings serve's publish API, the mount's, the host app's in-process call.
        ids = []
        for n in range(1, COUNT + 1):
            if n % 3 == 0:
                ids.append(await publish(http, node, channel, {"n": n}))
            elif n % 3 == 1:
                ids.append(await publish(http, mounted, channel, {"n": n}))
            else:
                ids.append(await publish_in_host(http, mounted, channel, {"n": n}))
        assert [offset(cursor) for cursor in ids] == list(range(2, COUNT + 2))

        for where, transport, seen in collectors:
            try:
                events = await seen.wait_events(COUNT, timeout=20)
            except AssertionError as error:
                logs = f"--- serve\n{node.logs()[-3000:]}\n--- mount\n{mounted.logs()[-3000:]}"
                raise AssertionError(f"{transport} on {where}: {error}\n{logs}") from None
            assert [event.id for event in events] == ids, (where, transport)
            assert [event.data for event in events] == [{"n": n} for n in range(1, COUNT + 1)]
            assert resets_of(seen.items) == [], (where, transport)


async def test_a_cursor_from_one_side_resumes_exactly_on_the_other(
    broker: str, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    node, mounted = await start_pair(broker, processes)
    for transport in [*TRANSPORTS, "poll"]:
        for gave, resumes in ((node, mounted), (mounted, node)):
            what = f"{transport}: a cursor from {name(gave)} on {name(resumes)}"
            channel = "resume-" + uuid.uuid4().hex[:8]
            first = await publish(http, gave, channel, {"n": 0})
            before = [await publish(http, gave, channel, {"n": n}) for n in range(1, 6)]

            async with (
                tidings.connect(gave.url, transport=transport, **FAST) as client,
                collect(client.subscribe(channel, since=first)) as seen,
            ):
                events = await seen.wait_events(5)
            assert [event.id for event in events] == before, what
            cursor = events[-1].id  # the cursor the first side gave

            after = [await publish(http, resumes, channel, {"n": n}) for n in range(6, 11)]
            async with (
                tidings.connect(resumes.url, transport=transport, **FAST) as client,
                collect(client.subscribe(channel, since=cursor)) as seen,
            ):
                events = await seen.wait_events(5)
                assert [event.id for event in events] == after, what
                # One more, live: it comes next, with nothing repeated or skipped before it.
                last = await publish(http, gave, channel, {"n": 11})
                events = await seen.wait_events(6)
                assert [event.id for event in events] == [*after, last], what
                assert [offset(event.id) for event in events] == list(range(7, 13)), what
                assert resets_of(seen.items) == [], what


@pytest.mark.parametrize("leaving", ["mount", "serve"])
async def test_an_sse_subscriber_carries_on_from_the_other_side_when_its_node_stops(
    broker: str, processes: list[ServeProcess], http: httpx.AsyncClient, leaving: str
) -> None:
    node, mounted = await start_pair(broker, processes)
    goes, stays = (mounted, node) if leaving == "mount" else (node, mounted)
    channel = "carry-" + uuid.uuid4().hex[:8]
    first = await publish(http, stays, channel, {"n": 0})
    subscriber = LeanSSE([goes.url, stays.url], channel, first)
    subscriber.start()
    try:
        await wait_until(lambda: subscriber.connected, "the stream on the leaving side")
        assert subscriber.url == goes.url
        for n in range(1, 11):
            await publish(http, goes if n % 2 else stays, channel, {"n": n})
        await wait_until(lambda: len(subscriber.offsets) == 10, "10 events")

        stopping = asyncio.create_task(asyncio.to_thread(goes.stop))
        for n in range(11, 31):
            await publish(http, stays, channel, {"n": n})
        await stopping
        await wait_until(
            lambda: subscriber.url == stays.url and len(subscriber.offsets) >= 30,
            f"30 events, the last ones from {name(stays)}",
        )
        assert subscriber.offsets == list(range(2, 32)), subscriber.errors
        assert subscriber.resets == []
        assert subscriber.connects >= 2
    finally:
        await subscriber.stop()


@contextlib.asynccontextmanager
async def websocket(side: Side) -> AsyncIterator[ClientConnection]:
    async with connect(side.ws_url, proxy=None, open_timeout=10, ping_interval=None) as ws:
        yield ws


async def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    try:
        message = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        raise AssertionError(f"no WebSocket message within {timeout} s") from None
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def listed(ws: ClientConnection, ref: int) -> list[Any]:
    await ws.send(orjson.dumps({"op": "presence", "channel": ROOM, "ref": ref}).decode())
    answer = await receive(ws)
    assert answer["op"] == "presence", answer
    clients: list[Any] = answer["clients"]
    return clients


async def api_presence(http: httpx.AsyncClient, side: Side) -> list[Any]:
    answer = await http.get(f"{side.url}/api/presence", params={"channel": ROOM})
    assert answer.status_code == 200, answer.text
    clients: list[Any] = answer.json()["clients"]
    return clients


JOIN = {"op": "join", "channel": ROOM, "client": ANONYMOUS}
LEAVE = {"op": "leave", "channel": ROOM, "client": ANONYMOUS}


async def test_presence_is_one_list_across_the_mount_and_tidings_serve(
    broker: str, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    node, mounted = await start_pair(broker, processes, PRESENCE_ENV)
    async with websocket(node) as on_node, websocket(mounted) as on_mount:
        for ref, ws in enumerate((on_node, on_mount), start=1):
            await ws.send(orjson.dumps({"op": "subscribe", "channel": ROOM, "ref": ref}).decode())
            assert (await receive(ws))["op"] == "subscribed"
            assert await receive(ws) == JOIN  # its own
        assert await receive(on_node) == JOIN  # the mount's WebSocket, seen on tidings serve

        async with contextlib.AsyncExitStack() as stack:
            for side in (node, mounted):  # an SSE subscriber on each side: both hear it join
                client = await stack.enter_async_context(
                    tidings.connect(side.url, transport="sse", **FAST)
                )
                await stack.enter_async_context(collect(client.subscribe(ROOM)))
                assert await receive(on_node) == JOIN, name(side)
                assert await receive(on_mount) == JOIN, name(side)

            everyone = [ANONYMOUS] * 4
            assert await listed(on_node, 10) == everyone
            assert await listed(on_mount, 11) == everyone
            assert await api_presence(http, node) == everyone
            assert await api_presence(http, mounted) == everyone

        for ws in (on_node, on_mount):  # both SSE subscribers left, wherever they were
            assert [await receive(ws), await receive(ws)] == [LEAVE, LEAVE]

    for side in (node, mounted):  # the WebSockets' leaves reach the broker a moment later
        await wait_until_async(
            lambda side=side: empty(http, side), f"an empty presence list on {name(side)}"
        )


async def empty(http: httpx.AsyncClient, side: Side) -> bool:
    return await api_presence(http, side) == []
