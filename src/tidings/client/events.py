"""What a subscription yields, and what a technique tells the subscription behind the scenes.

The application sees two kinds of items: :class:`ClientEvent` (an event of docs/protocol.md section
1, its ``data`` decoded from JSON) and :class:`ResetEvent` (history could not cover the gap:
reload the channel's state; the subscription continues from ``id``). Techniques also report a
:class:`Position` (the stream is at this cursor: the opening ``id:`` of an SSE stream, a
WebSocket ``subscribed``, a poll's ``cursor``), and end with :class:`Closed` or fail to open
with :class:`Unavailable`: values, not exceptions, because they are the normal life of a
long-lived connection and the subscription decides what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ClientEvent",
    "Closed",
    "Item",
    "Malformed",
    "Position",
    "ResetEvent",
    "Unavailable",
    "event_from",
    "reset_from",
]


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One event as every subscriber of ``channel`` receives it; ``id`` is its cursor."""

    channel: str
    id: str
    event: str
    data: Any
    ts: int


@dataclass(frozen=True, slots=True)
class ResetEvent:
    """The events after the subscription's cursor are gone (``reason`` ``gap`` or ``epoch``).

    The application reloads its state of ``channel``; the next events follow ``id``.
    """

    channel: str
    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Position:
    """The stream stands at ``cursor`` (no event): where to resume if nothing else comes."""

    cursor: str


Item = ClientEvent | ResetEvent | Position


@dataclass(frozen=True, slots=True)
class Closed:
    """An open feed ended. ``server_delay`` is how long the server asked us to stay away;
    ``unauthorized``: the server ended it because the token expired (WebSocket ``4001``);
    ``revoked``: the server disconnected the user and refuses its token (WebSocket ``4003``,
    SSE ``tidings.disconnect`` without reconnect): do not come back; ``unsubscribed``: the
    server ended the channel (POST /api/unsubscribe): do not subscribe again."""

    reason: str
    server_delay: float | None = None
    unauthorized: bool = False
    revoked: bool = False
    unsubscribed: bool = False


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A technique could not open (or opened and delivered nothing): try the next one."""

    reason: str
    server_delay: float | None = None


class Malformed(ValueError):
    """The server sent an event or reset we cannot read; the feed that got it is dropped."""


def event_from(fields: Any) -> ClientEvent:
    """The event object of docs/protocol.md section 1 (a poll entry, an SSE envelope, a WS op)."""
    try:
        return ClientEvent(
            channel=_text(fields["channel"]),
            id=_text(fields["id"]),
            event=_text(fields.get("event", "message")),
            data=fields.get("data"),
            ts=int(fields.get("ts", 0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise Malformed(f"not an event object: {str(fields)[:200]}") from error


def reset_from(fields: Any) -> ResetEvent:
    try:
        return ResetEvent(
            channel=_text(fields["channel"]),
            id=_text(fields["id"]),
            reason=_text(fields.get("reason", "gap")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise Malformed(f"not a reset object: {str(fields)[:200]}") from error


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value
