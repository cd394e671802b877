"""The path table, and the one place a request meets its handler.

Both edges call :meth:`Routes.dispatch` with a parsed request and the exchange that answers
it, so every rule of the wire contract (methods, CORS preflight, errors, draining) lives once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from tidings.exceptions import MethodNotAllowed, NotFound, RequestError
from tidings.protocol.http import error_body
from tidings.server.core.api.control import apply_control, handle_disconnect, handle_unsubscribe
from tidings.server.core.api.health import handle_health, handle_ready
from tidings.server.core.api.publish import (
    MAX_BATCH,
    handle_history,
    handle_presence,
    handle_publish,
)
from tidings.server.core.exchange import Exchange
from tidings.server.core.figures import figures_of
from tidings.server.core.node import Node
from tidings.server.core.ops.admin import (
    SNAPSHOT_SECONDS,
    AdminFeed,
    handle_admin,
    handle_admin_stream,
)
from tidings.server.core.ops.metrics import handle_metrics, metrics_registry
from tidings.server.core.ops.static import StaticFiles, handle_client_script, handle_lab
from tidings.server.core.peers import PeersView
from tidings.server.core.request import Request
from tidings.server.core.response import Headers
from tidings.server.core.transports.poll import handle_poll
from tidings.server.core.transports.sse import handle_sse
from tidings.server.core.transports.websocket import handle_websocket

log = logging.getLogger("tidings.server")

Handler = Callable[[Node, Exchange, Request], None]

# A stream opened on a draining node would be asked back at once: refuse it, so that a proxy
# (nginx "proxy_next_upstream http_503") sends it to another node straight away.
STREAMS = frozenset({"/sse", "/ws"})
PUBLISH_PATH = b"/api/publish"
PLAIN_BODY_LIMIT = 65536
ALLOW_HEADERS = b"Authorization, Content-Type, Last-Event-ID, If-None-Match"


class Routes:
    """The node's endpoints, each handler built with what it uses beyond the node."""

    def __init__(self, node: Node, files: StaticFiles, peers: PeersView | None = None) -> None:
        """``peers``: the node's other workers (``server.workers``), for the node's numbers."""
        self.node = node
        self.metrics = metrics_registry(node, peers)
        figures = partial(figures_of, node) if peers is None else partial(peers.whole, node)
        self.admin_feed = AdminFeed(node, figures)
        node.on_control = partial(apply_control, node)
        if node.settings.server.admin:
            node.hub.timers.every(SNAPSHOT_SECONDS, self.admin_feed.tick)
        self.table: dict[str, tuple[str, Handler]] = {
            "/healthz": ("GET", handle_health),
            "/readyz": ("GET", partial(handle_ready, peers)),
            "/api/publish": ("POST", handle_publish),
            "/api/history": ("GET", handle_history),
            "/api/presence": ("GET", handle_presence),
            "/api/disconnect": ("POST", handle_disconnect),
            "/api/unsubscribe": ("POST", handle_unsubscribe),
            "/sse": ("GET", handle_sse),
            "/poll": ("GET", handle_poll),
            "/ws": ("GET", handle_websocket),
            "/tidings.js": ("GET", partial(handle_client_script, files)),
            "/lab": ("GET", partial(handle_lab, files)),
            "/metrics": ("GET", partial(handle_metrics, self.metrics)),
            "/admin": ("GET", partial(handle_admin, files)),
            "/admin/stream": ("GET", partial(handle_admin_stream, self.admin_feed)),
        }

    def body_limit(self, path: bytes) -> int:
        """The largest request body ``path`` takes (a batch of publishes, or a plain one)."""
        if path == PUBLISH_PATH:
            return MAX_BATCH * self.node.settings.server.max_message_bytes
        return PLAIN_BODY_LIMIT

    def dispatch(self, exchange: Exchange, request: Request) -> None:
        """Answer ``request``: by its handler, or with the error the contract gives."""
        node = self.node
        try:
            exchange.admit(request)
            route = self.table.get(request.path)
            if route is None:
                raise NotFound(f"no endpoint at {request.path[:200]}")
            method, handler = route
            if request.method == "OPTIONS":
                exchange.respond(204, b"", self._preflight(request, method))
            elif request.method != method:
                allowed = (method, "OPTIONS")
                raise MethodNotAllowed(f"{request.path} answers {method} only", allowed)
            elif node.drain is not None and request.path in STREAMS:
                node.stats.refused("draining")
                node.answer_draining(exchange)
            else:
                handler(node, exchange, request)
        except RequestError as error:
            node.refuse(exchange, error)
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            exchange.respond(500, error_body("internal", "the server failed; see its log"))

    def _preflight(self, request: Request, method: str) -> Headers:
        return [
            *self.node.cors_pairs(request),
            (b"Access-Control-Allow-Methods", method.encode()),
            (b"Access-Control-Allow-Headers", ALLOW_HEADERS),
            (b"Access-Control-Max-Age", b"600"),
        ]
