"""The Server-Sent Events technique (docs/protocol.md section 4): one stream per subscription.

The stream is read with httpx and parsed with the project's :class:`SSEParser`. It always asks
for ``envelope=1``, so each ``data:`` is the whole event object (channel, id, ts included).
Two things are timed: the first bytes (the server writes its head and ``retry:`` at once, so a
stream that stays silent past ``first_byte_timeout`` is held by a buffering proxy), and then
silence (no bytes, ``: ping`` comments included, for two heartbeats and a margin means the
stream is dead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

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
from tidings.protocol.sse import (
    DISCONNECT_EVENT,
    RESET_EVENT,
    UNSUBSCRIBED_EVENT,
    SSEMessage,
    SSEParser,
    is_event_stream_content_type,
)

__all__ = ["SSEFeed", "SSETechnique"]

MAX_ERROR_BODY = 65536  # an error body is small; a proxy's page may not be
ERROR_BODY_SECONDS = 5.0


class SSETechnique:
    name = "sse"

    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint, options: ClientOptions) -> None:
        self._http = http
        self._endpoint = endpoint
        self._options = options

    async def open(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> SSEFeed | Unavailable:
        """Open a stream and wait for its first bytes, all within ``first_byte_timeout``.

        The clock starts with the request, as a browser's does: a buffering proxy holds the
        response head too, so waiting for the head alone could take ``open_timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.first_byte_timeout
        response = await self._send(channel, cursor, rewind, deadline)
        if isinstance(response, Unavailable):
            return response
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not is_event_stream_content_type(content_type):
            return await _refused(response)
        feed = SSEFeed(response, self._options.silence)
        try:
            first = await feed.read(max(0.0, deadline - loop.time()))
        except BaseException:  # cancelled while waiting: the stream is nobody's to close
            await feed.aclose()
            raise
        if first is not None:
            await feed.aclose()
            return Unavailable(f"the stream opened but sent nothing ({first.reason})")
        return feed

    def publisher(self) -> Publisher | None:
        return None

    async def _send(
        self, channel: str, cursor: str | None, rewind: int, deadline: float
    ) -> httpx.Response | Unavailable:
        params = {"channel": channel, "envelope": "1"}
        if cursor is not None:
            params["since"] = cursor
        elif rewind:
            params["rewind"] = str(rewind)
        request = self._http.build_request(
            "GET",
            self._endpoint.url + "/sse",
            params=params,
            headers={
                **self._endpoint.headers(),
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
            },
            # Reads are timed here (first bytes, then silence), not by httpx.
            timeout=httpx.Timeout(self._options.open_timeout, read=None),
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await self._http.send(request, stream=True)
        except TimeoutError:
            timeout = self._options.first_byte_timeout
            return Unavailable(f"no answer within {timeout:g}s (a buffering proxy?)")
        except httpx.HTTPError as error:
            return Unavailable(f"could not open {request.url}: {error!r}")

    async def aclose(self) -> None:
        """The feeds own their streams; the HTTP client belongs to the Client."""


async def _refused(response: httpx.Response) -> Unavailable:
    """Read a bounded error body; raise a final refusal, return one worth retrying."""
    body = bytearray()
    try:
        async with asyncio.timeout(ERROR_BODY_SECONDS):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ERROR_BODY:
                    break
    except (httpx.HTTPError, TimeoutError):
        pass
    finally:
        await response.aclose()
    answer = refusal(response.status_code, bytes(body), response.headers)
    if isinstance(answer, ServerRejected):
        raise answer
    if response.status_code == 200:
        content_type = response.headers.get("content-type", "")
        return Unavailable(f"HTTP 200 but {content_type!r}, not an event stream")
    return answer


class SSEFeed:
    """One open stream: chunks in, items out, a deadline on every read."""

    def __init__(self, response: httpx.Response, silence: float) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()
        self._silence = silence
        self._parser = SSEParser()
        self._pending: deque[Item] = deque()
        self._position = ""
        self._closed: Closed | None = None
        self._revoked = False  # tidings.disconnect without reconnect: do not come back
        self._unsubscribed = False  # tidings.unsubscribed: do not subscribe again

    async def next(self) -> Item | Closed:
        while not self._pending:
            if self._closed is not None:
                return self._closed
            await self.read(self._silence)
        return self._pending.popleft()

    async def read(self, timeout: float) -> Closed | None:
        """Read and parse the next chunk; Closed if none comes within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                chunk = await anext(self._chunks)
        except StopAsyncIteration:
            return self._end("the server ended the stream")
        except TimeoutError:
            return self._end(f"no bytes for {timeout:g}s")
        except httpx.HTTPError as error:
            return self._end(f"the stream broke: {error!r}")
        try:
            self._take(self._parser.feed(chunk))
        except Malformed as error:
            return self._end(str(error))
        return None

    def _take(self, messages: list[SSEMessage]) -> None:
        for message in messages:
            if message.event == DISCONNECT_EVENT:
                self._revoked = not _reconnect(message)  # the stream ends after it
            elif message.event == UNSUBSCRIBED_EVENT:
                self._unsubscribed = True  # one channel per stream: it ends after it
            else:
                self._pending.append(_item(message))
        # The opening block (and a reset) moves the stream's id without an event to carry
        # it: report it, so a reconnect before the first event resumes from here.
        current = self._parser.last_event_id
        if current and current != self._position:
            self._position = current
            if not messages:
                self._pending.append(Position(current))

    def _end(self, reason: str) -> Closed:
        """The stream is over; the last ``retry:`` is how long the server wants us away."""
        retry = self._parser.retry
        if self._unsubscribed:
            reason = "the server ended the subscription (unsubscribed by the server)"
        elif self._revoked:
            reason = "the server disconnected this user and refuses its token: not reconnecting"
        self._closed = Closed(
            reason,
            retry / 1000 if retry is not None else None,
            revoked=self._revoked,
            unsubscribed=self._unsubscribed,
        )
        return self._closed

    async def aclose(self) -> None:
        if self._closed is None:
            self._closed = Closed("closed by the application")
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await self._response.aclose()


def _reconnect(message: SSEMessage) -> bool:
    """A ``tidings.disconnect``'s ``reconnect`` (true unless it plainly says false)."""
    try:
        return orjson.loads(message.data).get("reconnect") is not False
    except (orjson.JSONDecodeError, AttributeError):
        return True


def _item(message: SSEMessage) -> Item:
    try:
        fields = orjson.loads(message.data)
    except orjson.JSONDecodeError:
        raise Malformed(f"an SSE data line is not JSON: {message.data[:200]!r}") from None
    return reset_from(fields) if message.event == RESET_EVENT else event_from(fields)
