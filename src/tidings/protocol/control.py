"""What one node tells every other through the broker: the server taking control of a user.

``POST /api/disconnect`` and ``POST /api/unsubscribe`` (docs/protocol.md section 7) reach the
user's connections on every node: the node that takes the call acts on its own connections
and sends one of these messages, which each node applies to its own. ``origin`` names the
sending node, so that a broker that also delivers to the sender does no harm.

A revocation (``disconnect`` without reconnect) is also stored by the broker, so that a
node that starts later still refuses the revoked tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Revocation:
    """Tokens of ``sub`` issued before ``before`` (or without ``iat``) are refused until
    ``until`` (both in seconds since the epoch), when every such token has expired."""

    sub: str
    before: float
    until: float

    def refuses(self, issued_at: float | None, now: float) -> bool:
        return now < self.until and (issued_at is None or issued_at < self.before)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """End every connection of ``sub``; without ``reconnect``, with its ``revocation``."""

    origin: str
    sub: str
    reconnect: bool
    revocation: Revocation | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """End ``sub``'s subscriptions to ``channel``; the client does not subscribe again."""

    origin: str
    sub: str
    channel: str


Control = Disconnect | Unsubscribe


def encode_control(message: Control) -> bytes:
    if isinstance(message, Unsubscribe):
        body: dict[str, Any] = {"op": "unsubscribe", "channel": message.channel}
    else:
        body = {"op": "disconnect", "reconnect": message.reconnect}
        if message.revocation is not None:
            body["before"] = message.revocation.before
            body["until"] = message.revocation.until
    body["origin"] = message.origin
    body["sub"] = message.sub
    return orjson.dumps(body)


def decode_control(data: bytes) -> Control:
    """A control message from another node; ValueError if it is not one."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ValueError("a control message is a JSON object")
    origin, sub, op = body.get("origin"), body.get("sub"), body.get("op")
    if not isinstance(origin, str) or not isinstance(sub, str):
        raise ValueError("a control message names its origin and sub")
    if op == "unsubscribe":
        channel = body.get("channel")
        if not isinstance(channel, str):
            raise ValueError("unsubscribe names a channel")
        return Unsubscribe(origin, sub, channel)
    if op == "disconnect":
        reconnect = body.get("reconnect")
        if not isinstance(reconnect, bool):
            raise ValueError("disconnect says whether to reconnect")
        revocation = None
        if "before" in body:
            revocation = Revocation(sub, _seconds(body.get("before")), _seconds(body.get("until")))
        return Disconnect(origin, sub, reconnect, revocation)
    raise ValueError(f"unknown control op {op!r}")


def encode_revocation(revocation: Revocation) -> bytes:
    """How a broker stores a revocation's times: ``<before> <until>``, in seconds."""
    return b"%r %r" % (revocation.before, revocation.until)


def decode_revocation(sub: str, data: bytes) -> Revocation:
    """ValueError if ``data`` is not what ``encode_revocation`` wrote."""
    before, _, until = data.partition(b" ")
    return Revocation(sub, _seconds(float(before)), _seconds(float(until)))


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("a time is a finite number of seconds")
    return float(value)
