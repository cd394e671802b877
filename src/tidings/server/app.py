"""The standalone server: routes, shared node state, start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.brokers.base import Broker, broker_for
from tidings.config import Settings
from tidings.exceptions import (
    BrokerUnavailable,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    RequestError,
)
from tidings.hub.hub import Hub
from tidings.protocol.http import error_body
from tidings.protocol.query import PollRequest
from tidings.server.admin import SNAPSHOT_SECONDS, AdminFeed, handle_admin, handle_admin_stream
from tidings.server.auth import TokenVerifier
from tidings.server.drain import Connections, Drain
from tidings.server.http import HttpConnection
from tidings.server.limits import Limits, count_refusal, exposure_warning
from tidings.server.metrics import handle_metrics, metrics_registry
from tidings.server.poll import handle_poll
from tidings.server.publish import MAX_BATCH, handle_history, handle_presence, handle_publish
from tidings.server.request import Request
from tidings.server.sse import handle_sse
from tidings.server.static import handle_client_script, handle_lab
from tidings.server.websocket import handle_websocket

log = logging.getLogger("tidings.server")

Handler = Callable[["App", HttpConnection, Request], None]
EXPOSED = b"Tidings-Cursor, ETag"


@dataclass(slots=True)
class Stats:
    """Counters the node keeps about itself, read by ``/metrics`` and the admin page.

    Plain integers, so the delivery path pays an addition, not a metrics library's lock.
    """

    published: int = 0
    resets: int = 0
    slow_consumers: int = 0
    opened_by_transport: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)

    def opened(self, transport: str) -> None:
        self.opened_by_transport[transport] = self.opened_by_transport.get(transport, 0) + 1

    def refused(self, reason: str) -> None:
        """Count one refusal (``unauthorized``, ``rate_limited``, ``max_connections``...)."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


def handle_health(app: App, connection: HttpConnection, request: Request) -> None:
    connection.respond(200, b'{"status":"ok"}')


def handle_ready(app: App, connection: HttpConnection, request: Request) -> None:
    if app.draining:  # a load balancer stops routing here
        _answer_draining(app, connection)
    else:
        app.hub.spawn(_ready(app, connection))


async def _ready(app: App, connection: HttpConnection) -> None:
    try:
        await app.hub.check_broker()
    except BrokerUnavailable as error:
        app.answer_error(connection, error)
        return
    connection.respond(200, b'{"status":"ready"}')


def _answer_draining(app: App, connection: HttpConnection) -> None:
    assert app.drain is not None
    body = error_body("unavailable", "this node is restarting: connect again, to another node")
    connection.respond(503, body, [(b"Retry-After", app.drain.retry_after())])


# A stream opened on a draining node would be asked back at once: refuse it, so that a proxy
# (nginx "proxy_next_upstream http_503") sends it to another node straight away.
STREAMS = frozenset({"/sse", "/ws"})

ROUTES: dict[str, tuple[str, Handler]] = {
    "/healthz": ("GET", handle_health),
    "/readyz": ("GET", handle_ready),
    "/api/publish": ("POST", handle_publish),
    "/api/history": ("GET", handle_history),
    "/api/presence": ("GET", handle_presence),
    "/sse": ("GET", handle_sse),
    "/poll": ("GET", handle_poll),
    "/ws": ("GET", handle_websocket),
    "/tidings.js": ("GET", handle_client_script),
    "/lab": ("GET", handle_lab),
    "/metrics": ("GET", handle_metrics),
    "/admin": ("GET", handle_admin),
    "/admin/stream": ("GET", handle_admin_stream),
}


