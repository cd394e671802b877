"""SIGTERM to the ASGI server serving the mount drains it as ``tidings serve`` drains: an SSE
stream is asked back with a ``retry:`` inside the window and ends, and the process exits.

Under uvicorn, and under hypercorn in one process (``--workers 0``): with hypercorn's worker
processes, a worker is stopped by an event the application cannot see (docs/asgi.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.server.support import wait_until
from tidings.protocol.sse import SSEParser

UVICORN = (
    [
        *("uvicorn", "tests.asgi.host:app", "--host", "127.0.0.1", "--port", "0"),
        *("--timeout-graceful-shutdown", "5"),
    ],
    re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)"),
)
HYPERCORN = (
    [
        *("hypercorn", "--bind", "127.0.0.1:0", "--workers", "0", "--graceful-timeout", "5"),
        "tests.asgi.host:app",
    ],
    re.compile(r"Running on http://127\.0\.0\.1:(\d+)"),
)


def start(
    argv: list[str], listening: re.Pattern[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stderr is not None
    for _ in range(200):
        line = process.stderr.readline()
        found = listening.search(line)
        if found:
            return process, int(found[1])
        if not line:
            break
    process.kill()
    raise AssertionError(f"{argv[0]} did not start")


@pytest.mark.parametrize("server", [UVICORN, HYPERCORN], ids=["uvicorn", "hypercorn"])
async def test_sigterm_asks_an_sse_stream_back_and_the_process_exits(
    server: tuple[list[str], re.Pattern[str]],
) -> None:
    env = {"TIDINGS_SERVER_DRAIN_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
    process, port = start(*server, env)
    try:
        base = f"http://127.0.0.1:{port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as client,
            client.stream("GET", "/rt/sse?channel=news") as response,
        ):
            chunks = response.aiter_raw()
            opening = await anext(chunks)
            assert opening.startswith(b"retry: ")
            await client.post("/send", params={"channel": "news", "n": 1})
            process.send_signal(signal.SIGTERM)
            rest = b"".join([chunk async for chunk in chunks])
        parser = SSEParser()
        events = parser.feed(opening + rest)
        assert [event.data for event in events] == ['{"n":1}']
        assert rest.endswith(b"\n\n") and b"retry: " in rest.split(b'{"n":1}')[-1]
        retry = int(rest.rsplit(b"retry: ", 1)[1].split(b"\n")[0])
        assert 0 <= retry <= 1000  # inside drain_seconds
        await wait_until(lambda: process.poll() is not None, "the process to exit")
        # uvicorn shuts down, then raises the signal it caught again, as it always does
        assert process.returncode in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
