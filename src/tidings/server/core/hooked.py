"""Requests that wait for the application's hook before their handler goes on."""

from __future__ import annotations

from collections.abc import Callable

from tidings.exceptions import RequestError, Unavailable
from tidings.server.core.exchange import Exchange
from tidings.server.core.hooks import HookCall, identity_of
from tidings.server.core.node import Node
from tidings.server.core.request import Request

Handler = Callable[[Node, Exchange, Request], None]


def ask_then(
    node: Node,
    exchange: Exchange,
    request: Request,
    call: HookCall,
    handler: Handler,
) -> None:
    """Ask the hook, then run ``handler`` again as the identity the hook allowed."""
    node.hub.spawn(_ask(node, exchange, request, call, handler))


async def _ask(
    node: Node, exchange: Exchange, request: Request, call: HookCall, handler: Handler
) -> None:
    try:
        allow = await node.hooks.ask(call)
        if exchange.closed:
            return
        request.identity = identity_of(allow, call.channels, request.identity, call.action)
        request.hooked = True
        handler(node, exchange, request)
    except RequestError as error:
        node.refuse(exchange, error)
    except Unavailable as error:
        node.answer_error(exchange, error)


def call_for(
    node: Node, request: Request, action: str, channels: tuple[str, ...], transport: str
) -> HookCall:
    return node.hooks.call_for(action, channels, transport, request.peer, request.headers)
