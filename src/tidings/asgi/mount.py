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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from tidings.asgi.http import serve_http
from tidings.asgi.types import Receive, Scope, Send
from tidings.asgi.websocket import serve_websocket
from tidings.config import Settings, load_settings
from tidings.server.core.api.publish import publish_in_process
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

    def __init__(self, config: Config = None) -> None:
        self.settings = settings_from(config)  # a bad setting fails here, at import time
        self.node: Node | None = None
        self.routes: Routes | None = None
        self._starting: asyncio.Lock | None = None
        self._drain: Drain | None = None

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
                node = Node(self.settings, asyncio.get_running_loop())
                routes = Routes(node, files)
                await node.start()
                self.node, self.routes = node, routes
                log.info("tidings mounted (broker %s)", self.settings.server.broker)
        return self.routes

    async def stop(self) -> None:
        """Drain: ask every client back, wait for them (at most ``drain_seconds`` and a
        grace), then close the broker."""
        node = self.node
        if node is None or self._drain is not None:
            return
        self._drain = Drain(node)
        node.drain = self._drain
        await self._drain.run()
        await node.hub.close()

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


def app(config: Config = None) -> TidingsApp:
    """The Tidings ASGI application: ``config`` is a ``tidings.toml`` path, a
    :class:`~tidings.config.Settings`, or None (the defaults plus ``TIDINGS_*``)."""
    return TidingsApp(config)
