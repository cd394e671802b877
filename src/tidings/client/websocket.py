"""The WebSocket technique (docs/protocol.md section 6): one socket per client, many channels.

Every subscription of a client shares one socket: a reader task routes ``event``, ``reset``
and ``subscribed`` messages to each channel's :class:`WebSocketFeed` and answers (``ref``) to
whoever asked. A keepalive task sends ``{"op": "ping"}`` every heartbeat and aborts the socket
when no ``pong`` comes back in time, so a dead network is noticed even when nothing is
published. The socket is also how the client publishes when it is open.

Each feed holds at most ``max_pending`` items the application has not read. Past that, the
channel is unsubscribed and its feed ends after what it holds, instead of blocking the reader,
which would hold up every other channel: the subscription then resumes from the last item it
handed out, so a slow reader costs a resubscription, never an event or unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.http11 import Response

from tidings.client.answers import error_of, refusal, websocket_refusal
from tidings.client.events import (
    Closed,
    Item,
    Malformed,
    Position,
    Unavailable,
    event_from,
    reset_from,
)
from tidings.client.options import ClientOptions, Endpoint
from tidings.exceptions import ServerRejected

__all__ = ["WebSocketFeed", "WebSocketSession", "WebSocketTechnique", "closed_by"]

# docs/protocol.md section 6: the server is going away or restarting; come back after a random
# delay. 4000: too slow to keep up; come back at once and resume.
RESTART_CODES = frozenset({1001, 1012})
CLOSE_TOO_SLOW = 4000
CLOSE_TOKEN_EXPIRED = 4001  # renew the token, then come back and resume
CLOSE_DISCONNECTED = 4002  # the server ended it: come back at once and resume
CLOSE_REVOKED = 4003  # the server ended it and refuses the token: do not come back
# A refused handshake is final only when the server itself refuses who we are; anything else
# (a proxy that does not upgrade, a 400 because a proxy stripped Upgrade) moves down.
FINAL_HANDSHAKE_STATUSES = frozenset({401, 403})

Answer = dict[str, Any] | Closed


class WebSocketTechnique:
    """Opens feeds on the client's one socket, connecting it when there is none."""

    name = "websocket"

    def __init__(self, endpoint: Endpoint, options: ClientOptions) -> None:
        self._endpoint = endpoint
        self._options = options
        self._session: WebSocketSession | None = None
        self._connecting = asyncio.Lock()

    async def open(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> WebSocketFeed | Unavailable:
        session = await self._connected()
        if isinstance(session, Unavailable):
            return session
        return await session.subscribe(channel, cursor, rewind)

    def publisher(self) -> WebSocketSession | None:
        session = self._session
        return session if session is not None and session.closed is None else None

    async def _connected(self) -> WebSocketSession | Unavailable:
        async with self._connecting:
            if self._session is None or self._session.closed is not None:
                session = await WebSocketSession.connect(self._endpoint, self._options)
                if isinstance(session, Unavailable):
                    return session
                self._session = session
            return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()


def handshake_refusal(response: Response) -> Unavailable:
    """An upgrade answered without ``101``: move down, unless the server refused our token."""
    body = bytes(response.body or b"")
    headers = {name.lower(): value for name, value in response.headers.raw_items()}
    if response.status_code in FINAL_HANDSHAKE_STATUSES and error_of(body) is not None:
        refused = refusal(response.status_code, body, headers)
        if isinstance(refused, ServerRejected):
            raise refused
    return Unavailable(f"the upgrade was refused with HTTP {response.status_code}")


class WebSocketSession:
    """One open socket: the reader and keepalive tasks, the feeds, the pending requests."""

    def __init__(self, socket: ClientConnection, options: ClientOptions) -> None:
        self._socket = socket
        self._options = options
        self._refs = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Answer]] = {}
        self._feeds: dict[str, WebSocketFeed] = {}
        self._abort_reason: str | None = None
        self.closed: Closed | None = None
        self._reader = asyncio.create_task(self._read(), name="tidings-ws-reader")
        self._keepalive = asyncio.create_task(self._beat(), name="tidings-ws-keepalive")

    @classmethod
    async def connect(
        cls, endpoint: Endpoint, options: ClientOptions
    ) -> WebSocketSession | Unavailable:
        try:
            socket = await ws_connect(
                endpoint.ws_url,
                additional_headers=endpoint.headers(),
                compression=None,
                open_timeout=options.open_timeout,
                close_timeout=options.open_timeout,
                ping_interval=None,  # the protocol's own ping op, answered by the hub
            )
        except InvalidStatus as error:
            return handshake_refusal(error.response)
        except (OSError, TimeoutError, WebSocketException) as error:
            return Unavailable(f"could not connect to {endpoint.ws_url}: {error!r}")
        return cls(socket, options)

    # requests

    async def subscribe(
        self, channel: str, cursor: str | None, rewind: int = 0
    ) -> WebSocketFeed | Unavailable:
        """Follow ``channel`` after ``cursor`` (or with its last ``rewind`` events); the feed
        starts with the ``subscribed`` id."""
        feed = WebSocketFeed(self, channel, self._options.max_pending)
        self._feeds[channel] = feed  # routed from now on: events follow ``subscribed`` at once
        message: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if cursor is not None:
            message["since"] = cursor
        elif rewind:
            message["rewind"] = rewind
        try:
            answer = await self._request(message, self._options.open_timeout)
        except BaseException:
            self._unroute(feed)
            raise
        if isinstance(answer, Closed):
            self._unroute(feed)
            return Unavailable(answer.reason, answer.server_delay)
        if answer.get("op") == "error":
            self._unroute(feed)
            if answer.get("code") == "unauthorized":
                # The socket's own token is what was refused: the next one opens with a new one.
                self.abort("the server refused the connection's token")
            return _refused(answer)
        return feed

    async def publish(self, body: dict[str, Any]) -> str | ServerRejected | Unavailable:
        answer = await self._request({"op": "publish", **body}, self._options.open_timeout)
        if isinstance(answer, Closed):
            return Unavailable(answer.reason)
        if answer.get("op") == "error":
            return websocket_refusal(str(answer.get("code")), str(answer.get("message", "")))
        cursor = answer.get("id")
        if answer.get("op") != "published" or not isinstance(cursor, str):
            return Unavailable(f"unexpected answer to publish: {str(answer)[:200]}")
        return cursor

    async def _request(self, message: dict[str, Any], timeout: float) -> Answer:
        """Send ``message`` with a fresh ``ref``; its answer, or Closed if none comes in time."""
        if self.closed is not None:
            return self.closed
        ref = next(self._refs)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[ref] = answer
        try:
            await self._socket.send(orjson.dumps({**message, "ref": ref}).decode())
            async with asyncio.timeout(timeout):
                return await answer
        except ConnectionClosed:
            return self.closed or Closed("the connection closed")
        except TimeoutError:
            self.abort(f"no answer to {message['op']} within {timeout:g}s")
            return Closed(f"no answer to {message['op']} within {timeout:g}s")
        finally:
            self._answers.pop(ref, None)

    async def _beat(self) -> None:
        while self.closed is None:
            await asyncio.sleep(self._options.heartbeat)
            answer = await self._request({"op": "ping"}, self._options.pong_timeout)
            if isinstance(answer, Closed):
                return

    # reading

    async def _read(self) -> None:
        try:
            async for payload in self._socket:
                await self._route(_message(payload))
        except ConnectionClosed:
            pass
        except Malformed as error:
            self.abort(f"the server sent a message we cannot read: {error}")
        finally:
            code = self._socket.close_code
            reason = self._abort_reason or f"the connection closed (code {code})"
            self._finish(closed_by(code, reason, self._options))

    async def _route(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in ("event", "reset", "subscribed"):
            await self._deliver(message)
        elif op == "unsubscribed" and message.get("reason") == "server":
            self._ended_by_server(str(message.get("channel")))
        ref = message.get("ref")
        if op != "event" and isinstance(ref, int):
            answer = self._answers.get(ref)
            if answer is not None and not answer.done():
                answer.set_result(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        feed = self._feeds.get(str(message.get("channel")))
        if feed is None:
            return  # a channel we just left: its last frames are still on the way
        op = message["op"]
        if op == "subscribed":
            cursor = message.get("id")
            if not isinstance(cursor, str):
                raise Malformed(f"subscribed without a cursor: {str(message)[:200]}")
            item: Item = Position(cursor)
        else:
            item = event_from(message) if op == "event" else reset_from(message)
        if not feed.push(item):
            # What the inbox holds is handed out first; the feed then ends and the
            # subscription resumes after it, one inbox at a time, whatever the backlog.
            self._unroute(feed)
            feed.end(Closed("the application fell behind; resuming", 0.0))
            await self._send_quietly({"op": "unsubscribe", "channel": feed.channel})

    def _ended_by_server(self, channel: str) -> None:
        """POST /api/unsubscribe: the channel's feed ends after what it holds, for good."""
        feed = self._feeds.get(channel)
        if feed is not None:
            self._unroute(feed)
            feed.end(
                Closed(
                    "the server ended the subscription (unsubscribed by the server)",
                    unsubscribed=True,
                )
            )

    def _finish(self, closed: Closed) -> None:
        """The socket is over: every feed ends after what it holds, every request fails."""
        self.closed = closed
        self._keepalive.cancel()
        for answer in self._answers.values():
            if not answer.done():
                answer.set_result(closed)
        for feed in self._feeds.values():
            feed.end(closed)
        self._feeds.clear()

    # leaving

    def _unroute(self, feed: WebSocketFeed) -> None:
        if self._feeds.get(feed.channel) is feed:
            del self._feeds[feed.channel]

    async def forget(self, feed: WebSocketFeed) -> None:
        """The application is done with ``feed``: stop routing and unsubscribe the channel."""
        if self._feeds.get(feed.channel) is feed:
            self._unroute(feed)
            await self._send_quietly({"op": "unsubscribe", "channel": feed.channel})

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        """Send a message whose answer nobody waits for; a closed socket needs no goodbye."""
        if self.closed is None:
            with contextlib.suppress(ConnectionClosed):
                await self._socket.send(orjson.dumps(message).decode())

    def abort(self, reason: str) -> None:
        """Drop the connection at once (a dead peer does not finish a closing handshake)."""
        if self._abort_reason is None:
            self._abort_reason = reason
        self._socket.transport.abort()

    async def aclose(self) -> None:
        self._keepalive.cancel()
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            await self._socket.close()
        await asyncio.gather(self._reader, self._keepalive, return_exceptions=True)


def _message(payload: str | bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise Malformed(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise Malformed(f"not a JSON object: {str(message)[:200]}")
    return message


def closed_by(code: int | None, reason: str, options: ClientOptions) -> Closed:
    """What a close code asks of us: a random pause, an immediate return, or our backoff."""
    if code in RESTART_CODES:
        return Closed(reason, options.backoff.random() * options.restart_window)
    if code == CLOSE_TOO_SLOW:
        return Closed(reason, 0.0)
    if code == CLOSE_TOKEN_EXPIRED:
        return Closed(reason, 0.0, unauthorized=True)
    if code == CLOSE_DISCONNECTED:
        return Closed(reason, 0.0)
    if code == CLOSE_REVOKED:
        return Closed(f"{reason}: the server refuses this user's token", revoked=True)
    return Closed(reason)


def _refused(answer: dict[str, Any]) -> Unavailable:
    refused = websocket_refusal(str(answer.get("code")), str(answer.get("message", "")))
    if isinstance(refused, ServerRejected):
        raise refused
    return refused


class WebSocketFeed:
    """One channel on the shared socket: a bounded inbox filled by the session's reader."""

    def __init__(self, session: WebSocketSession, channel: str, limit: int) -> None:
        self.channel = channel
        self._session = session
        self._limit = limit
        self._items: deque[Item] = deque()
        self._closed: Closed | None = None
        self._arrived = asyncio.Event()

    def push(self, item: Item) -> bool:
        """Hold ``item`` for the application; False when the inbox is full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        self._arrived.set()
        return True

    def end(self, closed: Closed, discard: bool = False) -> None:
        """No more items will come; ``discard`` drops those not read yet (resumed later)."""
        if self._closed is None:
            self._closed = closed
        if discard:
            self._items.clear()
        self._arrived.set()

    async def next(self) -> Item | Closed:
        while not self._items:
            if self._closed is not None:
                return self._closed
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.popleft()

    async def aclose(self) -> None:
        self.end(Closed("closed by the application"), discard=True)
        await self._session.forget(self)
