"""The event object and poll bodies (docs/protocol.md 1 and 5): valid JSON, exact fields."""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol.cursor import Cursor, format_cursor_list
from tidings.protocol.event import Batch, Event, Reset, encode_data
from tidings.protocol.poll import poll_body

EPOCH_CHARS = string.ascii_letters + string.digits
CHANNEL_CHARS = EPOCH_CHARS + "_-.:@/"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
epochs = st.text(alphabet=EPOCH_CHARS, min_size=1, max_size=16)
channels = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=40)
cursors = st.builds(Cursor, epochs, st.integers(0, 2**63 - 1))
events = st.builds(
    lambda channel, epoch, offset, name, data, ts: Event(
        channel, epoch, offset, name, encode_data(data), ts
    ),
    channels,
    epochs,
    st.integers(1, 2**63 - 1),
    st.text(alphabet=EPOCH_CHARS + "_-.:", min_size=1, max_size=64),
    json_values,
    st.integers(0, 2**53),
)
resets = st.builds(Reset, channels, cursors, st.sampled_from(["gap", "epoch"]))

EVENT_FIELDS = ["channel", "id", "event", "data", "ts"]


def strict_json(raw: bytes) -> Any:
    """Decode with the standard library, refusing NaN and friends that orjson never writes."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def test_event_object_matches_the_protocol_example() -> None:
    event = Event("chat:lobby", "k3x9", 42, "message", b'{"text": "hi"}', 1763700000123)
    decoded = strict_json(event.as_json())
    assert list(decoded) == EVENT_FIELDS
    assert decoded == {
        "channel": "chat:lobby",
        "id": "k3x9.42",
        "event": "message",
        "data": {"text": "hi"},
        "ts": 1763700000123,
    }
    assert event.id == "k3x9.42"
    assert event.cursor == Cursor("k3x9", 42)


@settings(max_examples=100)
@given(json_values)
def test_data_is_any_json_value_null_included(data: Any) -> None:
    event = Event("news", "k3x9", 1, "message", encode_data(data), 0)
    assert strict_json(event.as_json())["data"] == data
    assert event.to_dict()["data"] == data


@settings(max_examples=100)
@given(events)
def test_every_event_encodes_to_exactly_its_fields(event: Event) -> None:
    decoded = strict_json(event.as_json())
    assert list(decoded) == EVENT_FIELDS
    assert decoded == {
        "channel": event.channel,
        "id": f"{event.epoch}.{event.offset}",
        "event": event.event,
        "data": orjson.loads(event.data),
        "ts": event.ts,
    }
    assert event.to_dict() == decoded


def test_an_event_is_encoded_once() -> None:
    event = Event("news", "k3x9", 1, "message", b"1", 0)
    assert event.as_json() is event.as_json()


def test_the_encoding_cache_does_not_change_equality() -> None:
    first = Event("news", "k3x9", 1, "message", b"1", 0)
    second = Event("news", "k3x9", 1, "message", b"1", 0)
    first.as_json()
    assert first == second


@given(events, events)
def test_events_are_equal_and_hash_alike_exactly_when_their_fields_are(
    event: Event, other: Event
) -> None:
    twin = Event(event.channel, event.epoch, event.offset, event.event, event.data, event.ts)
    assert event == twin and hash(event) == hash(twin) and len({event, twin}) == 1
    fields = lambda e: (e.channel, e.epoch, e.offset, e.event, e.data, e.ts)  # noqa: E731
    assert (event == other) == (fields(event) == fields(other))
    assert "wire" not in repr(event) and repr(event).startswith(f"Event(channel={event.channel!r}")


def test_a_batch_is_equal_by_its_channel_and_events_not_its_encodings() -> None:
    event = Event("news", "k3x9", 1, "message", b"1", 0)
    first, second = Batch("news", (event,)), Batch("news", (event,))
    first.joined("json", Event.as_json)
    assert first == second and hash(first) == hash(second)
    assert first != Batch("other", (event,)) and first != Batch("news", ())
    assert repr(first) == f"Batch(channel='news', events=({event!r},))"


def test_encode_data_is_compact() -> None:
    assert encode_data({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert encode_data(None) == b"null"


@settings(max_examples=50)
@given(resets)
def test_reset_object(reset: Reset) -> None:
    decoded = strict_json(reset.as_json())
    assert list(decoded) == ["channel", "id", "reason"]
    assert decoded == {"channel": reset.channel, "id": str(reset.cursor), "reason": reset.reason}


@settings(max_examples=100)
@given(
    st.lists(events, max_size=5),
    st.lists(cursors, min_size=1, max_size=4),
    st.lists(resets, max_size=3),
)
def test_poll_body_holds_exactly_events_cursor_and_resets(
    polled: list[Event], next_cursors: list[Cursor], reset_list: list[Reset]
) -> None:
    cursor_list = format_cursor_list(next_cursors)
    decoded = strict_json(poll_body(polled, cursor_list, reset_list))
    expected: dict[str, Any] = {
        "events": [strict_json(event.as_json()) for event in polled],
        "cursor": cursor_list,
    }
    if reset_list:
        expected["resets"] = [strict_json(reset.as_json()) for reset in reset_list]
    assert decoded == expected
    assert list(decoded) == list(expected)


def test_a_poll_with_nothing_new_has_no_resets_field() -> None:
    assert strict_json(poll_body([], "k3x9.42")) == {"events": [], "cursor": "k3x9.42"}


def test_data_and_the_event_object_kept_in_history_take_no_more_than_their_size() -> None:
    """orjson's buffers are over-allocated (about 128 KB for 10 KB) and history keeps what
    encode_data and as_json return: they must hold about their own length, no more."""
    import tracemalloc

    pad = "x" * 10_240
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = [
            Event("news", "e", n, "m", encode_data({"k": n, "pad": pad}), 0) for n in range(100)
        ]
        for event in events:
            event.as_json()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = sum(len(event.data) + len(event.as_json()) for event in events)
    assert held < 1.5 * size
