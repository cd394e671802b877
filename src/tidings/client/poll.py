"""Long and short polling (docs/protocol.md section 5): one request after another, one channel.

Both start with a short poll, answered at once: it checks that polling works from here and
fixes where the subscription starts, so nothing published after ``open`` returns is missed.
Long polling then asks the server to hold each request for ``poll_timeout`` seconds and gives
up on the request a margin later (a held request is the only heartbeat polling has). Short
polling asks again every ``poll_interval`` seconds with ``If-None-Match``, so an unchanged
channel costs a ``304`` with no body, and at once while answers come back full.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httpx
import orjson

from tidings.client.answers import refusal
from tidings.client.events import (
    Closed,
    Item,
    Malformed,
    Position,
    Unavailable,
    event_from,
    reset_from,
)
from tidings.client.ladder import Publisher
from tidings.client.options import ClientOptions, Endpoint
from tidings.exceptions import ServerRejected

__all__ = ["PollFeed", "PollTechnique"]

LIMIT = 100  # the server's default page; a full page means more is waiting
UNSUBSCRIBED = "the server ended the subscription (unsubscribed by the server)"


class PollTechnique:
    """``long_poll`` (``long=True``) or ``poll``."""

    def __init__(
        self, http: httpx.AsyncClient, endpoint: Endpoint, options: ClientOptions, *, long: bool
    ) -> None:
        self.name = "long_poll" if long else "poll"
        self.http = http
        self.endpoint = endpoint
        self.options = options
        self.hold = options.poll_timeout if long else 0.0

    async def open(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> PollFeed | Unavailable:
        feed = PollFeed(self, channel, cursor, rewind)
        closed = await feed.poll(0.0)
        if closed is not None:
            return Unavailable(closed.reason, closed.server_delay)
        return feed

    def publisher(self) -> Publisher | None:
        return None

    async def aclose(self) -> None:
        """Nothing outlives a request; the HTTP client belongs to the Client."""


class PollFeed:
    def __init__(
        self, technique: PollTechnique, channel: str, cursor: str | None, rewind: int = 0
    ) -> None:
        self._technique = technique
        self._channel = channel
        self._cursor = cursor
        self._rewind = rewind  # asked once: the first answer gives the cursor
        self._etag: str | None = None
        self._pending: deque[Item] = deque()
        self._full = False  # the last answer was a full page: ask again at once
        self._closed: Closed | None = None

    async def next(self) -> Item | Closed:
        while not self._pending:
            if self._closed is not None:
                return self._closed
            await self._wait_turn()
            await self.poll(self._technique.hold)
        return self._pending.popleft()

    async def _wait_turn(self) -> None:
        if self._technique.hold == 0 and not self._full:
            await asyncio.sleep(self._technique.options.poll_interval)

    async def poll(self, hold: float) -> Closed | None:
        """One request; its items join the pending ones. Closed if it failed."""
        try:
            response = await self._technique.http.get(
                self._technique.endpoint.url + "/poll",
                params=self._params(hold),
                headers=self._headers(hold),
                timeout=self._timeout(hold),
            )
        except httpx.HTTPError as error:
            return self._end(f"the poll failed: {error!r}", None)
        try:
            return self._read(response)
        except (orjson.JSONDecodeError, Malformed, KeyError, TypeError) as error:
            return self._end(f"the server answered a poll we cannot read: {error!r}", None)

    def _params(self, hold: float) -> dict[str, str]:
        params = {"channel": self._channel, "timeout": f"{hold:g}", "limit": str(LIMIT)}
        if self._cursor is not None:
            params["since"] = self._cursor
        elif self._rewind:
            params["rewind"] = str(self._rewind)
        return params

    def _headers(self, hold: float) -> dict[str, str]:
        headers = self._technique.endpoint.headers()
        if hold == 0 and self._etag is not None and self._cursor is not None:
            headers["If-None-Match"] = self._etag
        return headers

    def _timeout(self, hold: float) -> httpx.Timeout:
        options = self._technique.options
        read = options.long_poll_deadline if hold > 0 else options.open_timeout
        return httpx.Timeout(options.open_timeout, read=read)

    def _read(self, response: httpx.Response) -> Closed | None:
        status = response.status_code
        if status == 200:
            body = orjson.loads(response.content)
            self._take(body)
            self._moved_to(str(body["cursor"]), response)
        elif status in (204, 304):
            self._full = False
            self._moved_to(response.headers["tidings-cursor"], response)
        else:
            answer = refusal(status, response.content, response.headers)
            if isinstance(answer, ServerRejected):
                raise answer
            return self._end(answer.reason, answer.server_delay)
        return None

    def _take(self, body: dict[str, object]) -> None:
        resets = body.get("resets") or []
        events = body["events"]
        if not isinstance(resets, list) or not isinstance(events, list):
            raise Malformed(f"events and resets must be lists: {str(body)[:200]}")
        self._pending.extend(reset_from(fields) for fields in resets)
        self._pending.extend(event_from(fields) for fields in events)
        self._full = len(events) >= LIMIT
        unsubscribed = body.get("unsubscribed") or []
        if isinstance(unsubscribed, list) and self._channel in unsubscribed:
            # what this answer holds is handed out first, then the feed ends for good
            self._closed = Closed(UNSUBSCRIBED, unsubscribed=True)

    def _moved_to(self, cursor: str, response: httpx.Response) -> None:
        self._cursor = cursor
        self._etag = response.headers.get("etag")
        self._pending.append(Position(cursor))

    def _end(self, reason: str, server_delay: float | None) -> Closed:
        self._closed = Closed(reason, server_delay)
        return self._closed

    async def aclose(self) -> None:
        if self._closed is None:
            self._closed = Closed("closed by the application")
