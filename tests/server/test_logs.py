"""Stream open/close log lines, in text and JSON, and what they must never contain."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import RunningServer
from tests.serve_process import ServeProcess
from tests.server.support import (
    RawConnection,
    client_frame,
    client_json,
    get,
    wait_until,
    within,
    ws_handshake,
)
from tidings.server.core import logs
from tidings.server.core.transports.sse import SSEStream

MakeServer = Callable[..., RunningServer]
SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.SECRET-SIGNATURE"
FIXED_KEYS = ["ts", "level", "logger", "msg"]


class Captured:
    """Every line the ``tidings`` loggers write, formatted as the server would."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]

    async def wait_json(self, msg: str, count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            matching = [entry for entry in self.json() if entry["msg"] == msg]
            return matching if len(matching) >= count else []

        result: list[dict[str, Any]] = await wait_until(found, f"{count} {msg!r} lines")
        return result


@contextlib.contextmanager
def capture(formatter: logging.Formatter) -> Iterator[Captured]:
    logger = logging.getLogger("tidings")
    captured = Captured(formatter)
    level = logger.level
    logger.setLevel(logging.DEBUG)  # everything: a token must not appear at any level
    logger.addHandler(captured.handler)
    try:
        yield captured
    finally:
        logger.removeHandler(captured.handler)
        logger.setLevel(level)


async def open_sse(server: RunningServer, target: str) -> RawConnection:
    connection = await RawConnection.open(server)
    await connection.send(get(target))
    assert (await connection.head()).status == 200
    return connection


async def open_ws(server: RunningServer) -> RawConnection:
    connection = await RawConnection.open(server)
    await connection.send(ws_handshake(f"/ws?token={SECRET}"))
    assert (await connection.head()).status == 101
    return connection


def streams(server: RunningServer) -> list[Any]:
    app = server.node
    assert app is not None
    return list(server.call(lambda: [c for c in app.connections if isinstance(c, SSEStream)]))


# Lines for each HTTP connection are the standalone edge's: under the mount, the ASGI server
# owns the connections and logs them its own way. Stream lines are the node's, on both edges.


async def test_json_lines_for_an_sse_stream_without_its_token(
    make_server: MakeServer, edge: str
) -> None:
    server = make_server()
    with capture(logs.JsonFormatter()) as captured:
        stream = await open_sse(server, f"/sse?channel=news&channel=chat:a&token={SECRET}")
        [opened] = await captured.wait_json("stream opened")
        async with await RawConnection.open(server) as poll:  # its connection, not each poll
            await poll.send(get(f"/poll?channel=news&token={SECRET}"))
            assert (await poll.response()).status == 200
            await poll.send(get(f"/poll?channel=news&token={SECRET}"))
            assert (await poll.response()).status == 200
        if edge == "standalone":
            await captured.wait_json("connection closed", 2)
        await stream.close()
        [closed] = await captured.wait_json("stream closed")
    assert list(opened) == [*FIXED_KEYS, "transport", "address", "sub", "channels"]
    assert opened["level"] == "INFO"
    assert opened["logger"] == "tidings.connections"
    assert opened["ts"].endswith("+00:00")
    assert (opened["transport"], opened["address"], opened["sub"]) == ("sse", "127.0.0.1", None)
    assert opened["channels"] == 2
    assert list(closed) == [*FIXED_KEYS, "transport", "address", "sub", "seconds", "reason"]
    assert closed["reason"] == "client closed"
    assert 0 <= closed["seconds"] < 10
    http = [entry for entry in captured.json() if entry["transport"] == "http"]
    if edge == "standalone":
        assert [entry["msg"] for entry in http] == ["connection opened", "connection closed"] * 2
        assert [entry["reason"] for entry in http[1::2]] == ["upgraded to sse", "client closed"]
        assert list(http[3]) == [*FIXED_KEYS, "transport", "address", "seconds", "reason"]
    else:
        assert http == []
    assert len(captured.lines) == 2 + len(http)
    assert SECRET not in captured.stream.getvalue()
    assert "token" not in captured.stream.getvalue()


async def test_text_lines_for_a_websocket_without_its_token(
    make_server: MakeServer, edge: str
) -> None:
    server = make_server()
    http = 2 if edge == "standalone" else 0  # the lines of the connection it was upgraded on
    with capture(logs.TextFormatter()) as captured:
        connection = await open_ws(server)
        await wait_until(lambda: len(captured.lines) == http + 1, "the opened line")
        await connection.send(client_frame(b"\x03\xe8", opcode=0x8))  # close 1000
        await connection.closed_by_server()
        await wait_until(lambda: len(captured.lines) == http + 2, "the closed line")
        await connection.close()
    *connection_lines, opened, closed = captured.lines
    if edge == "standalone":
        http_opened, upgraded = connection_lines
        assert "connection opened transport=http address=127.0.0.1" in http_opened
        assert upgraded.endswith(' reason="upgraded to websocket"')
    assert " INFO tidings.connections stream opened transport=websocket address=127.0.0.1 " in (
        opened
    )
    assert opened.endswith(" sub=- channels=0")
    assert "stream closed transport=websocket" in closed
    assert closed.endswith(' reason="client closed"')
    assert SECRET not in captured.stream.getvalue()


async def test_close_reasons(make_server: MakeServer, edge: str) -> None:
    server = make_server(heartbeat_seconds=0.2, ws_ping_timeout_seconds=0.2, max_message_bytes=16)
    # under the mount, the ASGI server pings WebSockets and drops the silent ones itself
    reasons = ["drain", "protocol error: binary frame", "protocol error: frame too large"]
    reasons += ["heartbeat timeout"] if edge == "standalone" else []
    with capture(logs.JsonFormatter()) as captured:
        binary = await open_ws(server)
        await binary.send(client_frame(b"\x00", opcode=0x2))
        too_large = await open_ws(server)
        await too_large.send(client_json({"op": "ping", "data": "x" * 5000}))
        silent = await open_ws(server)  # never answers a ping
        drained = await open_sse(server, "/sse?channel=a")
        slow = await open_sse(server, "/sse?channel=b")
        await wait_until(lambda: len(streams(server)) == 2, "two SSE streams")
        by_channel = {stream.order[0].channel: stream for stream in streams(server)}
        server.call(lambda: by_channel["a"].drain(0))
        server.call(by_channel["b"].pause_writing)  # the transport's buffer is over its limit
        closed = await captured.wait_json("stream closed", len(reasons) + 1)
        for connection in (binary, too_large, silent, drained, slow):
            await connection.close()
    assert sorted(entry["reason"] for entry in closed) == sorted([*reasons, "slow consumer"])
    assert {entry["address"] for entry in closed} == {"127.0.0.1"}


def test_json_formatter_keeps_its_fixed_keys_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("tidings.x", logging.ERROR, __file__, 1, "a %s", ("b",), None)
        record.exc_info = sys.exc_info()
    record.fields = {"msg": "not this", "address": "192.0.2.1"}
    entry = orjson.loads(logs.JsonFormatter().format(record))
    assert list(entry) == [*FIXED_KEYS, "address", "exc"]
    assert (entry["level"], entry["logger"], entry["msg"]) == ("ERROR", "tidings.x", "a b")
    assert "ValueError: boom" in entry["exc"]


def test_text_formatter_quotes_values_with_spaces() -> None:
    record = logging.LogRecord("tidings.x", logging.INFO, __file__, 1, "hello", (), None)
    record.fields = {"reason": "client closed", "sub": None, "channels": 3}
    line = logs.TextFormatter().format(record)
    assert line.endswith(' INFO tidings.x hello reason="client closed" sub=- channels=3')


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    server = logging.getLogger("tidings.server")
    handlers, level, server_level = list(root.handlers), root.level, server.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    server.setLevel(server_level)


@pytest.mark.usefixtures("restored_logging")
def test_default_level_keeps_connection_lines_off_and_start_up_lines_on() -> None:
    logs.configure("warning", "json")
    assert not logging.getLogger("tidings.connections").isEnabledFor(logging.INFO)
    assert logging.getLogger("tidings.server").isEnabledFor(logging.INFO)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.JsonFormatter)
    logs.configure("info", "text")
    assert logging.getLogger("tidings.connections").isEnabledFor(logging.INFO)


async def test_serve_with_json_logs() -> None:
    running = ServeProcess("--log-format", "json", "--log-level", "info").wait_listening()
    try:
        reader, writer = await within(
            asyncio.open_connection("127.0.0.1", running.port), "connecting"
        )
        writer.write(f"GET /sse?channel=news&token={SECRET} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await within(reader.readline(), "a status line")).startswith(b"HTTP/1.1 200")
        writer.close()
        await wait_until(lambda: "stream closed" in running.logs(), "the closed line", 15)
    finally:
        running.stop()
    entries = [orjson.loads(line) for line in running.logs().splitlines()]
    assert all(list(entry)[:4] == FIXED_KEYS for entry in entries)
    assert [e["msg"] for e in entries if e["logger"] == "tidings.connections"] == [
        "connection opened",
        "connection closed",
        "stream opened",
        "stream closed",
    ]
    assert SECRET not in running.logs()
