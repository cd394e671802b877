"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can reach its broker)."""

from __future__ import annotations

from tidings.exceptions import BrokerUnavailable
from tidings.server.core.exchange import Exchange
from tidings.server.core.node import Node
from tidings.server.core.request import Request


def handle_health(node: Node, exchange: Exchange, request: Request) -> None:
    exchange.respond(200, b'{"status":"ok"}')


def handle_ready(node: Node, exchange: Exchange, request: Request) -> None:
    if node.draining:  # a load balancer stops routing here
        node.answer_draining(exchange)
    else:
        node.hub.spawn(_ready(node, exchange))


async def _ready(node: Node, exchange: Exchange) -> None:
    try:
        await node.hub.check_broker()
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    exchange.respond(200, b'{"status":"ready"}')
