"""Helpers for the client tests: fast client settings, publishing, cutting, collecting.

Everything waits on what it expects with a deadline: a collector wakes on each
item it receives, server-side conditions are checked on the server's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tests.conftest import RunningServer
from tidings import Backoff, ClientEvent, ResetEvent, Subscription

TIMEOUT = 10.0  # seconds any single expected thing may take before the test fails

# Reconnect at once (a few ms of backoff), short-poll often, come back fast after a restart.
FAST: dict[str, Any] = {
    "backoff": Backoff(initial=0.01, maximum=0.1),
    "poll_interval": 0.02,
    "restart_window": 0.05,
    "open_timeout": 5.0,
}
# Servers whose SSE streams ask for a short reconnection time, so tests do not wait 2 s.
QUICK_SERVER: dict[str, Any] = {"sse_retry_ms": 10, "drain_seconds": 0}


def offset(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


def epoch(cursor: str) -> str:
    return cursor.partition(".")[0]


def events_of(items: list[Any]) -> list[ClientEvent]:
    return [item for item in items if isinstance(item, ClientEvent)]


def resets_of(items: list[Any]) -> list[ResetEvent]:
    return [item for item in items if isinstance(item, ResetEvent)]


async def publish_many(server: RunningServer, channel: str, values: list[Any]) -> list[str]:
    """Publish ``values`` in one batch over a connection of its own (cuts do not touch it)."""
    events = [{"channel": channel, "data": value} for value in values]
    async with httpx.AsyncClient(
        base_url=server.url, trust_env=False, verify=False, timeout=TIMEOUT
    ) as http:
        response = await http.post("/api/publish", json={"events": events})
    assert response.status_code == 200, response.text
    return [str(result["id"]) for result in response.json()["results"]]


async def cut(server: RunningServer) -> int:
    """Abort every connection the server holds, as a network failure would; how many.

    Returns once the server has let go of them (uvloop reports a lost connection a loop
    iteration later), so that what the server follows afterwards is the client's new work.
    """
    app = server.node
    assert app is not None

    def abort_all() -> list[Any]:
        connections = [c for c in list(app.connections) if getattr(c, "transport", None)]
        for connection in connections:
            connection.transport.abort()
        return connections

    aborted = server.call(abort_all)
    await wait_until(
        lambda: server.call(lambda: not any(c in app.connections for c in aborted)),
        "the server to drop the cut connections",
    )
    return len(aborted)


def follows(server: RunningServer, channel: str) -> bool:
    """Whether a stream (WebSocket, SSE) or a held long poll follows ``channel``."""
    app = server.node
    assert app is not None
    hub = app.hub
    return bool(
        server.call(lambda: hub.subscriber_count(channel) + len(hub._waiters.get(channel, ())))
    )


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Check ``condition`` (a server-side state: nothing to await) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return value


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Collector:
    """Iterates a subscription in a task of its own; tests wait for what it has seen."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.items: list[Any] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for item in self.subscription:
                self.items.append(item)
                self._changed.set()
        except Exception as error:
            self.error = error
        finally:
            self._changed.set()

    @property
    def events(self) -> list[ClientEvent]:
        return events_of(self.items)

    async def wait_for(
        self, condition: Callable[[list[Any]], bool], what: str, timeout: float = TIMEOUT
    ) -> list[Any]:
        try:
            async with asyncio.timeout(timeout):
                while not condition(self.items):
                    if self.error is not None:
                        raise AssertionError(f"the subscription failed: {self.error!r}")
                    if self._task is not None and self._task.done():
                        raise AssertionError(f"the subscription ended before {what}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; got {self.items[-10:]}"
            ) from None
        return self.items

    async def wait_events(self, count: int, timeout: float = TIMEOUT) -> list[ClientEvent]:
        await self.wait_for(
            lambda items: len(events_of(items)) >= count, f"{count} events", timeout
        )
        return self.events

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Collector]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            await self.subscription.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, TIMEOUT)


def collect(subscription: Subscription) -> contextlib.AbstractAsyncContextManager[Collector]:
    """``async with collect(sub) as seen:`` iterate ``sub`` beside the test."""
    return Collector(subscription).running()