class App:
    """One node: its settings, broker, hub and open connections."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.tokens = TokenVerifier.from_settings(settings.auth)  # a bad key stops start-up
        self.broker: Broker = broker_for(settings.server.broker, settings)
        self.hub = Hub(self.broker, settings, loop)
        self.connections = Connections()
        self.drain: Drain | None = None  # set once the node drains
        self.stats = Stats()
        self.limits = Limits(settings.server, self.stats)
        # a peer whose TCP stops acknowledging is gone after the WebSocket's dead-peer window
        server = settings.server
        self.dead_peer_ms = int((server.heartbeat_seconds + server.ws_ping_timeout_seconds) * 1000)
        self.parsed_polls: dict[bytes, PollRequest] = {}
        self.metrics = metrics_registry(self)
        self.admin_feed = AdminFeed(self)
        if settings.server.admin:
            self.hub.timers.every(SNAPSHOT_SECONDS, self.admin_feed.tick)
        origins = settings.server.allowed_origins
        self.cors_varies = "*" not in origins
        self._allowed_origins = frozenset(origins)

    def body_limit(self, target: bytes) -> int:
        if target.split(b"?", 1)[0] == b"/api/publish":
            return MAX_BATCH * self.settings.server.max_message_bytes
        return 65536

    def handle(self, connection: HttpConnection, request: Request) -> None:
        try:
            if connection.proxied:
                connection.readdress(request)
            self._route(connection, request)
        except RequestError as error:
            count_refusal(self.stats, error)
            connection.respond(
                error.status, error_body(error.code, error.message), self._error_headers(error)
            )
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            connection.respond(500, error_body("internal", "the server failed; see its log"))

    def _route(self, connection: HttpConnection, request: Request) -> None:
        route = ROUTES.get(request.path)
        if route is None:
            raise NotFound(f"no endpoint at {request.path[:200]}")
        method, handler = route
        if request.method == "OPTIONS":
            connection.respond(
                204,
                b"",
                [
                    *self.cors_pairs(request),
                    (b"Access-Control-Allow-Methods", method.encode()),
                    (
                        b"Access-Control-Allow-Headers",
                        b"Authorization, Content-Type, Last-Event-ID, If-None-Match",
                    ),
                    (b"Access-Control-Max-Age", b"600"),
                ],
            )
            return
        if request.method != method:
            raise MethodNotAllowed(f"{request.path} answers {method} only", (method, "OPTIONS"))
        if self.draining and request.path in STREAMS:
            self.stats.refused("draining")
            _answer_draining(self, connection)
            return
        handler(self, connection, request)

    def _error_headers(self, error: RequestError) -> list[tuple[bytes, bytes]]:
        headers = list(self.cors_pairs(None))
        if isinstance(error, MethodNotAllowed):
            headers.append((b"Allow", ", ".join(error.allowed).encode()))
        elif isinstance(error, RateLimited):
            headers.append((b"Retry-After", str(error.retry_after).encode()))
        return headers

    def answer_error(self, connection: HttpConnection, error: BrokerUnavailable) -> None:
        self.hub.tally.broker_errors += 1
        retry = str(error.retry_after).encode()
        connection.respond(503, error_body(error.code, error.message), [(b"Retry-After", retry)])

    def check_origin(self, request: Request) -> None:
        """Browsers send Origin: refuse streams from origins not in ``allowed_origins``."""
        origin = request.header(b"origin")
        if self.cors_varies and origin is not None and origin not in self._allowed_origins:
            raise Forbidden(f"origin {origin[:200]!r} is not allowed")

    def cors_pairs(self, request: Request | None) -> list[tuple[bytes, bytes]]:
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

    def cors_headers(self, request: Request | None) -> bytes:
        return b"".join(name + b": " + value + b"\r\n" for name, value in self.cors_pairs(request))

    @property
    def draining(self) -> bool:
        return self.drain is not None

    def protocol_factory(self) -> HttpConnection:
        return HttpConnection(self)


class Server:
    """A node listening on a socket: ``start`` it, read ``port``, ``stop`` it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.app: App | None = None
        self._server: asyncio.Server | None = None
        self._drain: Drain | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.app = App(self.settings, loop)
        self.app.hub.start()
        server = self.settings.server
        self._server = await loop.create_server(
            self.app.protocol_factory, server.host, server.port, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "tidings listening on http://%s:%d (broker %s)", server.host, self.port, server.broker
        )
        warning = exposure_warning(server)
        if warning is not None:
            log.warning(warning)
        return self.port

    async def stop(self) -> None:
        """Drain: stop accepting at once, ask every client back, then close the broker.

        Returns when every connection is gone, or ``drain_seconds`` and a short grace after
        the start (what is left is dropped); ``hurry`` cuts the wait short.
        """
        if self._server is None or self.app is None:
            return
        self._server.close()  # new connections are refused: they go to another node
        self._drain = self.app.drain = Drain(self.app)
        await self._drain.run()
        await self.app.hub.close()  # the broker last: in-flight publishes have finished
        await self._server.wait_closed()
        self._server = None

    def hurry(self) -> None:
        """Stop waiting for the clients that are slow to leave (a second signal)."""
        if self._drain is not None:
            self._drain.hurry.set()


async def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then drain; a second signal ends the drain at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = Server(settings)

    def on_signal() -> None:
        if stop.is_set():
            server.hurry()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)  # before "listening" is announced
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
