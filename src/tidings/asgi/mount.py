"""``tidings.asgi.app()``: the whole wire protocol as an ASGI 3 application.

Mount it anywhere (``fastapi_app.mount("/rt", tidings.asgi.app())``): every endpoint answers
under the prefix as ``tidings serve`` answers at the root. The node (hub, broker, timers)
starts on the ASGI lifespan when the server sends it to this app, on the first request
otherwise (Starlette does not pass lifespan to mounted apps), or when the host application
enters ``async with tidings_app`` or uses :meth:`TidingsApp.lifespan`. Leaving it drains
the node as the standalone server does on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType, TracebackType
from typing import Any

from tidings.asgi.http import serve_http
from tidings.asgi.types import Receive, Scope, Send
from tidings.asgi.websocket import serve_websocket
from tidings.config import Settings, load_settings
from tidings.server.core.api.publish import publish_in_process
from tidings.server.core.hooks import HookFunctions
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.core.routes import Routes
from tidings.server.drain import Drain

log = logging.getLogger("tidings.asgi")

Config = str | os.PathLike[str] | Settings | None


def settings_from(config: Config) -> Settings:
    """A ``tidings.toml`` path, a settings object, or None: defaults and ``TIDINGS_*``."""
    if isinstance(config, Settings):
        return config
    return load_settings(config)


class TidingsApp:
    """The mount: an ASGI app, and the in-process publisher of the host application."""

    def __init__(self, config: Config = None, hooks: HookFunctions | None = None) -> None:
        self.settings = settings_from(config)  # a bad setting fails here, at import time
        self.hook_functions = hooks
        self.node: Node | None = None
        self.routes: Routes | None = None
        self._starting: asyncio.Lock | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        routes = await self.start()
        assert self.node is not None
        if kind == "http":
            await serve_http(self.node, routes, scope, receive, send)
        elif kind == "websocket":
            await serve_websocket(self.node, routes, scope, receive, send)

    async def start(self) -> Routes:
        """Start the node once (later calls return at once)."""
        if self.routes is not None:
            return self.routes
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.routes is None:
                files = await StaticFiles.load()
                node = Node(self.settings, asyncio.get_running_loop(), self.hook_functions)
                routes = Routes(node, files)
                await node.start()
                self.node, self.routes = node, routes
                self._drain_on_signals(node.loop)
                log.info("tidings mounted (broker %s)", self.settings.server.broker)
        return self.routes

    async def stop(self) -> None:
        """Drain: ask every client back, wait for them (at most ``drain_seconds`` and a
        grace), then close the broker. Later calls wait for the first one."""
        if self.node is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain_and_close(self.node))
        await asyncio.shield(self._stopping)

    async def _drain_and_close(self, node: Node) -> None:
        drain = Drain(node)
        node.drain = drain
        await drain.run()
        await node.close()

    def _drain_on_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the drain on SIGTERM or SIGINT, then hand the signal on to the server.

        An ASGI server runs the lifespan shutdown only after its open connections end, and
        a stream never ends by itself: without this, SSE streams would hold the server until
        its graceful timeout and be cut, never asked back. The server's own handler still
        runs, so it stops accepting and shuts down as it always does; a signal no server
        handles keeps its default. Signals can only be handled in the main thread: elsewhere
        (an app served from a thread) nothing is done.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # no server handles it: its default (exit) stays as it is

            def on_signal(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self._begin_stopping)
                previous(number, frame)

            signal.signal(signum, on_signal)

    def _begin_stopping(self) -> None:
        if self._stopping is None and self.node is not None:
            log.info("signal received: draining")
            self._stopping = asyncio.ensure_future(self._drain_and_close(self.node))

    async def publish(
        self,
        channel: str,
        data: Any,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Publish from the host application, with no HTTP round trip; the event's cursor.

        The publish API's rules hold: a bad channel or event name, or ``data`` over
        ``max_message_bytes``, raises the :class:`~tidings.exceptions.RequestError` an HTTP
        publisher gets as a 4xx; an unreachable broker raises ``BrokerUnavailable``. A
        repeated ``idempotency_key`` returns the first event's cursor.
        """
        await self.start()
        assert self.node is not None
        return await publish_in_process(self.node, channel, data, event, idempotency_key)

    async def __aenter__(self) -> TidingsApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @asynccontextmanager
    async def lifespan(self, host: object = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=tidings_app.lifespan)`` or to nest in the host's own."""
        async with self:
            yield

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    log.exception("tidings failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def app(config: Config = None, hooks: HookFunctions | None = None) -> TidingsApp:
    """The Tidings ASGI application: ``config`` is a ``tidings.toml`` path, a
    :class:`~tidings.config.Settings`, or None (the defaults plus ``TIDINGS_*``); ``hooks``
    are the host application's functions deciding who may connect, subscribe and publish,
    in place of the ``[hooks]`` URLs."""
    return TidingsApp(config, hooks)
