"""Query strings of ``/sse`` and ``/poll`` (docs/protocol.md sections 4 and 5).

Everything a subscription request can get wrong is found here, before any stream starts.
"""

from __future__ import annotations

import math
from typing import Final
from urllib.parse import parse_qsl

from tidings.exceptions import InvalidChannel, InvalidField, TooManyChannels
from tidings.protocol.channel import Channel, parse_channel
from tidings.protocol.cursor import Cursor, format_cursor_list, parse_cursor_list
from tidings.protocol.poll import etag

MAX_QUERY_PAIRS = 256
DEFAULT_POLL_LIMIT = 100
MAX_POLL_LIMIT = 1000


# Query, Subscription and PollRequest are plain classes, not frozen dataclasses: compiled, a
# frozen dataclass is built by the ``__init__`` that ``dataclasses`` writes at import, which
# runs interpreted (about 12,000 instructions for the three, at each poll of a query not seen
# before). Each is made by parsing and only read after; they compare by identity.


class Query:
    """A parsed query string: every value of every name, in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self.pairs: Final = pairs

    def __repr__(self) -> str:
        return f"Query(pairs={self.pairs!r})"

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        if len(values) > 1:
            raise InvalidField(f"{name} is given {len(values)} times: give it once")
        return values[0] if values else None


def parse_query(raw: str) -> Query:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=MAX_QUERY_PAIRS)
    except ValueError:
        raise InvalidField(f"query has more than {MAX_QUERY_PAIRS} fields") from None
    return Query(tuple(pairs))


class Subscription:
    """Channels and, when the client resumes, one cursor per channel in the same order.

    ``rewind`` (already lowered to ``server.max_rewind``) is how many past events a
    subscription without cursors starts with; with cursors it is 0.
    """

    __slots__ = ("channels", "rewind", "since")

    def __init__(
        self, channels: tuple[Channel, ...], since: tuple[Cursor, ...] | None, rewind: int = 0
    ) -> None:
        self.channels: Final = channels
        self.since: Final = since
        self.rewind: Final = rewind

    def __repr__(self) -> str:
        return (
            f"Subscription(channels={self.channels!r}, since={self.since!r},"
            f" rewind={self.rewind!r})"
        )


def parse_subscription(
    query: Query, max_channels: int, resume_from: str | None, max_rewind: int = 0
) -> Subscription:
    """``channel=a&channel=b&since=...``; ``resume_from`` (Last-Event-ID) wins over ``since``."""
    names = query.all("channel")
    if not names:
        raise InvalidChannel("give at least one channel: ?channel=<name>")
    if len(names) > max_channels:
        raise TooManyChannels(f"{len(names)} channels requested; at most {max_channels} allowed")
    channels = tuple(parse_channel(name) for name in names)
    if len(set(channels)) != len(channels):
        raise InvalidChannel("a channel is named twice in one request")
    rewind = parse_rewind(query.one("rewind"), max_rewind)  # checked even where ignored
    cursor_text = resume_from if resume_from else query.one("since")
    if not cursor_text:
        return Subscription(channels, None, rewind)
    return Subscription(channels, tuple(parse_cursor_list(cursor_text, len(channels))))


MAX_REWIND_DIGITS = 9


def parse_rewind(value: object, max_rewind: int) -> int:
    """``rewind``: a whole number of events, 0 or more, lowered to ``max_rewind``.

    Takes the query's text or a WebSocket message's JSON value; absent (``None``) or empty
    text is 0.
    """
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        count = int(value) if len(value) <= MAX_REWIND_DIGITS else max_rewind
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        count = value
    else:
        raise InvalidField("rewind must be a whole number of events, 0 or more")
    return min(count, max_rewind)


class PollRequest:
    """A parsed ``/poll`` query. ``since_text`` is ``since`` written as the server writes a
    cursor list (``Tidings-Cursor``) and ``since_etag`` its ETag: a poll that is caught up
    answers with them, made once per distinct query."""

    __slots__ = ("limit", "since_etag", "since_text", "subscription", "timeout", "token")

    def __init__(
        self,
        subscription: Subscription,
        timeout: float,
        limit: int,
        token: str | None = None,
        since_text: str | None = None,
        since_etag: bytes | None = None,
    ) -> None:
        self.subscription: Final = subscription
        self.timeout: Final = timeout
        self.limit: Final = limit
        self.token: Final = token
        self.since_text: Final = since_text
        self.since_etag: Final = since_etag

    def __repr__(self) -> str:
        return (
            f"PollRequest(subscription={self.subscription!r}, timeout={self.timeout!r},"
            f" limit={self.limit!r}, token={self.token!r})"
        )


def parse_poll(
    query: Query, max_channels: int, max_poll_seconds: float, max_rewind: int = 0
) -> PollRequest:
    subscription = parse_subscription(query, max_channels, None, max_rewind)
    since_text = None if subscription.since is None else format_cursor_list(subscription.since)
    return PollRequest(
        subscription,
        _parse_timeout(query.one("timeout"), max_poll_seconds),
        _parse_limit(query.one("limit")),
        query.one("token") or None,
        since_text,
        None if since_text is None else etag(since_text),
    )


def _parse_timeout(text: str | None, max_poll_seconds: float) -> float:
    if text is None or text == "":
        return 0.0
    try:
        timeout = float(text)
    except ValueError:
        raise InvalidField(f"timeout {text[:32]!r} is not a number of seconds") from None
    spelled_out = text.strip().lstrip("+-").lower() in ("inf", "infinity", "nan")
    if spelled_out or math.isnan(timeout) or timeout < 0:
        raise InvalidField("timeout must be a number of seconds, 0 or more")
    return min(timeout, max_poll_seconds)  # a decimal too large for a float is lowered too


def _parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_POLL_LIMIT
    if (
        not (text.isascii() and text.isdigit() and len(text) <= 4)
        or not 1 <= int(text) <= MAX_POLL_LIMIT
    ):
        raise InvalidField(f"limit must be a whole number from 1 to {MAX_POLL_LIMIT}")
    return int(text)


def parse_flag(query: Query, name: str) -> bool:
    value = query.one(name)
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise InvalidField(f"{name} must be 1 or 0")
