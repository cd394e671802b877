"""Shared fixtures: a real Tidings server on 127.0.0.1:0, in its own thread and uvloop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop

from tidings.compiled import describe, running_compiled, stale_modules
from tidings.config import Settings, load_settings
from tidings.server.core.node import Node
from tidings.server.uvloop.server import Server
from tidings.server.uvloop.websocket import FrameSocket


def pytest_report_header() -> str:
    return f"tidings: {describe()}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite tests the code as it is: never extensions built from an older source (unless
    it imports the sources themselves: tests/interpreted.py)."""
    stale = stale_modules() if running_compiled() else []
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}. scripts/test "
            "rebuilds them; TIDINGS_COMPILE=0 scripts/test runs interpreted",
            returncode=4,
        )


# Broker deployments beyond one server (Redis Cluster, Sentinel, a NATS cluster), as fixtures.
pytest_plugins = ["tests.deployments"]


@dataclass
class RunningServer:
    """A server started by a test: its URL parts and the App inside it."""

    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    prefix: str = ""  # where the node is mounted in its host application

    @property
    def node(self) -> Node | None:
        return self.server.node

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.prefix}/ws"

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the server's loop and return its result (to inspect state)."""
        result: Future[Any] = Future()

        def run() -> None:
            try:
                result.set_result(function())
            except BaseException as error:  # handed back to the test thread
                result.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return result.result(timeout=10)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def start_server(
    settings: Settings, socket_class: type[FrameSocket] = FrameSocket
) -> RunningServer:
    """Start a server in a new thread with its own uvloop; return once it listens."""
    loop = uvloop.new_event_loop()
    server = Server(settings, socket_class)
    started: Future[int] = Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.set_result(loop.run_until_complete(server.start()))
        except BaseException as error:
            started.set_exception(error)
            return
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="tidings-server", daemon=True)
    thread.start()
    started.result(timeout=10)
    return RunningServer(server, loop, thread)


def settings_with(**overrides: Any) -> Settings:
    """Settings on port 0 with ``section__key`` overrides (``namespaces__chat__presence``)."""
    raw: dict[str, Any] = {"port": 0}
    layers: dict[str, Any] = {}
    for key, value in overrides.items():
        if "__" in key:
            layers[key] = value
        else:
            raw[key] = value
    environ = {f"TIDINGS_{k.upper().replace('__', '_')}": str(v) for k, v in layers.items()}
    return load_settings(environ=environ, flags=raw)


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    """``make_server(max_message_bytes=1024)`` starts a server with those settings."""
    started: list[RunningServer] = []

    def make(socket_class: type[FrameSocket] = FrameSocket, **overrides: Any) -> RunningServer:
        running = start_server(settings_with(**overrides), socket_class)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    """A server with the default settings."""
    return make_server()
