"""One channel followed for as long as the application iterates: reconnect, resume, dedupe.

A subscription is pulled, not pushed: it connects at the first ``__anext__`` (or ``open``),
reads one item at a time from its feed, and reconnects from inside ``__anext__`` when the
feed ends. Nothing is read that the application has not asked for, so a slow reader slows
only its own stream and the server's slow-consumer policy does the rest; the cursor moves only
when an item is handed out, so whatever was in flight when a connection died comes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from tidings.client.events import ClientEvent, Closed, Item, Position, ResetEvent, Unavailable
from tidings.client.ladder import Feed, Ladder
from tidings.client.options import ClientOptions
from tidings.client.tokens import Tokens
from tidings.exceptions import ClientError, InvalidCursor, ServerRejected
from tidings.protocol.cursor import Cursor, parse_cursor

__all__ = ["Subscription"]

T = TypeVar("T")


def _parsed(text: str | None) -> Cursor | None:
    if text is None:
        return None
    try:
        return parse_cursor(text)
    except InvalidCursor:
        return None  # not ours to judge: the server refuses it if it must


def _already_seen(cursor: str, reached: str | None) -> bool:
    """Whether ``cursor`` is at or before ``reached`` in the same epoch (a duplicate)."""
    return _compare(cursor, reached) in (-1, 0)


def _behind(cursor: str, reached: str | None) -> bool:
    return _compare(cursor, reached) == -1


def _compare(cursor: str, reached: str | None) -> int | None:
    """-1, 0 or 1 as ``cursor`` is before, at or after ``reached``; None across epochs.

    Offsets are compared only within one epoch, as docs/protocol.md section 1 allows clients to
    read them; across epochs only the server knows, and says so with a reset.
    """
    new, old = _parsed(cursor), _parsed(reached)
    if new is None or old is None or new.epoch != old.epoch:
        return None
    return (new.offset > old.offset) - (new.offset < old.offset)


class Subscription:
    """``async for item in client.subscribe("news")``: events and resets of one channel.

    Items are :class:`ClientEvent` and, when history could not cover a gap,
    :class:`ResetEvent`: reload the channel's state from your source of truth, then keep
    iterating; the events that follow continue from the reset's ``id``. Every reconnect, on
    any technique, resumes after :attr:`cursor`; an event seen twice is not handed out twice.

    A ``4xx`` refusal (a bad channel, a bad cursor, a forbidden channel) raises
    ``ServerRejected`` and ends the subscription; every other failure is retried with backoff.
    The server may end it too (docs/protocol.md section 7): ``POST /api/unsubscribe`` ends
    the iteration (``last_failure`` says why), and a disconnect that refuses the user's token
    raises ``ServerRejected`` (401) instead of reconnecting; a plain disconnect resumes.
    A refused token (``401``, WebSocket close ``4001``) is renewed when the client has a token
    callable, and the subscription resumes from its cursor; see :mod:`tidings.client.tokens`.
    ``await open()`` connects before the first iteration (publish after it and the event is
    delivered); ``aclose()`` (or leaving ``async with``) ends the iteration, also one running
    in another task. Iterate from one task at a time.

    ``cursor`` is the position reached (persist it to resume in another process with
    ``subscribe(channel, since=cursor)``); ``transport`` names the technique in use,
    ``connections`` counts the connections made (``reconnects`` all but the first) and
    ``last_failure`` says why the last one ended or could not open.
    """

    def __init__(
        self,
        channel: str,
        since: str | None,
        ladder: Ladder,
        options: ClientOptions,
        forget: Callable[[Subscription], None],
        tokens: Tokens,
        rewind: int = 0,
    ) -> None:
        self.channel = channel
        self.cursor = since
        self._rewind = rewind  # asked only while there is no cursor: the first connection
        self.transport: str | None = None  # the technique of the current connection
        self.connections = 0  # how many times it connected (reconnects are the rest)
        self.last_failure: str | None = None
        self._ladder = ladder
        self._options = options
        self._forget = forget
        self._tokens = tokens
        self._generation = 0  # of the token the current feed opened with
        self._feed: Feed | None = None
        self._failures = 0
        self._pause: float | None = None
        self._done = False
        self._turn = asyncio.Lock()
        self._reader: asyncio.Task[object] | None = None
        self._interrupted = False

    # the application's side

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ClientEvent | ResetEvent:
        return await self._guarded(self._next)

    async def open(self) -> None:
        """Connect now; once it returns, whatever is published to the channel is delivered.

        It returns when the starting point is fixed (the WebSocket's ``subscribed``, the SSE
        stream's opening ``id:``, the first poll's cursor). Without it, the subscription
        connects at the first iteration, and "from now" means from then.
        """
        try:
            await self._guarded(self._feed_or_open)
        except StopAsyncIteration:
            raise ClientError(f"the subscription to {self.channel!r} is closed") from None

    async def aclose(self) -> None:
        """End the subscription and its connection; an iteration in progress stops."""
        if self._done and self._feed is None:
            return
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            self._interrupted = True
            reader.cancel()
        await self._end()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    # one step at a time

    async def _guarded(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` as the one reader; turn a final failure or ``aclose`` into the end."""
        async with self._turn:
            if self._done:
                raise StopAsyncIteration
            task = self._reader = asyncio.current_task()
            try:
                return await step()
            except asyncio.CancelledError:
                # aclose() from another task cancels us: end the iteration, unless someone
                # else cancelled the task too (then their cancellation goes on).
                if self._interrupted and task is not None and task.uncancel() == 0:
                    raise StopAsyncIteration from None
                raise
            except ClientError:  # ServerRejected included: final, the subscription ends
                await self._end()
                raise
            finally:
                self._reader = None

    async def _next(self) -> ClientEvent | ResetEvent:
        while True:
            feed = await self._feed_or_open()
            try:
                item = await feed.next()
            except ServerRejected as refused:  # a poll refused: the token may have expired
                await self._drop_feed()
                await self._renew(refused, self._generation)
                continue
            if isinstance(item, Closed):
                await self._drop_feed()
                if item.unsubscribed:  # the server ended it: iteration ends, not resumed
                    self.last_failure = item.reason
                    await self._end()
                    raise StopAsyncIteration
                if item.revoked:  # final: the token is refused, a reconnect would loop
                    self.last_failure = item.reason
                    raise ServerRejected(401, "unauthorized", item.reason)
                if item.unauthorized:
                    expired = ServerRejected(401, "unauthorized", item.reason)
                    await self._renew(expired, self._generation)
                else:
                    self._failed(item)
                continue
            accepted = self._accept(item)
            if accepted is not None:
                return accepted

    async def _feed_or_open(self) -> Feed:
        while self._feed is None:
            if self._pause is not None:
                await asyncio.sleep(self._pause)  # the backoff between attempts
                self._pause = None
            generation = await self._tokens.ready()
            rewind = self._rewind if self.cursor is None else 0
            try:
                opened = await self._ladder.open(self.channel, self.cursor, rewind)
            except ServerRejected as refusal:
                await self._renew(refusal, generation)
                continue
            if isinstance(opened, Unavailable):
                self._failed(opened)
                continue
            technique, self._feed = opened
            self._tokens.accepted()
            self._generation = generation
            self.transport = technique.name
            self.connections += 1
            self._failures = 0
        return self._feed

    async def _renew(self, refusal: ServerRejected, generation: int) -> None:
        """A refused token is renewed (or the refusal raised); any other refusal is final."""
        if refusal.status != 401:
            raise refusal
        self.last_failure = str(refusal)
        await self._tokens.renew(refusal, generation)

    def _failed(self, why: Closed | Unavailable) -> None:
        """Count a failure in a row and set the pause before the next attempt."""
        self._failures += 1
        self.last_failure = why.reason
        limit = self._options.max_retries
        if limit is not None and self._failures > limit:
            raise ClientError(
                f"gave up on channel {self.channel!r} after {self._failures} failures in a"
                f" row; the last: {why.reason}"
            )
        self._pause = self._options.backoff.delay(self._failures - 1, why.server_delay)

    def _accept(self, item: Item) -> ClientEvent | ResetEvent | None:
        """Move the cursor; the item to hand out, or None (a position, a duplicate)."""
        if isinstance(item, Position):
            if not _behind(item.cursor, self.cursor):
                self.cursor = item.cursor
            return None
        if item.channel != self.channel:
            return None
        if isinstance(item, ResetEvent):
            self.cursor = item.id
            return item
        if _already_seen(item.id, self.cursor):
            return None
        self.cursor = item.id
        return item

    async def _drop_feed(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.aclose()

    async def _end(self) -> None:
        self._done = True
        await self._drop_feed()
        self._forget(self)
