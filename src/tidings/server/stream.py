"""What SSE streams and WebSocket connections share: tails, backpressure, heartbeats.

Backpressure comes from the transport's write buffer (``pause_writing`` past
``write_buffer_limit``). The namespace's slow-consumer policy then decides: ``disconnect``
ends the connection with a resume hint (the client comes back from its last cursor), and
``drop-oldest`` stops writing, holds at most a bounded backlog, and once the buffer drains
catches up from history, with a reset where history no longer covers the gap. Either way the
server's memory for one slow client stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tidings.hub.follow import Follower, Tail
from tidings.protocol.channel import namespace_of
from tidings.protocol.identity import ANONYMOUS, Identity

if TYPE_CHECKING:
    from tidings.server.app import App

log = logging.getLogger("tidings.stream")


class StreamConnection(Follower, asyncio.Protocol):
    __slots__ = ("app", "closed", "hub", "identity", "lagging", "tails", "transport")

    def __init__(
        self, app: App, transport: asyncio.Transport, identity: Identity = ANONYMOUS
    ) -> None:
        self.app = app
        self.identity = identity
        self.hub = app.hub
        self.transport = transport
        self.tails: dict[str, Tail] = {}
        self.lagging = False
        self.closed = False
        app.connections.add(self)
        self.hub.beating.add(self)

    def follow(self, tail: Tail) -> None:
        self.tails[tail.channel] = tail
        self.hub.attach(tail.channel, self)

    def unfollow(self, channel: str) -> None:
        if self.tails.pop(channel, None) is not None:
            self.hub.detach(channel, self)
            self.hub.presence.leave(channel, self)

    def present(self, channel: str) -> None:
        """The subscription to ``channel`` is confirmed: count this connection as present
        where presence is on. Only a transport that can tell its client of joins and leaves
        (the WebSocket) also asks to hear them."""
        self.hub.presence.join(channel, self, self.identity, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for channel in self.tails:
            self.hub.detach(channel, self)
            self.hub.presence.leave(channel, self)
        self.tails.clear()
        self.hub.beating.discard(self)
        self.hub.timers.discard(self)
        self.app.connections.discard(self)

    def writable(self) -> bool:
        return not self.lagging and not self.closed

    def policy(self) -> str:
        """``drop-oldest`` only when every followed channel's namespace asks for it."""
        settings = self.app.settings
        for channel in self.tails:
            if settings.namespace(namespace_of(channel)).slow_consumer != "drop-oldest":
                return "disconnect"
        return "drop-oldest"

    def pause_writing(self) -> None:
        if self.policy() == "disconnect":
            self.app.stats.slow_consumers += 1
            self.too_slow()
            return
        self.lagging = True
        for tail in self.tails.values():
            if tail.backlog is None:
                tail.backlog = []

    def resume_writing(self) -> None:
        if not self.lagging or self.closed:
            return
        self.lagging = False
        for tail in list(self.tails.values()):
            if tail.backlog is not None:
                self.catch_up(tail)

    def heartbeat(self, now: float) -> None:
        """Keep the connection visibly alive; find dead peers."""
        raise NotImplementedError

    def too_slow(self) -> None:
        """The client cannot keep up: end the connection so it resumes from its cursor."""
        raise NotImplementedError

    def expire(self) -> None:
        """A closing connection did not finish in time: drop it and its buffer."""
        self.transport.abort()

    def abandon(self, reason: str) -> None:
        log.info("closing a stream: %s", reason)
        self.transport.abort()
