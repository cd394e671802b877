"""``tidings subscribe`` as a user runs it: a subprocess against a real server.

Events on stdout as JSON lines, once each across a dropped connection (the fault proxy cuts
it mid-stream); a reset and a refusal end it with a clear message and their own status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.client.proxy import proxy
from tests.client.support import QUICK_SERVER, closed_port, offset, publish_many
from tests.conftest import RunningServer
from tests.server.tokens import SECRET
from tidings.client import TRANSPORTS
from tidings.subscribe import EXIT_RESET

MakeServer = Callable[..., RunningServer]
TIMEOUT = 20.0


@dataclass
class Subscriber:
    """A running ``tidings subscribe``: its stdout lines as JSON, its stderr as text."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    async def wait_message(self, text: str) -> str:
        """Read stderr until a line contains ``text``."""
        assert self.process.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await self.process.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"stderr ended before {text!r}: {self.messages}")
                self.messages.append(line)
                if text in line:
                    return line

    async def read_lines(self, count: int) -> list[dict[str, Any]]:
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while len(self.lines) < count:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"stdout ended after {len(self.lines)} lines")
                self.lines.append(json.loads(line))
        return self.lines

    async def finish(self) -> tuple[int, str, list[dict[str, Any]]]:
        """Wait for the exit; the status, all of stderr and every stdout line."""
        async with asyncio.timeout(TIMEOUT):
            out, err = await self.process.communicate()
        self.lines += [json.loads(line) for line in out.decode().splitlines()]
        self.messages.append(err.decode())
        assert self.process.returncode is not None
        return self.process.returncode, "".join(self.messages), self.lines


@contextlib.asynccontextmanager
async def subscribe(*args: str) -> AsyncIterator[Subscriber]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "subscribe",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield Subscriber(process)
    finally:
        if process.returncode is None:
            process.kill()  # by its own PID: the process this test started
            await process.wait()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_drop_mid_stream_prints_every_event_once(
    make_server: MakeServer, transport: str
) -> None:
    server = make_server(**QUICK_SERVER)
    async with proxy(server.port) as faulty:
        args = ["news", "--url", faulty.url, "--transport", transport, "--count", "40"]
        async with subscribe(*args) as running:
            await running.wait_message(f"subscribed to 'news' from now over {transport}")
            await publish_many(server, "news", list(range(20)))
            await running.read_lines(5)
            cut = faulty.cut()  # some of the twenty are on the wire, some read, some not yet
            await publish_many(server, "news", list(range(20, 40)))
            status, messages, lines = await running.finish()
    assert status == 0, messages
    assert [line["data"] for line in lines] == list(range(40))
    assert [offset(line["id"]) for line in lines] == list(range(1, 41))
    assert {(line["channel"], line["event"]) for line in lines} == {("news", "message")}
    assert all(isinstance(line["ts"], int) for line in lines)
    if transport in ("websocket", "sse"):
        assert cut >= 1
        path = "/ws" if transport == "websocket" else "/sse"
        assert faulty.count(path) >= 2, faulty.requests  # it came back after the cut
    assert f"--since {lines[-1]['id']}" in messages


async def test_several_channels_and_ctrl_c_print_how_to_continue(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUICK_SERVER)
    async with subscribe("news", "sport", "--url", server.url) as running:
        await running.wait_message("subscribed to 'sport'")
        news = await publish_many(server, "news", ["n1"])
        sport = await publish_many(server, "sport", ["s1", "s2"])
        lines = await running.read_lines(3)
        running.process.send_signal(signal.SIGINT)
        status, messages, lines = await running.finish()
    assert status == 0, messages
    assert sorted((line["channel"], line["data"]) for line in lines) == [
        ("news", "n1"),
        ("sport", "s1"),
        ("sport", "s2"),
    ]
    continuation = f"tidings subscribe news sport --since {news[0]} --since {sport[1]}"
    assert continuation in messages


async def test_resuming_with_since_prints_what_was_missed(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    ids = await publish_many(server, "news", ["a", "b", "c", "d"])
    async with subscribe("news", "--since", ids[0], "--url", server.url, "--count", "2") as running:
        status, messages, lines = await running.finish()
    assert status == 0, messages
    assert [(line["id"], line["data"]) for line in lines] == [(ids[1], "b"), (ids[2], "c")]
    # "d" may have reached the client, but it was not printed: the next run starts there.
    assert f"tidings subscribe news --since {ids[2]} --url" in messages


async def test_a_closed_stdout_ends_it_quietly_after_the_last_line_read(
    make_server: MakeServer,
) -> None:
    server = make_server(**QUICK_SERVER)
    command = f"{sys.executable} -m tidings.cli subscribe news --url {server.url} | head -n 1"
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command + '; echo "status ${PIPESTATUS[0]}" >&2',
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Subscriber(process)
    try:
        await running.wait_message("subscribed to 'news'")
        ids = await publish_many(server, "news", ["first"])
        await running.read_lines(1)  # head has it and exits; the next write finds no reader
        await publish_many(server, "news", ["second", "third"])
        status, messages, lines = await running.finish()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert status == 0
    assert [line["data"] for line in lines] == ["first"]
    assert "status 0" in messages
    assert "Traceback" not in messages and "BrokenPipe" not in messages
    assert f"tidings subscribe news --since {ids[0]} --url" in messages


async def test_a_reset_ends_naming_the_channel_and_its_new_cursor(
    make_server: MakeServer,
) -> None:
    server = make_server(namespaces__default__history_size=5, **QUICK_SERVER)
    ids = await publish_many(server, "news", list(range(10)))
    async with subscribe("news", "--since", ids[0], "--url", server.url) as running:
        status, messages, lines = await running.finish()
    assert status == EXIT_RESET, messages
    assert lines == []
    assert "channel 'news' was reset (gap)" in messages
    assert f"Its new cursor is {ids[-1]}" in messages
    assert f"tidings subscribe news --since {ids[-1]}" in messages


async def test_a_bad_channel_is_refused_with_the_servers_words(make_server: MakeServer) -> None:
    server = make_server(**QUICK_SERVER)
    async with subscribe("bad channel!", "--url", server.url) as running:
        status, messages, lines = await running.finish()
    assert status == 1
    assert "400 invalid_channel" in messages
    assert lines == []


async def test_a_private_channel_without_a_token_is_refused(make_server: MakeServer) -> None:
    server = make_server(
        auth__token_secret=SECRET, namespaces__secret__public=False, **QUICK_SERVER
    )
    async with subscribe("secret:plans", "--url", server.url) as running:
        status, messages, _ = await running.finish()
    assert status == 1
    assert "401 unauthorized" in messages
    assert "--token" in messages


async def test_a_server_that_is_not_there_fails_within_the_open_timeout() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with subscribe("news", "--url", url, "--open-timeout", "1") as running:
        status, messages, _ = await running.finish()
    assert status == 1
    assert f"could not subscribe to 'news' at {url} within 1 s" in messages


async def test_one_since_per_channel_or_none() -> None:
    async with subscribe("a", "b", "--since", "x.1") as running:
        status, messages, _ = await running.finish()
    assert status == 2
    assert "give --since once per channel" in messages
