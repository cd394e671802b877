"""One node's capabilities, built from its settings: what handlers and edges share.

The node knows nothing of routes, edges or sockets: handlers receive it with the request,
and the edges build it. Only the few things several handlers need live here; each handler
module keeps its own rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from tidings.brokers.base import Broker, broker_for
from tidings.config import Settings
from tidings.exceptions import (
    BrokerUnavailable,
    Forbidden,
    MethodNotAllowed,
    RateLimited,
    RequestError,
    Unavailable,
)
from tidings.hub.hub import Hub
from tidings.protocol.control import Control, Disconnect
from tidings.protocol.cursor import new_epoch
from tidings.protocol.http import error_body
from tidings.protocol.query import PollRequest
from tidings.server.core.access import TokenVerifier
from tidings.server.core.connections import Connections
from tidings.server.core.exchange import Exchange
from tidings.server.core.hooks import HookFunctions, Hooks
from tidings.server.core.limits import Limits, count_refusal
from tidings.server.core.request import Request
from tidings.server.core.response import Answers, Headers
from tidings.server.core.revocations import RELOAD_SECONDS
from tidings.server.core.stats import Stats

EXPOSED = b"Tidings-Cursor, ETag"
FIRST_LOAD_SECONDS = 3.0  # how long a starting node waits for the broker's revocations

log = logging.getLogger("tidings.server")


class Draining(Protocol):
    """A drain under way, as requests see it."""

    def retry_after(self) -> bytes:
        """``Retry-After`` for what is refused while draining."""

    def retry_ms(self) -> int:
        """A delay inside the drain window, for a client asked to come back."""


class Node:
    """One node: its settings, broker, hub, limits, counters and open connections."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        hook_functions: HookFunctions | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.tokens = TokenVerifier.from_settings(settings.auth)  # a bad key stops start-up
        self.hooks = Hooks(settings.hooks, hook_functions)
        self.hooks_on = False  # some namespace asks the application's hooks
        for name, namespace in settings.namespaces.items():
            if namespace.hooks and not namespace.public:
                self.hooks.require("subscribe", name)
                self.hooks_on = True
        self.broker: Broker = broker_for(settings.server.broker, settings)
        self.hub = Hub(self.broker, settings, loop)
        self.connections = Connections()
        self.drain: Draining | None = None  # set once the node drains
        self.stats = Stats()
        self.limits = Limits(settings.server, self.stats)
        self.id = new_epoch()  # names this node in control messages
        # acts on this node's connections (api/control.py); set by the routes
        self.on_control: Callable[[Control], int] | None = None
        # a peer whose TCP stops acknowledging is gone after the WebSocket's dead-peer window
        server = settings.server
        self.dead_peer_ms = int((server.heartbeat_seconds + server.ws_ping_timeout_seconds) * 1000)
        self.parsed_polls: dict[bytes, PollRequest] = {}
        self.poll_answers = Answers()  # built poll answers, shared by the polls asking alike
        origins = settings.server.allowed_origins
        self.cors_varies = "*" not in origins
        self._allowed_origins = frozenset(origins)

    async def start(self) -> None:
        """Start the hub, and where tokens are checked, read the revocations the broker
        holds before the first request, and again every ``RELOAD_SECONDS``.

        A broker that cannot answer within ``FIRST_LOAD_SECONDS`` does not stop the start:
        the node reads them at the next reload.
        """
        self.hub.start(control=self._controlled)
        if self.tokens is None:
            return
        self.hub.timers.every(RELOAD_SECONDS, self._reload_soon)
        try:
            await asyncio.wait_for(self._reload(), FIRST_LOAD_SECONDS)
        except (BrokerUnavailable, TimeoutError) as error:
            log.warning("could not read the revocations yet (retrying): %s", error or "timeout")

    def _controlled(self, message: Control) -> None:
        """A control message from any node; this node's own were applied as it sent them."""
        if message.origin != self.id and self.on_control is not None:
            self.on_control(message)

    def _reload_soon(self) -> None:
        self.hub.spawn(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        try:
            await self._reload()
        except BrokerUnavailable as error:
            self.hub.tally.broker_errors += 1
            log.warning("could not read the revocations: %s", error)

    async def _reload(self) -> None:
        """Read the broker's revocations; end the connections of any this node missed."""
        assert self.tokens is not None
        revocations = await self.broker.revocations()
        known = self.tokens.revocations
        missed = [revocation for revocation in revocations if not known.holds(revocation)]
        known.load(revocations)
        for revocation in missed:
            self._controlled(Disconnect("", revocation.sub, False, revocation))

    @property
    def draining(self) -> bool:
        return self.drain is not None

    def answer_draining(self, exchange: Exchange) -> None:
        assert self.drain is not None
        body = error_body("unavailable", "this node is restarting: connect again, to another node")
        exchange.respond(503, body, [(b"Retry-After", self.drain.retry_after())])

    async def close(self) -> None:
        """The broker last: in-flight publishes have finished."""
        await self.hooks.close()
        await self.hub.close()

    def answer_error(self, exchange: Exchange, error: Unavailable) -> None:
        """The broker or a hook could not answer: 503 with ``Retry-After``, counted."""
        if isinstance(error, BrokerUnavailable):
            self.hub.tally.broker_errors += 1
        else:
            self.stats.refused("hook_unavailable")
        retry = str(error.retry_after).encode()
        exchange.respond(503, error_body(error.code, error.message), [(b"Retry-After", retry)])

    def refuse(self, exchange: Exchange, error: RequestError) -> None:
        """Answer a refusal with its status and error body, counted by its code."""
        count_refusal(self.stats, error)
        headers = list(self.cors_pairs(None))
        if isinstance(error, MethodNotAllowed):
            headers.append((b"Allow", ", ".join(error.allowed).encode()))
        elif isinstance(error, RateLimited):
            headers.append((b"Retry-After", str(error.retry_after).encode()))
        exchange.respond(error.status, error_body(error.code, error.message), headers)

    def check_origin(self, request: Request) -> None:
        """Browsers send Origin: refuse streams from origins not in ``allowed_origins``."""
        origin = request.header(b"origin")
        if self.cors_varies and origin is not None and origin not in self._allowed_origins:
            raise Forbidden(f"origin {origin[:200]!r} is not allowed")

    def cors_pairs(self, request: Request | None) -> Headers:
        """CORS headers for browser callers; ``*`` unless origins are restricted."""
        if not self.cors_varies:
            return [
                (b"Access-Control-Allow-Origin", b"*"),
                (b"Access-Control-Expose-Headers", EXPOSED),
            ]
        origin = request.header(b"origin") if request is not None else None
        if origin is None or origin not in self._allowed_origins:
            return []
        return [
            (b"Access-Control-Allow-Origin", origin.encode("latin-1")),
            (b"Vary", b"Origin"),
            (b"Access-Control-Expose-Headers", EXPOSED),
        ]
