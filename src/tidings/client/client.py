"""``tidings.connect``: one client, any number of subscriptions, publishing.

::

    async with tidings.connect("http://127.0.0.1:8000") as client:
        async for item in client.subscribe("news"):
            if isinstance(item, tidings.ResetEvent):
                ...  # history lost events: reload the state of item.channel
            else:
                print(item.id, item.data)

The client owns one HTTP connection pool (SSE, polls, HTTP publishing), at most one
WebSocket (shared by every subscription that uses it) and the ladder that chose the technique.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tidings.client.backoff import Backoff
from tidings.client.ladder import AUTO, TRANSPORTS, Ladder, Publisher, Technique
from tidings.client.options import ClientOptions, Endpoint
from tidings.client.poll import PollTechnique
from tidings.client.publish import DEFAULT_URL, bearer, post_publish, publish_body
from tidings.client.sse import SSETechnique
from tidings.client.subscription import Subscription
from tidings.client.tokens import Tokens, TokenSource
from tidings.client.websocket import WebSocketTechnique
from tidings.exceptions import ClientError, ServerRejected
from tidings.protocol.channel import namespace_of

__all__ = ["Client", "connect"]

_DEFAULTS = ClientOptions()


class Client:
    """Subscriptions and publishing against one Tidings server. Use :func:`connect`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        transport: str = AUTO,
        token: TokenSource | None = None,
        api_key: str | None = None,
        ws_url: str | None = None,
        options: ClientOptions | None = None,
        techniques: Sequence[Technique] | None = None,
    ) -> None:
        self.url = _base_url(url)
        self.options = options or _DEFAULTS
        self._tokens = Tokens(token, self.options.backoff, self.options.token_retries)
        self._endpoint = Endpoint(self.url, ws_url or _ws_url(self.url), self._tokens)
        self._api_key = api_key
        # Loading the CA bundle costs ~0.1 s: skip it when the server is not behind TLS (the
        # client follows no redirects, so a plain-HTTP client never reaches an https URL).
        self._http = httpx.AsyncClient(
            timeout=self.options.open_timeout, verify=self.url.startswith("https:")
        )
        self._ladder = Ladder(techniques or self._techniques(transport))
        self._subscriptions: dict[str, Subscription] = {}
        self._http_only: set[str] = set()  # namespaces that refused publishing over the socket
        self._closed = False

    def _techniques(self, transport: str) -> list[Technique]:
        http, endpoint, options = self._http, self._endpoint, self.options
        built: dict[str, Technique] = {
            "websocket": WebSocketTechnique(endpoint, options),
            "sse": SSETechnique(http, endpoint, options),
            "long_poll": PollTechnique(http, endpoint, options, long=True),
            "poll": PollTechnique(http, endpoint, options, long=False),
        }
        if transport == AUTO:
            return [built[name] for name in TRANSPORTS]
        if transport not in built:
            raise ClientError(
                f"transport {transport!r} is not known: use {AUTO!r} or one of {TRANSPORTS}"
            )
        return [built[transport]]

    @property
    def transport(self) -> str | None:
        """The technique the ladder settled on (None until one has opened)."""
        chosen = self._ladder.chosen
        return chosen.name if chosen is not None else None

    def subscribe(self, channel: str, since: str | None = None, *, rewind: int = 0) -> Subscription:
        """Follow ``channel`` from ``since`` (a cursor the server gave) or from now.

        Without ``since``, ``rewind=N`` starts with the channel's last N events history
        holds (at most the server's ``server.max_rewind``), then goes on live.

        One subscription per channel per client; subscriptions to different channels run
        side by side (over one WebSocket when that is the technique).
        """
        if self._closed:
            raise ClientError("the client is closed")
        if channel in self._subscriptions:
            raise ClientError(f"already subscribed to {channel!r} on this client")
        if isinstance(rewind, bool) or not isinstance(rewind, int) or rewind < 0:
            raise ClientError(f"rewind must be a whole number, 0 or more, not {rewind!r}")
        subscription = Subscription(
            channel, since, self._ladder, self.options, self._forget, self._tokens, rewind
        )
        self._subscriptions[channel] = subscription
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.channel) is subscription:
            del self._subscriptions[subscription.channel]

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Publish one event; its cursor once the server stored it.

        Over the WebSocket when the client has one open and the channel's namespace allows
        clients to publish; otherwise (or if the socket fails on the way) ``POST
        /api/publish`` with the API key (or the token). A publish over the socket always
        carries an idempotency key, made up when none is given, so the HTTP retry of one the
        socket lost is stored at most once.
        """
        if self._closed:
            raise ClientError("the client is closed")
        publisher = self._publisher(channel)
        if publisher is not None:
            idempotency_key = idempotency_key or f"tidings-py-{uuid.uuid4().hex}"
        body = publish_body(channel, data, event, idempotency_key)
        if publisher is None:
            return await self._post(body)
        answer = await publisher.publish(body)
        if isinstance(answer, str):
            return answer
        if isinstance(answer, ServerRejected) and answer.code != "forbidden":
            raise answer
        cursor = await self._post(body)
        if isinstance(answer, ServerRejected):
            # HTTP may publish where the socket may not (an API key, a namespace closed to
            # clients): remember it. A refusal of both (a token's publish claim) teaches
            # nothing about the namespace, whose other channels stay on the socket.
            self._http_only.add(namespace_of(channel))
        return cursor

    async def _post(self, body: dict[str, Any]) -> str:
        """``POST /api/publish`` with the API key, else the token (renewed once on a 401)."""
        if self._api_key is not None:
            return await post_publish(self._http, self.url, body, bearer(self._api_key))
        generation = await self._tokens.ready()
        try:
            cursor = await post_publish(self._http, self.url, body, self._tokens.headers())
        except ServerRejected as refusal:
            if refusal.status != 401:
                raise
            await self._tokens.renew(refusal, generation)
            cursor = await post_publish(self._http, self.url, body, self._tokens.headers())
        self._tokens.accepted()
        return cursor

    def _publisher(self, channel: str) -> Publisher | None:
        chosen = self._ladder.chosen
        if chosen is None or namespace_of(channel) in self._http_only:
            return None
        return chosen.publisher()

    async def aclose(self) -> None:
        """End every subscription, close the WebSocket and the HTTP connections."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions.values()):
            await subscription.aclose()
        await self._ladder.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def connect(
    url: str = DEFAULT_URL,
    *,
    transport: str = AUTO,
    token: TokenSource | None = None,
    api_key: str | None = None,
    ws_url: str | None = None,
    heartbeat: float = _DEFAULTS.heartbeat,
    heartbeat_margin: float = _DEFAULTS.heartbeat_margin,
    first_byte_timeout: float = _DEFAULTS.first_byte_timeout,
    open_timeout: float = _DEFAULTS.open_timeout,
    poll_timeout: float = _DEFAULTS.poll_timeout,
    poll_interval: float = _DEFAULTS.poll_interval,
    restart_window: float = _DEFAULTS.restart_window,
    max_pending: int = _DEFAULTS.max_pending,
    max_retries: int | None = _DEFAULTS.max_retries,
    token_retries: int = _DEFAULTS.token_retries,
    backoff: Backoff | None = None,
    techniques: Sequence[Technique] | None = None,
) -> Client:
    """A client for the server at ``url``; use it as ``async with connect(...) as client``.

    ``transport`` is ``"auto"`` (WebSocket, then SSE, long polling, short polling: the first
    that works from here, remembered for the life of the client) or one of them by name.
    ``token`` is the connection token (JWT) presented when subscribing and publishing, as
    ``Authorization: Bearer``: a string, or a callable (sync or async) returning a fresh one,
    asked at the first connection and again when the server refuses the token (``401``,
    WebSocket close ``4001``); the subscriptions then resume from their cursors. A callable
    that raises ends the subscriptions with ``ClientError``: retry inside it if your token
    service can fail for a moment. ``api_key``, when given, is used instead of the token to
    publish over HTTP. ``ws_url`` overrides where the WebSocket is (derived from ``url``
    by default). The timings and limits are those of :class:`ClientOptions`; ``backoff``
    shapes the pause between reconnects. ``techniques`` replaces the ladder altogether
    (custom transports, tests).
    """
    options = ClientOptions(
        heartbeat=heartbeat,
        heartbeat_margin=heartbeat_margin,
        first_byte_timeout=first_byte_timeout,
        open_timeout=open_timeout,
        poll_timeout=poll_timeout,
        poll_interval=poll_interval,
        restart_window=restart_window,
        max_pending=max_pending,
        max_retries=max_retries,
        token_retries=token_retries,
        backoff=backoff or Backoff(),
    )
    return Client(
        url,
        transport=transport,
        token=token,
        api_key=api_key,
        ws_url=ws_url,
        options=options,
        techniques=techniques,
    )


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"the server URL must be http(s)://host[:port], not {url!r}")
    return url.rstrip("/")


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))
