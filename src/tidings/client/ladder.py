"""The ladder: WebSocket, then SSE, then long polling, then short polling.

``auto`` starts at the top and moves down when a technique cannot open (the upgrade is
refused, the connection fails, the open answers an HTTP error) or opens but delivers nothing
(an SSE stream behind a buffering proxy). The first technique that works is remembered for the
life of the client: every later subscription and reconnect uses it. A refusal that is final
(``ServerRejected``: a bad channel, a bad cursor, a missing token) is raised at once, without
moving down, since every other technique would be refused the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from tidings.client.events import Closed, Item, Unavailable
from tidings.exceptions import ClientError, ServerRejected

__all__ = ["AUTO", "TRANSPORTS", "Feed", "Ladder", "Publisher", "Technique"]

TRANSPORTS = ("websocket", "sse", "long_poll", "poll")
AUTO = "auto"


class Feed(Protocol):
    """One open connection (or poll loop) delivering one channel.

    ``next`` returns the channel's items in the server's order (events, resets and
    positions); once the connection is over it returns :class:`Closed`, and keeps returning
    it. ``aclose`` releases the connection; it is safe to call more than once.
    """

    async def next(self) -> Item | Closed: ...

    async def aclose(self) -> None: ...


class Publisher(Protocol):
    """A live connection that can publish (the WebSocket): the stored event's cursor, the
    server's refusal, or Unavailable when the connection could not tell (the caller then
    publishes over HTTP with the same idempotency key, so nothing is stored twice)."""

    async def publish(self, body: dict[str, Any]) -> str | ServerRejected | Unavailable: ...


class Technique(Protocol):
    """A way to subscribe: opens feeds, one channel each, resuming after ``cursor``.

    ``open`` returns a feed once the server follows the channel (so whatever is published
    afterwards reaches it), :class:`Unavailable` when this technique does not work from here,
    and raises ``ServerRejected`` when the server refuses the subscription itself. Without a
    cursor, ``rewind`` asks for the channel's last events first (docs/protocol.md section 1);
    the server ignores it with one.
    """

    name: str

    async def open(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> Feed | Unavailable: ...

    def publisher(self) -> Publisher | None:
        """The open connection to publish over, if this technique has one (WebSocket)."""
        ...

    async def aclose(self) -> None: ...


class Ladder:
    """Techniques in order of preference; remembers the first one that opens."""

    def __init__(self, techniques: Sequence[Technique]) -> None:
        if not techniques:
            raise ClientError("a ladder needs at least one technique")
        self.techniques = tuple(techniques)
        self.chosen: Technique | None = None
        self._walking = asyncio.Lock()

    async def open(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> tuple[Technique, Feed] | Unavailable:
        """Open with the remembered technique, or walk down the ladder to find one."""
        if self.chosen is None:
            # One walk at a time: subscriptions started together settle on one technique.
            async with self._walking:
                if self.chosen is None:
                    return await self._walk(channel, cursor, rewind)
        return await self._open_with(self.chosen, channel, cursor, rewind)

    async def _walk(
        self, channel: str, cursor: str | None, rewind: int
    ) -> tuple[Technique, Feed] | Unavailable:
        reasons: list[str] = []
        delays: list[float] = []
        for technique in self.techniques:
            opened = await self._open_with(technique, channel, cursor, rewind)
            if not isinstance(opened, Unavailable):
                self.chosen = technique
                return opened
            reasons.append(f"{technique.name}: {opened.reason}")
            if opened.server_delay is not None:
                delays.append(opened.server_delay)
        return Unavailable("; ".join(reasons), min(delays) if delays else None)

    @staticmethod
    async def _open_with(
        technique: Technique, channel: str, cursor: str | None, rewind: int
    ) -> tuple[Technique, Feed] | Unavailable:
        opened = await technique.open(channel, cursor, rewind)
        return opened if isinstance(opened, Unavailable) else (technique, opened)

    async def aclose(self) -> None:
        for technique in self.techniques:
            await technique.aclose()
