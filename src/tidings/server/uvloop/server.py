"""The standalone server: a node listening on a socket, and the process's signals."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import cast

from tidings.compiled import describe, stale_modules
from tidings.config import Settings
from tidings.server.collector import tune_collector
from tidings.server.core.limits import exposure_warning
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.core.peers import PeersView
from tidings.server.drain import Drain
from tidings.server.uvloop.http import Edge
from tidings.server.uvloop.websocket import FrameSocket

log = logging.getLogger("tidings.server")
BACKLOG = 4096


class Server:
    """A node listening on a socket: ``start`` it, read ``port``, ``stop`` it.

    ``socket_class`` is what ``/ws`` speaks; the Autobahn suite passes the echo. A worker of
    a node of several (``server.workers``) passes ``peers``, what it knows of the others,
    and ``reuse_port``: every worker listens on the same port (``SO_REUSEPORT``) and the
    kernel spreads the connections over them.
    """

    def __init__(
        self,
        settings: Settings,
        socket_class: type[FrameSocket] = FrameSocket,
        peers: PeersView | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.port = 0
        self.node: Node | None = None
        self.edge: Edge | None = None
        self._socket_class = socket_class
        self._peers = peers
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._drain: Drain | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        files = await StaticFiles.load()
        self.node = Node(self.settings, loop)
        self.edge = Edge(self.node, files, self._socket_class, self._peers)
        await self.node.start()
        server = self.settings.server
        self._server = await loop.create_server(
            # a protocol by its methods: HttpConnection's base is the core's Exchange
            cast("Callable[[], asyncio.Protocol]", self.edge.protocol_factory),
            server.host,
            server.port,
            backlog=BACKLOG,
            reuse_port=self._reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Drain: stop accepting at once, ask every client back, then close the broker.

        Returns when every connection is gone, or ``drain_seconds`` and a short grace after
        the start (what is left is dropped); ``hurry`` cuts the wait short.
        """
        if self._server is None or self.node is None:
            return
        self._server.close()  # new connections are refused: they go to another node
        self._drain = Drain(self.node)
        self.node.drain = self._drain
        await self._drain.run()
        await self.node.close()  # the broker last: in-flight publishes have finished
        await self._server.wait_closed()
        self._server = None

    def hurry(self) -> None:
        """Stop waiting for the clients that are slow to leave (a second signal)."""
        if self._drain is not None:
            self._drain.hurry.set()


def announce(settings: Settings, port: int, workers: int = 1) -> None:
    """The line that says where the node listens (tests and scripts read the port there)."""
    server = settings.server
    processes = f", {workers} workers" if workers > 1 else ""
    where = f"http://{server.host}:{port}"
    log.info(
        "tidings listening on %s (broker %s%s; %s)", where, server.broker, processes, describe()
    )
    warning = exposure_warning(server)
    if warning is not None:
        log.warning(warning)
    stale = stale_modules()
    if stale:
        log.warning(
            "compiled modules older than their source run the old code: %s; reinstall "
            "(scripts/serve does) or delete their .so files",
            ", ".join(stale),
        )


async def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then drain; a second signal ends the drain at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = Server(settings)

    def on_signal() -> None:
        if stop.is_set():
            server.hurry()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)  # before "listening" is announced
    announce(settings, await server.start())
    tune_collector()
    try:
        await stop.wait()
    finally:
        await server.stop()
