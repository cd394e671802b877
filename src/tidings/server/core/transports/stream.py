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
import time
from typing import TYPE_CHECKING, ClassVar

from mypy_extensions import mypyc_attr

from tidings.hub.follow import Follower
from tidings.hub.tail import Tail
from tidings.protocol.channel import namespace_of
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.server.core.exchange import Sink
from tidings.server.core.logs import stream_closed

if TYPE_CHECKING:
    from tidings.server.core.node import Node

log = logging.getLogger("tidings.stream")


# compiled (setup.py), yet open to interpreted subclasses:
# SSE streams and WebSockets derive from it, and they have interpreted subclasses
@mypyc_attr(allow_interpreted_subclasses=True)
class StreamConnection(Follower, asyncio.Protocol):
    __slots__ = (
        "address",
        "closed",
        "ended",
        "hub",
        "identity",
        "lagging",
        "node",
        "opened_at",
        "tails",
        "transport",
    )
    kind: ClassVar[str] = "stream"  # the transport's name in logs and metrics

    transport: Sink  # set by the edge as the stream starts

    def __init__(self, node: Node, identity: Identity = ANONYMOUS) -> None:
        self.node = node
        self.identity = identity
        self.hub = node.hub
        self.tails: dict[str, Tail] = {}
        self.lagging = False
        self.closed = False
        self.address = ""  # the client's; set by the edge as the stream starts
        self.opened_at = 0.0  # loop time, kept only while connection logs are on
        self.ended: str | None = None  # why the server ended it; None: the client did
        node.connections.add(self)
        self.hub.beating.add(self)

    def watch_token(self) -> None:
        """Expire the connection when its token does, with the one wheel entry it may hold.

        ``expires_at`` is wall-clock time (the token's exp); the wheel counts loop time, so
        the remaining lifetime is measured once, here.
        """
        expires_at = self.identity.expires_at
        if expires_at is not None:
            self.hub.timers.add(self, expires_at - time.time())

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
        self.node.limits.release(self.address)
        stream_closed(self, self.kind, exc)
        for channel in self.tails:
            self.hub.detach(channel, self)
            self.hub.presence.leave(channel, self)
        self.tails.clear()
        self.hub.beating.discard(self)
        self.hub.timers.discard(self)
        self.node.connections.discard(self)

    def writable(self) -> bool:
        return not self.lagging and not self.closed

    def policy(self) -> str:
        """``drop-oldest`` only when every followed channel's namespace asks for it."""
        settings = self.node.settings
        for channel in self.tails:
            if settings.namespace(namespace_of(channel)).slow_consumer != "drop-oldest":
                return "disconnect"
        return "drop-oldest"

    def pause_writing(self) -> None:
        if self.policy() == "disconnect":
            self.node.stats.slow_consumers += 1
            self.ended = "slow consumer"
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

    def disconnect(self, reconnect: bool) -> None:
        """The server ends the connection (POST /api/disconnect), telling the client whether
        to come back (docs/protocol.md section 7)."""
        raise NotImplementedError

    def end_subscription(self, channel: str) -> bool:
        """The server ends ``channel`` (POST /api/unsubscribe) and tells the client, which
        does not subscribe again; False if the connection does not follow it."""
        raise NotImplementedError

    def expire(self) -> None:
        """A closing connection did not finish in time: drop it and its buffer."""
        self.transport.abort()

    def abandon(self, reason: str) -> None:
        log.info("closing a stream: %s", reason)
        self.ended = reason
        self.transport.abort()
