"""The event model (docs/protocol.md section 1) and its once-per-format encodings.

An event is serialised once per wire format the first time a subscriber of that format needs
it; every subscriber then gets the same ``bytes`` object (encode once, write many).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from tidings.protocol.cursor import Cursor


class Event:
    """One stored event. ``data`` is its compact JSON encoding, kept as published.

    Equal and hashed by its fields but ``wire`` (its encodings, made as needed). A plain class
    like :class:`Cursor`, not a frozen dataclass, for the same reason: every event makes one.
    Nothing changes an event once made (its fields are ``Final``).
    """

    __slots__ = ("channel", "data", "epoch", "event", "offset", "ts", "wire")

    def __init__(
        self,
        channel: str,
        epoch: str,
        offset: int,
        event: str,
        data: bytes,
        ts: int,
        wire: dict[str, bytes] | None = None,
    ) -> None:
        self.channel: Final = channel
        self.epoch: Final = epoch
        self.offset: Final = offset
        self.event: Final = event
        self.data: Final = data
        self.ts: Final = ts
        self.wire: Final[dict[str, bytes]] = {} if wire is None else wire

    def _fields(self) -> tuple[str, str, int, str, bytes, int]:
        return (self.channel, self.epoch, self.offset, self.event, self.data, self.ts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Event(channel={self.channel!r}, epoch={self.epoch!r}, offset={self.offset!r},"
            f" event={self.event!r}, data={self.data!r}, ts={self.ts!r})"
        )

    @property
    def id(self) -> str:
        return f"{self.epoch}.{self.offset}"

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.offset)

    def as_json(self) -> bytes:
        """The event object of docs/protocol.md section 1, as sent by polls and ``envelope=1``."""
        encoded = self.wire.get("json")
        if encoded is None:
            encoded = kept(
                orjson.dumps(
                    {
                        "channel": self.channel,
                        "id": self.id,
                        "event": self.event,
                        "data": orjson.Fragment(self.data),
                        "ts": self.ts,
                    }
                )
            )
            self.wire["json"] = encoded
        return encoded

    def to_dict(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.as_json())
        return decoded


class Batch:
    """Consecutive events of one channel that reached the node together.

    Every subscriber positioned just before the first event gets the same concatenated
    bytes in one write: under load, one system call carries several events. Equal by its
    channel and events; a plain class as :class:`Event` is.
    """

    __slots__ = ("answers", "channel", "events", "wire")

    def __init__(
        self,
        channel: str,
        events: tuple[Event, ...],
        wire: dict[str, bytes] | None = None,
        answers: dict[str, Any] | None = None,
    ) -> None:
        self.channel: Final = channel
        self.events: Final = events
        self.wire: Final[dict[str, bytes]] = {} if wire is None else wire
        # answers built once for the batch (the shared long-poll response), by format
        self.answers: Final[dict[str, Any]] = {} if answers is None else answers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return self.channel == other.channel and self.events == other.events

    def __hash__(self) -> int:
        return hash((self.channel, self.events))

    def __repr__(self) -> str:
        return f"Batch(channel={self.channel!r}, events={self.events!r})"

    @property
    def first(self) -> Event:
        return self.events[0]

    @property
    def last(self) -> Event:
        return self.events[-1]

    def joined(self, key: str, encode: Callable[[Event], bytes]) -> bytes:
        """``encode`` of every event, concatenated once per ``key`` (wire format)."""
        encoded = self.wire.get(key)
        if encoded is None:
            events = self.events
            encoded = encode(events[0]) if len(events) == 1 else b"".join(map(encode, events))
            self.wire[key] = encoded
        return encoded


def batches(events: list[Event]) -> list[Batch]:
    """Split one channel's events, in arrival order, into runs of consecutive offsets."""
    runs: list[list[Event]] = [[events[0]]]
    for event in events[1:]:
        previous = runs[-1][-1]
        if event.epoch == previous.epoch and event.offset == previous.offset + 1:
            runs[-1].append(event)
        else:
            runs.append([event])
    return [Batch(run[0].channel, tuple(run)) for run in runs]


@dataclass(frozen=True, slots=True)
class Reset:
    """History cannot cover a cursor: the client reloads and continues from ``cursor``."""

    channel: str
    cursor: Cursor
    reason: str  # "gap" or "epoch"

    def as_json(self) -> bytes:
        return orjson.dumps(
            {"channel": self.channel, "id": str(self.cursor), "reason": self.reason}
        )


def encode_data(value: object) -> bytes:
    """Compact JSON of a publisher's ``data``, the form that ``max_message_bytes`` limits."""
    return kept(orjson.dumps(value))


def kept(encoded: bytes) -> bytes:
    """orjson's output copied into a buffer of its own size, for bytes that outlive the
    request (an event's data and encodings, which history keeps).

    ``orjson.dumps`` hands back its whole growing buffer, never shrunk: 4 KB for a few
    bytes, about 128 KB for 10 KB (orjson 3.12+). A memory broker holding 1,000 such events
    held 127 MB of heap for 10 MB of events, most of it never written, so the RSS crept up
    as churn wrote into those pages.
    """
    return bytes(memoryview(encoded))
