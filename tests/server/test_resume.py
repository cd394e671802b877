"""Exact resume on every transport: cut the connection mid-stream, come back with the cursor.

A publisher sends the numbered events 1..N while a subscriber reads them; the subscriber
drops its connection abruptly several times (a crashed tab, a cut network) and reconnects
from the last cursor it processed, while publishing goes on. At the end it must have seen
every offset exactly once, in order. When the cursor has left history, the server must say
so with a reset: the subscriber's record then jumps to the reset's cursor, never silently.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    RawConnection,
    Record,
    SSEStream,
    apublish,
    async_http_client,
    background,
    get,
    offset,
    query,
    wait_until,
    waiter_count,
    within,
)
from tidings.protocol.sse import RESET_EVENT, SSEMessage

TOTAL = 300
CUTS = (23, 61, 118, 175, 232, 281)  # received counts after which the connection is cut
WINDOW = 40  # the publisher runs at most this far ahead of the subscriber
GAP = 12  # events published while the subscriber is away, at each cut


@dataclass
class Run:
    """The shared progress of one publisher and one subscriber."""

    total: int
    published: int = 0
    received: list[int] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait(self, predicate: Callable[[], bool], what: str) -> None:
        async with self.changed:
            await within(self.changed.wait_for(predicate), what, 20)

    async def note_received(self, value: int) -> None:
        async with self.changed:
            self.received.append(value)
            self.changed.notify_all()

    async def away(self) -> None:
        """Let some events be published while the subscriber is disconnected."""
        target = min(self.total, len(self.received) + GAP)
        await self.wait(lambda: self.published >= target, f"{target} events to be published")

    def check(self) -> None:
        assert self.received == list(range(1, self.total + 1)), missing_and_repeated(self.received)


def missing_and_repeated(received: list[int]) -> str:
    seen = set(received)
    missing = sorted(set(range(1, max(received, default=0) + 1)) - seen)
    repeated = sorted(n for n in seen if received.count(n) > 1)
    return f"missing {missing[:20]}, repeated {repeated[:20]}, count {len(received)}"


async def publish_sequence(server: RunningServer, run: Run, channels: list[str]) -> None:
    """Publish 1, 2, ... on each channel in turn, never more than WINDOW ahead of the reader.

    ``run`` counts the events of all channels together.
    """
    async with async_http_client(server) as client:
        for number in range(1, run.total // len(channels) + 1):
            for channel in channels:
                await run.wait(
                    lambda: run.published - len(run.received) < WINDOW,
                    "the subscriber to catch up",
                )
                await apublish(client, channel, number)
                async with run.changed:
                    run.published += 1
                    run.changed.notify_all()


async def read_sse(stream: SSEStream, run: Run, on_message: Callable[[SSEMessage], int]) -> str:
    """Read until the next cut (abort, return the cursor to resume from) or the end."""
    cursor = ""
    while len(run.received) < run.total:
        message = await stream.next()
        await run.note_received(on_message(message))
        cursor = message.last_event_id  # what this client has processed, not what it parsed
        if len(run.received) in CUTS:
            stream.abort()
            break
    return cursor


async def test_sse_resumes_exactly_with_last_event_id(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=1000)
    run = Run(TOTAL)

    def number_of(message: SSEMessage) -> int:
        assert message.event == "message", message
        number = json.loads(message.data)
        assert offset(message.last_event_id) == number
        return int(number)

    stream = await SSEStream.open(server, "/sse?channel=seq")  # follows the channel from now
    connections = 1
    async with background(publish_sequence(server, run, ["seq"])) as publisher:
        while True:
            try:
                cursor = await read_sse(stream, run, number_of)
            finally:
                await stream.close()
            if len(run.received) == run.total:
                break
            await run.away()
            stream = await SSEStream.open(server, "/sse?channel=seq", f"Last-Event-ID: {cursor}")
            assert stream.response.status == 200
            connections += 1
        await within(publisher, "the publisher to finish")
    run.check()
    assert connections == len(CUTS) + 1


async def test_sse_multi_channel_resumes_with_a_cursor_list(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=1000)
    run = Run(TOTAL)
    per_channel: dict[str, list[int]] = {"ma": [], "mb": []}

    def number_of(message: SSEMessage) -> int:
        event = json.loads(message.data)
        per_channel[event["channel"]].append(event["data"])
        position = ["ma", "mb"].index(event["channel"])
        assert message.last_event_id.split(",")[position] == event["id"]
        assert offset(event["id"]) == event["data"]
        return int(event["data"])

    target = "/sse?" + query(["ma", "mb"], envelope=1)
    stream = await SSEStream.open(server, target)
    async with background(publish_sequence(server, run, ["ma", "mb"])) as publisher:
        while True:
            try:
                cursor = await read_sse(stream, run, number_of)
            finally:
                await stream.close()
            if len(run.received) == run.total:
                break
            await run.away()
            stream = await SSEStream.open(server, target, f"Last-Event-ID: {cursor}")
        await within(publisher, "the publisher to finish")
    expected = list(range(1, TOTAL // 2 + 1))
    assert per_channel == {"ma": expected, "mb": expected}


async def open_websocket(server: RunningServer) -> ClientConnection:
    return await connect(server.ws_url, proxy=None, open_timeout=TIMEOUT, ping_interval=None)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = await within(ws.recv(), "a WebSocket message")
    decoded: dict[str, Any] = orjson.loads(message)
    return decoded


async def subscribe(ws: ClientConnection, channel: str, since: str | None) -> dict[str, Any]:
    message = {"op": "subscribe", "channel": channel, "ref": 1}
    if since is not None:
        message["since"] = since
    await ws.send(orjson.dumps(message).decode())
    answer = await receive(ws)
    assert answer["op"] == "subscribed", answer
    return answer


async def read_websocket(ws: ClientConnection, run: Run, cursor: str) -> str:
    """Read events until the next cut (abort) or the end; return the last cursor."""
    while len(run.received) < run.total:
        event = await receive(ws)
        assert event["op"] == "event", event
        assert offset(event["id"]) == event["data"]
        await run.note_received(event["data"])
        cursor = event["id"]
        if len(run.received) in CUTS:
            ws.transport.abort()
            break
    return cursor


async def test_websocket_resumes_exactly_with_since(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=1000)
    run = Run(TOTAL)
    ws = await open_websocket(server)
    cursor = (await subscribe(ws, "wseq", None))["id"]
    async with background(publish_sequence(server, run, ["wseq"])) as publisher:
        while True:
            try:
                cursor = await read_websocket(ws, run, cursor)
            finally:
                await ws.close()
            if len(run.received) == run.total:
                break
            await run.away()
            ws = await open_websocket(server)
            answer = await subscribe(ws, "wseq", cursor)
            assert answer["id"] == cursor and answer["recovered"] is True
        await within(publisher, "the publisher to finish")
    run.check()


async def cut_poll(server: RunningServer, cursor: str, held: bool, channel: str = "pseq") -> None:
    """A long poll from ``cursor`` that is dropped before its answer is read.

    ``held``: dropped while the server holds it (unless events came first and it was
    answered at once); otherwise dropped once the answer has started to arrive.
    """
    connection = await RawConnection.open(server)
    before = waiter_count(server, channel)
    await connection.send(get(f"/poll?channel={channel}&since={cursor}&timeout=10"))
    answer = asyncio.create_task(connection.reader.readline())
    try:
        if held:
            await wait_until(
                lambda: answer.done() or waiter_count(server, channel) > before,
                "the long poll to be held or answered",
            )
        else:
            await within(asyncio.shield(answer), "the answer to start")
    finally:
        answer.cancel()
        connection.abort()


async def test_long_poll_resumes_exactly_with_since(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=1000)
    run = Run(TOTAL)
    async with async_http_client(server) as client:
        cursor = (await client.get("/poll", params={"channel": "pseq"})).json()["cursor"]
        polls = 0
        cuts = list(CUTS)
        async with background(publish_sequence(server, run, ["pseq"])) as publisher:
            while len(run.received) < run.total:
                if cuts and len(run.received) >= cuts[0]:
                    cuts.pop(0)
                    await cut_poll(server, cursor, held=len(cuts) % 2 == 0)
                    await run.away()
                params = {"channel": "pseq", "since": cursor, "timeout": "5", "limit": "17"}
                response = await client.get("/poll", params=params)
                polls += 1
                assert response.status_code in (200, 204), response.text
                if response.status_code == 204:
                    assert response.headers["tidings-cursor"] == cursor
                    continue
                body = response.json()
                assert "resets" not in body, body
                assert 1 <= len(body["events"]) <= 17
                for event in body["events"]:
                    assert offset(event["id"]) == event["data"]
                    await run.note_received(event["data"])
                assert body["cursor"] == body["events"][-1]["id"]
                assert response.headers["tidings-cursor"] == body["cursor"]
                cursor = body["cursor"]
            await within(publisher, "the publisher to finish")
    run.check()
    assert not cuts
    assert polls >= TOTAL // 17


# --- resets instead of silent skips -------------------------------------------------------


async def publish_range(client: httpx.AsyncClient, channel: str, numbers: range) -> None:
    for number in numbers:
        await apublish(client, channel, number)


async def test_sse_resume_out_of_history_is_an_explicit_reset(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=10)
    record = Record()
    async with async_http_client(server) as client:
        stream = await SSEStream.open(server, "/sse?channel=rs")
        try:
            await publish_range(client, "rs", range(1, 6))
            for _ in range(5):
                record.event((await stream.next()).last_event_id)
            cursor = stream.parser.last_event_id
            stream.abort()
        finally:
            await stream.close()
        await publish_range(client, "rs", range(6, 40))  # 6..29 leave a history of 10
        stream = await SSEStream.open(server, "/sse?channel=rs", f"Last-Event-ID: {cursor}")
        try:
            reset = await stream.next()
            assert reset.event == RESET_EVENT
            detail = json.loads(reset.data)
            assert detail == {"channel": "rs", "id": detail["id"], "reason": "gap"}
            assert detail["id"] == reset.last_event_id  # the browser resumes after the reset
            record.reset(detail["id"])
            await publish_range(client, "rs", range(40, 45))
            while record.position < 44:
                record.event((await stream.next()).last_event_id)
        finally:
            await stream.close()
    assert offset(cursor) == 5
    assert record.check() == 44
    assert record.resets == 1, "history was lost: a reset is due"


async def test_websocket_resume_out_of_history_is_an_explicit_reset(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=10)
    record = Record()
    async with async_http_client(server) as client:
        ws = await open_websocket(server)
        try:
            await ws.send('{"op": "subscribe", "channel": "rw", "ref": 1}')
            assert (await receive(ws))["op"] == "subscribed"
            await publish_range(client, "rw", range(1, 6))
            events = [await receive(ws) for _ in range(5)]
            for event in events:
                record.event(str(event["id"]))
            cursor = str(events[-1]["id"])
            ws.transport.abort()
        finally:
            await ws.close()
        await publish_range(client, "rw", range(6, 40))
        ws = await open_websocket(server)
        try:
            message = {"op": "subscribe", "channel": "rw", "since": cursor, "ref": 2}
            await ws.send(orjson.dumps(message).decode())
            answer = await receive(ws)
            assert answer == {
                "op": "subscribed",
                "ref": 2,
                "channel": "rw",
                "id": cursor,
                "recovered": False,
            }
            reset = await receive(ws)
            assert reset == {"op": "reset", "channel": "rw", "id": reset["id"], "reason": "gap"}
            record.reset(str(reset["id"]))
            await publish_range(client, "rw", range(40, 45))
            while record.position < 44:
                event = await receive(ws)
                assert event["op"] == "event", event
                record.event(str(event["id"]))
        finally:
            await ws.close()
    assert record.check() == 44
    assert record.resets == 1, "history was lost: a reset is due"


async def test_long_poll_resume_out_of_history_is_an_explicit_reset(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__default__history_size=10)
    record = Record()
    async with async_http_client(server) as client:
        cursor = str((await client.get("/poll", params={"channel": "rp"})).json()["cursor"])
        await publish_range(client, "rp", range(1, 6))
        body = (await client.get("/poll", params={"channel": "rp", "since": cursor})).json()
        for event in body["events"]:
            record.event(event["id"])
        cursor = body["cursor"]
        await publish_range(client, "rp", range(6, 40))
        await cut_poll(server, cursor, held=False, channel="rp")  # a lost answer changes nothing
        params = {"channel": "rp", "since": cursor, "timeout": "10"}
        body = (await client.get("/poll", params=params)).json()
        assert body["events"] == []
        [reset] = body["resets"]
        assert reset == {"channel": "rp", "id": body["cursor"], "reason": "gap"}
        record.reset(reset["id"])
        await publish_range(client, "rp", range(40, 45))
        params["since"] = body["cursor"]
        body = (await client.get("/poll", params=params)).json()
        for event in body["events"]:
            record.event(event["id"])
        assert body["cursor"] == body["events"][-1]["id"]
    assert record.check() == 44
    assert record.resets == 1, "history was lost: a reset is due"
