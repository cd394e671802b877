"""``POST /api/disconnect`` and ``POST /api/unsubscribe``: the server in control of its users
(docs/protocol.md section 7).

The node that takes the call acts on its own connections at once, stores a revocation
where there is one, and sends the message through the broker to every other node, which
acts on its own (``apply_control``). The answer counts the connections reached on this
node only: the others' are not waited for. Both are idempotent; a ``sub`` nobody is
connected as reaches nothing, which is not an error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from tidings.exceptions import BrokerUnavailable, InvalidField, InvalidJSON
from tidings.protocol import control
from tidings.protocol.channel import parse_channel
from tidings.protocol.identity import Identity
from tidings.server.core.access import authorize_api
from tidings.server.core.exchange import Exchange
from tidings.server.core.request import Request
from tidings.server.core.transports.poll import LongPoll
from tidings.server.core.transports.stream import StreamConnection

if TYPE_CHECKING:
    from tidings.server.core.node import Node

MAX_SUB_LENGTH = 1024


def handle_disconnect(node: Node, exchange: Exchange, request: Request) -> None:
    """``{"sub": ..., "reconnect": true | false}`` (``reconnect`` defaults to true)."""
    authorize_api(node.settings.server.api_keys, request)
    body = _body(request)
    reconnect = body.get("reconnect", True)
    if not isinstance(reconnect, bool):
        raise InvalidField("reconnect must be true or false")
    sub = _sub(body)
    revocation = None
    if not reconnect:
        now = time.time()
        revocation = control.Revocation(sub, now, now + node.settings.auth.max_token_seconds)
    message = control.Disconnect(node.id, sub, reconnect, revocation)
    reached = apply_control(node, message)
    node.hub.spawn(_tell_others(node, exchange, message, reached))


def handle_unsubscribe(node: Node, exchange: Exchange, request: Request) -> None:
    """``{"sub": ..., "channel": ...}``."""
    authorize_api(node.settings.server.api_keys, request)
    body = _body(request)
    sub = _sub(body)
    message = control.Unsubscribe(node.id, sub, parse_channel(body.get("channel")))
    reached = apply_control(node, message)
    node.hub.spawn(_tell_others(node, exchange, message, reached))


def _body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("the request body must be a JSON object")
    return body


def _sub(body: dict[str, Any]) -> str:
    sub = body.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH:
        raise InvalidField(f"sub must be a string of 1 to {MAX_SUB_LENGTH} characters")
    return sub


async def _tell_others(
    node: Node, exchange: Exchange, message: control.Control, reached: int
) -> None:
    """Store the revocation, then send the message; a 503 when the broker failed (the call
    is idempotent: the same request may be sent again)."""
    try:
        if isinstance(message, control.Disconnect) and message.revocation is not None:
            await node.broker.revoke(message.revocation)
        await node.broker.broadcast_control(message)
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    exchange.respond(200, orjson.dumps({"sub": message.sub, "connections": reached}))


def apply_control(node: Node, message: control.Control) -> int:
    """Act on this node's connections of ``message.sub``; how many were reached."""
    if isinstance(message, control.Unsubscribe):
        return _unsubscribe(node, message.sub, message.channel)
    if message.revocation is not None and node.tokens is not None:
        node.tokens.revocations.add(message.revocation)
        node.tokens.forget(message.sub)
    return _disconnect(node, message)


def _disconnect(node: Node, message: control.Disconnect) -> int:
    """End the connections of ``message.sub``; with a revocation, those whose token it
    refuses (a token issued after it, say on a node that hears of it late, stays)."""
    revocation, now = message.revocation, time.time()

    def reached_by(identity: Identity) -> bool:
        if identity.sub != message.sub:
            return False
        return revocation is None or revocation.refuses(identity.issued_at, now)

    reached = 0
    for connection in list(node.connections):
        if isinstance(connection, StreamConnection) and reached_by(connection.identity):
            connection.disconnect(message.reconnect)
            reached += 1
    for waiter in node.hub.waiting():
        if isinstance(waiter, LongPoll) and not waiter.done and reached_by(waiter.identity):
            waiter.expire()  # 204 with its cursor at once; a revoked token's next poll is 401
            reached += 1
    return reached


def _unsubscribe(node: Node, sub: str, channel: str) -> int:
    reached = 0
    for connection in list(node.connections):
        if (
            isinstance(connection, StreamConnection)
            and connection.identity.sub == sub
            and connection.end_subscription(channel)
        ):
            reached += 1
    for waiter in node.hub.waiting(channel):
        if isinstance(waiter, LongPoll) and not waiter.done and waiter.identity.sub == sub:
            waiter.end_subscription(channel)
            reached += 1
    return reached
