"""The event model (docs/protocol.md section 1) and its once-per-format encodings.

An event is serialised once per wire format the first time a subscriber of that format needs
it; every subscriber then gets the same ``bytes`` object (encode once, write many).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tidings.protocol.cursor import Cursor


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event. ``data`` is its compact JSON encoding, kept as published."""

    channel: str
    epoch: str
    offset: int
    event: str
    data: bytes
    ts: int
    wire: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

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


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events of one channel that reached the node together.

    Every subscriber positioned just before the first event gets the same concatenated
    bytes in one write: under load, one system call carries several events.
    """

    channel: str
    events: tuple[Event, ...]
    wire: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    # answers built once for the batch (the shared long-poll response), by format
    answers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
