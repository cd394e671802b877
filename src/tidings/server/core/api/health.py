"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can reach its broker).

A node of several workers (``server.workers``) is ready when the worker that takes the request
makes its broker round trip now, and every other running worker was ready when it last
reported (at most about a second and a half ago): not draining, its last broker check passed,
and still reporting. A worker that died and is being started again is not waited for: the
others serve its share meanwhile.
"""

from __future__ import annotations

from tidings.exceptions import BrokerUnavailable
from tidings.protocol.http import error_body
from tidings.server.core.exchange import Exchange
from tidings.server.core.node import Node
from tidings.server.core.peers import PeersView
from tidings.server.core.request import Request

RETRY_AFTER = b"1"


def handle_health(node: Node, exchange: Exchange, request: Request) -> None:
    exchange.respond(200, b'{"status":"ok"}')


def handle_ready(peers: PeersView | None, node: Node, exchange: Exchange, request: Request) -> None:
    if node.draining:  # a load balancer stops routing here
        node.answer_draining(exchange)
    else:
        node.hub.spawn(_ready(node, peers, exchange))


async def _ready(node: Node, peers: PeersView | None, exchange: Exchange) -> None:
    try:
        await node.hub.check_broker()
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    not_ready = peers.latest.not_ready if peers is not None else None
    if not_ready is not None:
        body = error_body("unavailable", f"this node is not ready: {not_ready}")
        exchange.respond(503, body, [(b"Retry-After", RETRY_AFTER)])
        return
    exchange.respond(200, b'{"status":"ready"}')
