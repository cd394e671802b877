"""Presence entries and their changes (docs/protocol.md sections 6 and 7), as brokers carry them.

An entry is one subscription of one connection to a channel in a presence namespace. Its
``client`` id is unique across nodes (the node's id and a counter), so that a broker can
hold every node's entries of a channel side by side and remove exactly one. ``sub`` and
``info`` come from the connection's identity and are what other clients see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

ChangeOp = Literal["join", "leave"]
_OP_MARK: dict[ChangeOp, bytes] = {"join": b"+", "leave": b"-"}
_MARK_OP: dict[int, ChangeOp] = {ord("+"): "join", ord("-"): "leave"}


@dataclass(frozen=True, slots=True, eq=False)
class PresenceEntry:
    channel: str
    client: str
    sub: str | None
    info: Any

    def public(self) -> dict[str, Any]:
        """What clients see of an entry: ``{"sub": ..., "info": ...}``."""
        return {"sub": self.sub, "info": self.info}

    def as_json(self) -> bytes:
        return orjson.dumps(
            {"channel": self.channel, "client": self.client, "sub": self.sub, "info": self.info}
        )

    def same(self, other: PresenceEntry) -> bool:
        return (self.channel, self.client) == (other.channel, other.client)


def entry_from_json(body: bytes | str) -> PresenceEntry:
    """Read a stored entry back; raise ValueError if it is not one (another program's data)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(obj, dict):
        raise ValueError("a presence entry is a JSON object")
    channel, client, sub = obj.get("channel"), obj.get("client"), obj.get("sub")
    if not isinstance(channel, str) or not isinstance(client, str):
        raise ValueError("a presence entry needs a channel and a client")
    if sub is not None and not isinstance(sub, str):
        raise ValueError("a presence entry's sub is a string or null")
    return PresenceEntry(channel, client, sub, obj.get("info"))


@dataclass(frozen=True, slots=True, eq=False)
class PresenceChange:
    """A client joined or left a channel: what every node tells its WebSocket subscribers."""

    op: ChangeOp
    entry: PresenceEntry


def encode_change(op: ChangeOp, entry_json: bytes) -> bytes:
    """The fan-out message of a change: one mark byte (``+`` join, ``-`` leave), the entry."""
    return _OP_MARK[op] + entry_json


def decode_change(message: bytes) -> PresenceChange:
    """Read a fan-out message; raise ValueError if it is not a change."""
    op = _MARK_OP.get(message[0]) if message else None
    if op is None:
        raise ValueError("a presence change starts with + or -")
    return PresenceChange(op, entry_from_json(message[1:]))
