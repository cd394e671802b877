"""Draining a node for a deploy or a restart (docs/protocol.md sections 4 and 6).

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
from typing import Any

from tidings.server.core.connections import Connection
from tidings.server.core.node import Node

log = logging.getLogger("tidings.server")

GRACE_SECONDS = 1.0  # past the window: close handshakes and in-flight answers finish


class Drain:
    """One drain of one node: started once, awaited once."""

    __slots__ = ("_emptied", "hurry", "node", "window")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.window = node.settings.server.drain_seconds
        self._emptied = asyncio.Event()
        self.hurry = asyncio.Event()  # a second signal: stop waiting for the stragglers

    def retry_ms(self) -> int:
        """A uniform draw in the window: the clients come back spread over it."""
        return int(random.uniform(0, self.window * 1000))

    def retry_after(self) -> bytes:
        """``Retry-After`` (whole seconds, at least 1) for what is refused while draining."""
        return str(max(1, math.ceil(random.uniform(0, self.window)))).encode()

    def ask_back(self, connection: Connection) -> None:
        """``drain(retry_ms)``: each transport asks its client back in its own way."""
        drain = getattr(connection, "drain", None)
        if drain is not None and connection in self.node.connections:
            drain(self.retry_ms())

    def late(self, connection: Connection) -> None:
        # Called from the connection's constructor: ask once it is fully set up.
        self.node.loop.call_soon(self.ask_back, connection)

    def emptied(self) -> None:
        self._emptied.set()

    async def run(self) -> None:
        """Ask every client back; return once they are gone, or drop them at the deadline."""
        node = self.node
        loop = node.loop
        started = loop.time()
        kinds = Counter(type(connection).__name__ for connection in node.connections)
        log.info(
            "draining: %d connections (%s), asking them back within %g s",
            len(node.connections),
            ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none",
            self.window,
        )
        node.connections.watch(self)
        for connection in list(node.connections):
            self.ask_back(connection)
        left = await self._wait(self.window + GRACE_SECONDS)
        for connection in list(node.connections):
            transport: Any = getattr(connection, "transport", None)
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
        waits = [asyncio.ensure_future(event.wait()) for event in (self._emptied, self.hurry)]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return len(self.node.connections)
