"""Helpers for tests that need Redis: the shared server, per-test prefixes, private servers.

redis-py is imported inside the functions, so that importing this module (the broker
conformance conftest does) works without the ``redis`` extra.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tidings.brokers import Broker
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.hub.follow import Follower
from tidings.hub.hub import Hub
from tidings.hub.tail import Tail
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset

REDIS_URL = "redis://127.0.0.1:6379/0"
NOT_RUNNING = "REDIS IS NOT RUNNING on 127.0.0.1:6379: redis tests did not run"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
DEADLINE = 10.0

_reachable: dict[str, str | None] = {}


def _why_unreachable(host: str, port: int) -> str | None:
    """None when a Redis answers PING at ``host:port`` and redis-py is installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install tidings[redis])"
    try:
        with socket.create_connection((host, port), timeout=2) as probe:
            probe.sendall(b"PING\r\n")
            answer = probe.recv(64)
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None if answer.startswith(b"+PONG") else f"PING answered {answer!r}"


def require_redis() -> str:
    """The shared Redis URL. Skip, loudly, when it is not running; under CI=true fail."""
    if REDIS_URL not in _reachable:
        _reachable[REDIS_URL] = _why_unreachable("127.0.0.1", 6379)
    reason = _reachable[REDIS_URL]
    if reason is None:
        return REDIS_URL
    message = f"{NOT_RUNNING} ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def unique_prefix() -> str:
    return "test-" + uuid.uuid4().hex[:12]


async def delete_keys(url: str, prefix: str) -> None:
    """Remove every key a broker with ``prefix`` made."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if names:
            await client.unlink(*names)
    finally:
        await client.aclose()


@asynccontextmanager
async def isolated_redis_url(base: str) -> AsyncIterator[str]:
    """``base`` with a prefix of its own; the keys made under it are deleted afterwards."""
    require_redis()
    prefix = unique_prefix()
    try:
        yield f"{base}?prefix={prefix}"
    finally:
        await delete_keys(base, prefix)


async def until_changed(changed: asyncio.Event, condition: Callable[[], bool], what: str) -> None:
    """Wait, with a deadline, until ``condition`` holds; ``changed`` is set on every change."""

    async def wait() -> None:
        while not condition():
            changed.clear()
            await changed.wait()

    try:
        await asyncio.wait_for(wait(), DEADLINE)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}") from None


class Recorder:
    """A node's sink and resync callback: what arrived, with waits that have a deadline."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.resyncs: list[str] = []
        self._changed = asyncio.Event()

    def sink(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def resync(self, channel: str) -> None:
        self.resyncs.append(channel)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await until_changed(self._changed, condition, what)

    def of(self, channel: str) -> list[Event]:
        return [event for event in self.events if event.channel == channel]

    async def events_of(self, channel: str, count: int) -> list[Event]:
        await self.until(lambda: len(self.of(channel)) >= count, f"{count} events of {channel}")
        return self.of(channel)


async def eventually(attempt: Callable[[], Awaitable[object]], what: str) -> None:
    """Retry ``attempt`` while it raises BrokerUnavailable, until DEADLINE (outage recovery)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await attempt()
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} still failing after {DEADLINE} s") from None
        await asyncio.sleep(0.05)


async def kill_clients(url: str, name: str) -> int:
    """CLIENT KILL, by id, every pub/sub connection named ``name`` (no one else's)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        listed = await client.client_list(_type="pubsub")
        ids = [entry["id"] for entry in listed if entry["name"] == name]
        for client_id in ids:
            await client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await client.aclose()


async def clients_named(url: str, name: str) -> int:
    """How many connections named ``name`` Redis holds open."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        return sum(1 for entry in await client.client_list() if entry["name"] == name)
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start on the same port.

    Readiness is read from the server's log ("Ready to accept connections"), never guessed.
    Without ``appendonly`` it forgets everything when stopped; with it (``appendfsync
    always``, files in ``directory``) every acknowledged write survives a restart.
    """

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--dir", str(self.directory), "--logfile", ""]
        if self.appendonly:
            return [*arguments, "--appendonly", "yes", "--appendfsync", "always"]
        return [*arguments, "--appendonly", "no"]

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *self._arguments(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await asyncio.wait_for(self._ready(self.process), DEADLINE)

    @staticmethod
    async def _ready(process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if b"Ready to accept connections" in line:
                asyncio.get_running_loop().create_task(_drain(process.stdout))
                return
        raise RuntimeError(f"redis-server exited with {await process.wait()} before it was ready")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            await asyncio.wait_for(process.wait(), DEADLINE)


async def _drain(stream: asyncio.StreamReader) -> None:
    """Keep reading the server's log so that a full pipe never blocks it."""
    while await stream.readline():
        pass


class Probe(Follower):
    """One follower of one channel, as an SSE stream or a WebSocket is, in a real Hub.

    It records what the hub's catch-up logic writes: events, resets, resyncs, abandonment.
    """

    def __init__(self, hub: Hub, channel: str, cursor: Cursor) -> None:
        self.hub = hub
        self.tails = {channel: Tail(channel, cursor)}
        self.written: list[Event | Reset] = []
        self.resyncs = 0
        self.abandoned: list[str] = []
        self._changed = asyncio.Event()

    @property
    def events(self) -> list[Event]:
        return [item for item in self.written if isinstance(item, Event)]

    @property
    def resets(self) -> list[Reset]:
        return [item for item in self.written if isinstance(item, Reset)]

    def write_event(self, tail: Tail, event: Event) -> None:
        self.written.append(event)
        self._changed.set()

    def write_reset(self, tail: Tail, reset: Reset) -> None:
        self.written.append(reset)
        self._changed.set()

    def abandon(self, reason: str) -> None:
        self.abandoned.append(reason)
        self._changed.set()

    def resync(self, channel: str) -> None:
        self.resyncs += 1
        self._changed.set()
        super().resync(channel)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await until_changed(self._changed, condition, what)


@asynccontextmanager
async def following(broker: Broker, channel: str) -> AsyncIterator[Probe]:
    """A hub on ``broker`` with one Probe following ``channel`` from its current head."""
    hub = Hub(broker, Settings(), asyncio.get_running_loop())
    hub.start()
    try:
        head = (await broker.history(channel, None, 0)).cursor
        probe = Probe(hub, channel, head)
        hub.attach(channel, probe)
        await probe.until(lambda: probe.resyncs > 0, f"the subscription to {channel}")
        yield probe
    finally:
        await hub.close()
