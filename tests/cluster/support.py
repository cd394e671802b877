"""Helpers for the cluster tests: real ``tidings serve`` nodes sharing one broker, the mount
(``tidings.asgi.app()`` inside a FastAPI app under uvicorn) as a node of the same cluster,
and a lean SSE subscriber that reconnects to a list of nodes with ``Last-Event-ID``.

Every wait polls its condition with a deadline; traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.cluster.mounted_app import PREFIX
from tests.serve_process import ServeProcess

FAST_ENV = {"TIDINGS_SERVER_SSE_RETRY_MS": "100", "TIDINGS_SERVER_DRAIN_SECONDS": "0.2"}
DEADLINE = 30.0


def offset(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


REPOSITORY = Path(__file__).resolve().parents[2]


class Node(ServeProcess):
    """``tidings serve --port 0 --broker URL`` in a subprocess; stderr is drained in a thread."""

    def __init__(self, broker: str, env: dict[str, str] | None = None) -> None:
        super().__init__("--no-lab", "--broker", broker, env={**FAST_ENV, **(env or {})})
        self.broker = broker

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class MountedNode(ServeProcess):
    """``tests/cluster/mounted_app.py`` under uvicorn in a subprocess, on a port of its own,
    with ``TIDINGS_SERVER_BROKER`` set: a node of the same cluster as the ``tidings serve``
    nodes on that broker. ``url`` and ``ws_url`` are under the mount's prefix; ``host_url``
    is the host application's root.

    uvicorn waits for open streams (at most ``--timeout-graceful-shutdown``) before the
    lifespan shutdown drains the node, so ``stop`` (SIGTERM) takes up to 2 s with streams open.
    """

    listening = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

    def __init__(self, broker: str, env: dict[str, str] | None = None) -> None:
        uvicorn = [sys.executable, "-m", "uvicorn", "tests.cluster.mounted_app:app"]
        flags = ["--app-dir", str(REPOSITORY), "--host", "127.0.0.1", "--port", "0"]
        flags += ["--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio"]
        flags += ["--lifespan", "on", "--timeout-graceful-shutdown", "2"]
        flags += ["--log-level", "info", "--no-access-log"]
        self._spawn(
            [*uvicorn, *flags],
            {**FAST_ENV, **(env or {}), "TIDINGS_SERVER_BROKER": broker},
        )
        self.broker = broker

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.host_url}{PREFIX}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PREFIX}/ws"


async def start_nodes(
    broker: str, count: int, started: list[Node], env: dict[str, str] | None = None
) -> list[Node]:
    """``count`` nodes on ``broker``, started side by side; each is added to ``started``."""
    nodes = [Node(broker, env) for _ in range(count)]
    started.extend(nodes)
    await asyncio.gather(*(asyncio.to_thread(node.wait_listening) for node in nodes))
    return nodes


async def wait_until(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE, pause: float = 0.01
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
    return value


async def wait_until_async(
    condition: Callable[[], Awaitable[Any]], what: str, timeout: float = DEADLINE
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def publish(
    http: httpx.AsyncClient, node: Node | MountedNode, channel: str, data: Any
) -> str:
    answer = await http.post(f"{node.url}/api/publish", json={"channel": channel, "data": data})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


class LeanSSE:
    """A bare asyncio SSE subscriber of one channel: raw sockets, no client library.

    It follows ``urls`` in turn: when a stream ends or fails it goes on to the next node with
    ``Last-Event-ID`` set to the last ``id:`` it saw (the opening id included), so it resumes
    exactly there. Records every event's offset and every reset.
    """

    def __init__(self, urls: list[str], channel: str, since: str) -> None:
        self.urls = urls
        self.channel = channel
        self.cursor = since
        self.offsets: list[int] = []
        self.resets: list[str] = []
        self.connects = 0
        self.errors: list[str] = []
        self.connected = False
        self.url = ""
        self.local_port = 0  # of the current connection: which process serves it
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        for index in range(1000):  # bounded: no subscriber reconnects for ever
            url = self.urls[index % len(self.urls)]
            try:
                await self._follow(url)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                self.errors.append(f"{url}: {type(error).__name__}: {error}")
            self.connected = False
            if self._stopping:
                return
            await asyncio.sleep(0.02 + 0.05 * (index % 4))

    async def _follow(self, url: str) -> None:
        parts = urlsplit(url)  # a node's root, or the mount's prefix
        port = parts.port
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        self.local_port = writer.get_extra_info("sockname")[1]
        try:
            writer.write(
                (
                    f"GET {parts.path}/sse?channel={self.channel} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                    f"Last-Event-ID: {self.cursor}\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            if b" 200 " not in status:
                raise ValueError(f"status {status!r}")
            chunked = False
            while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
                if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                    chunked = True
            self.connects += 1
            self.url = url
            self.connected = True
            lines = _chunked_lines(reader) if chunked else _plain_lines(reader)
            await self._read_blocks(lines)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_blocks(self, lines: Any) -> None:
        block: dict[str, str] = {}
        async for line in lines:
            if line == "":
                self._dispatch(block)
                block = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            block[name] = value[1:] if value.startswith(" ") else value

    def _dispatch(self, block: dict[str, str]) -> None:
        if "id" in block:
            cursor = block["id"]
        else:
            return
        if "data" in block:
            if block.get("event") == "tidings.reset":
                self.resets.append(block["data"])
            else:
                self.offsets.append(offset(cursor))
        self.cursor = cursor


async def _plain_lines(reader: asyncio.StreamReader) -> Any:
    while line := await reader.readline():
        yield line.decode().rstrip("\r\n")


async def _chunked_lines(reader: asyncio.StreamReader) -> Any:
    pending = b""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.strip().split(b";")[0] or b"0", 16)
        if size == 0:
            return
        pending += await reader.readexactly(size)
        await reader.readexactly(2)
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            yield line.decode().rstrip("\r")
