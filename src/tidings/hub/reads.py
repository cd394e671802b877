"""History reads shared by the followers that ask the same thing in the same loop iteration.

When thousands of clients connect at once, each one asks the broker where its channel stands
(the head, or the page after a cursor) before it is written live. Those are the same reads:
a storm of subscribers to one channel would otherwise send the broker one round trip each,
and spend most of the node's time packing and parsing identical replies.

A read is sent at the end of the loop iteration in which it was first asked for; every
follower that asks for the same channel, cursor and limit before then gets the same page.
A read already sent is never joined: its snapshot could predate the joiner's attachment to
the channel, and an event published in between would reach neither the page nor the
joiner's live feed. Sent after every asker attached, a shared page misses nothing any of
them would have read alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tidings.brokers.base import Broker, HistoryPage
from tidings.protocol.cursor import Cursor

Key = tuple[str, str, Cursor | None, int]


class SharedReads:
    """``history`` and ``recent`` of the broker, one round trip per distinct read per
    loop iteration."""

    def __init__(
        self,
        broker: Broker,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._broker = broker
        self._loop = loop
        self._spawn = spawn
        self._pending: dict[Key, asyncio.Future[HistoryPage]] = {}
        self.sent = 0  # reads sent to the broker
        self.shared = 0  # reads answered by a page another follower asked for

    def history(self, channel: str, since: Cursor | None, limit: int) -> Awaitable[HistoryPage]:
        return self._join(("history", channel, since, limit))

    def recent(self, channel: str, count: int) -> Awaitable[HistoryPage]:
        return self._join(("recent", channel, None, count))

    def _join(self, key: Key) -> Awaitable[HistoryPage]:
        future = self._pending.get(key)
        if future is None:
            if not self._pending:
                self._loop.call_soon(self._send)
            future = self._pending[key] = self._loop.create_future()
        else:
            self.shared += 1
        # shielded: one asker that goes away (its connection closed) cancels its own wait,
        # not the page the others wait for
        return asyncio.shield(future)

    def _send(self) -> None:
        pending, self._pending = self._pending, {}
        for key, future in pending.items():
            self.sent += 1
            self._spawn(self._read(key, future))

    async def _read(self, key: Key, future: asyncio.Future[HistoryPage]) -> None:
        kind, channel, since, limit = key
        try:
            if kind == "recent":
                page = await self._broker.recent(channel, limit)
            else:
                page = await self._broker.history(channel, since, limit)
        except asyncio.CancelledError:  # the node closes
            future.cancel()
            raise
        except Exception as error:  # every asker gets what the broker raised
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: an asker that left is no error
            return
        if not future.done():
            future.set_result(page)
