"""Draining a node for a deploy or a restart (PROTOCOL.md sections 4 and 6).

The listening socket is closed first, so a load balancer or a restarted process takes new
connections at once. Then every client is asked back, each its own way: a WebSocket is
closed with ``1012``, an SSE stream gets a ``retry:`` with a random delay inside
``drain_seconds`` and ends, a held long poll is answered ``204`` with its cursor (as its
timeout would), and an idle keep-alive connection is closed. A request being answered (a
publish awaiting the broker) finishes, and its answer closes the connection. The node is done
when every connection is gone, or when the window and a short grace are up: what is left then
is dropped.

The clients' delays, not the order of the closes, spread the crowd over the window: every
close goes out at once, so a node whose clients behave is gone in well under a second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.server.app import App

log = logging.getLogger("tidings.server")

GRACE_SECONDS = 1.0  # past the window: close handshakes and in-flight answers finish


class Connections:
    """The node's open connections (HTTP, SSE, WebSocket), in a set that knows the drain.

    A connection that opens while the node drains (a stream whose start awaited the broker)
    is asked back as soon as it is set up, and the drain learns when the last one is gone.
    """

    __slots__ = ("_drain", "_open")

    def __init__(self) -> None:
        self._open: set[asyncio.Protocol] = set()
        self._drain: Drain | None = None

    def add(self, connection: asyncio.Protocol) -> None:
        self._open.add(connection)
        if self._drain is not None:
            self._drain.late(connection)

    def discard(self, connection: asyncio.Protocol) -> None:
        self._open.discard(connection)
        if self._drain is not None and not self._open:
            self._drain.emptied.set()

    def __contains__(self, connection: object) -> bool:
        return connection in self._open

    def __iter__(self) -> Iterator[asyncio.Protocol]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def watch(self, drain: Drain) -> None:
        self._drain = drain
        if not self._open:
            drain.emptied.set()


class Drain:
    """One drain of one node: started once, awaited once."""

    __slots__ = ("app", "emptied", "hurry", "window")

    def __init__(self, app: App) -> None:
        self.app = app
        self.window = app.settings.server.drain_seconds
        self.emptied = asyncio.Event()
        self.hurry = asyncio.Event()  # a second signal: stop waiting for the stragglers

    def retry_ms(self) -> int:
        """A uniform draw in the window: the clients come back spread over it."""
        return int(random.uniform(0, self.window * 1000))

    def retry_after(self) -> bytes:
        """``Retry-After`` (whole seconds, at least 1) for what is refused while draining."""
        return str(max(1, math.ceil(random.uniform(0, self.window)))).encode()

    def ask_back(self, connection: asyncio.Protocol) -> None:
        """``drain(retry_ms)``: each transport asks its client back in its own way."""
        drain = getattr(connection, "drain", None)
        if drain is not None and connection in self.app.connections:
            drain(self.retry_ms())

    def late(self, connection: asyncio.Protocol) -> None:
        # Called from the connection's constructor: ask once it is fully set up.
        self.app.loop.call_soon(self.ask_back, connection)

    async def run(self) -> None:
        """Ask every client back; return once they are gone, or drop them at the deadline."""
        app = self.app
        loop = app.loop
        started = loop.time()
        kinds = Counter(type(connection).__name__ for connection in app.connections)
        log.info(
            "draining: %d connections (%s), asking them back within %g s",
            len(app.connections),
            ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none",
            self.window,
        )
        app.connections.watch(self)
        for connection in list(app.connections):
            self.ask_back(connection)
        left = await self._wait(self.window + GRACE_SECONDS)
        for connection in list(app.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        log.info(
            "drained in %.2f s: %d connections left on their own, %d dropped at the deadline",
            loop.time() - started,
            max(0, sum(kinds.values()) - left),
            left,
        )

    async def _wait(self, timeout: float) -> int:
        """Wait for the last connection to go (or a hurry); how many are left."""
        waits = [asyncio.ensure_future(event.wait()) for event in (self.emptied, self.hurry)]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return len(self.app.connections)
