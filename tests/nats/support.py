"""Helpers for tests that need NATS: the shared server, per-test prefixes, a private server.

nats-py is imported inside the functions, so that importing this module (the broker
conformance conftest does) works without the ``nats`` extra.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nats.aio.client import Client

NATS_URL = "nats://127.0.0.1:4222"
NOT_RUNNING = "NATS IS NOT RUNNING on {where}: nats tests did not run"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

_reachable: dict[str, str | None] = {}


async def _why_unreachable(url: str) -> str | None:
    """None when a JetStream-enabled NATS answers at ``url``, else the reason."""
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is not installed (pip install tidings[nats])"
    try:
        client = await connect(url)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    try:
        await client.jetstream().account_info()
    except Exception as error:
        return f"JetStream is not enabled: {type(error).__name__}: {error}"
    finally:
        await client.close()
    return None


async def require_nats(url: str = NATS_URL) -> None:
    """Skip, loudly, when NATS is not running; under CI (``CI=true``) fail instead."""
    if url not in _reachable:
        _reachable[url] = await _why_unreachable(url)
    reason = _reachable[url]
    if reason is None:
        return
    message = f"{NOT_RUNNING.format(where=url.partition('://')[2])} ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


async def connect(url: str, timeout: float = 3.0) -> Client:
    """A plain nats-py connection that gives up after ``timeout`` seconds.

    (nats-py retries a refused first connection for minutes, even with reconnects off.)
    """
    from nats.aio.client import Client

    client = Client()
    try:
        await asyncio.wait_for(
            client.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet),
            timeout,
        )
    except BaseException:
        await client.close()
        raise
    return client


async def _quiet(error: Exception) -> None:
    """nats-py logs every connection error with a traceback unless given a callback."""


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


async def delete_streams(url: str, prefix: str) -> None:
    """Remove every stream a broker with ``prefix`` made (its presence bucket's included)."""
    client = await connect(url)
    try:
        js = client.jetstream()
        offset = 0
        names: list[str] = []
        while True:
            page = await js.streams_info(offset)
            names += [info.config.name for info in page if info.config.name]
            if not page:
                break
            offset += len(page)
        for name in names:
            if name.startswith((f"{prefix}_", f"KV_{prefix}_")):
                await js.delete_stream(name)
    finally:
        await client.close()


@asynccontextmanager
async def isolated_nats_url(base: str) -> AsyncIterator[str]:
    """``base`` with a prefix of its own; the streams made under it are deleted afterwards."""
    await require_nats(base)
    prefix = unique_prefix()
    try:
        yield f"{base}?prefix={prefix}"
    finally:
        await delete_streams(base, prefix)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateNats:
    """A nats-server of the test's own on a free port, to stop and start again.

    Readiness is read from the server's log ("Server is ready"), never guessed with a sleep.
    The store directory is kept across restarts, so streams survive them.
    """

    def __init__(self, store: Path, *options: str) -> None:
        self.store = store
        self.options = options  # more nats-server arguments (``-c <file>``)
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 10.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            NATS_SERVER,
            *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)),
            *self.options,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.wait_for(self._ready(self.process), timeout)

    @staticmethod
    async def _ready(process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            if b"Server is ready" in line:
                asyncio.get_running_loop().create_task(_drain(process.stderr))
                return
        raise RuntimeError(f"nats-server exited with {await process.wait()} before it was ready")

    async def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout)


async def _drain(stream: asyncio.StreamReader) -> None:
    """Keep reading the server's log so that a full pipe never blocks it."""
    while await stream.readline():
        pass
