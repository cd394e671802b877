"""Control messages between nodes and stored revocations (protocol/control.py), and the
pieces of the wire format they add: ``rewind`` in queries and WebSocket messages, the SSE
events and close codes of a server disconnect or unsubscribe, a poll's ``unsubscribed``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.exceptions import InvalidField
from tidings.protocol import sse, ws
from tidings.protocol.control import (
    Disconnect,
    Revocation,
    Unsubscribe,
    decode_control,
    decode_revocation,
    encode_control,
    encode_revocation,
)
from tidings.protocol.poll import poll_body
from tidings.protocol.query import parse_poll, parse_query, parse_rewind, parse_subscription

subs = st.text(min_size=1, max_size=64)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(subs, st.booleans(), times, times)
def test_a_disconnect_survives_its_encoding(sub: str, reconnect: bool, a: float, b: float) -> None:
    revocation = None if reconnect else Revocation(sub, a, b)
    message = Disconnect("node1", sub, reconnect, revocation)
    assert decode_control(encode_control(message)) == message


@given(subs, st.sampled_from(["news", "chat:lobby", "a/b@c"]))
def test_an_unsubscribe_survives_its_encoding(sub: str, channel: str) -> None:
    message = Unsubscribe("node2", sub, channel)
    assert decode_control(encode_control(message)) == message


@given(subs, times, times)
def test_a_stored_revocation_survives_its_encoding(sub: str, before: float, until: float) -> None:
    revocation = Revocation(sub, before, until)
    assert decode_revocation(sub, encode_revocation(revocation)) == revocation


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"op": "disconnect", "sub": "u"}',
        b'{"op": "disconnect", "origin": "n", "sub": "u", "reconnect": "no"}',
        b'{"op": "disconnect", "origin": "n", "sub": "u", "reconnect": false, "before": "x"}',
        b'{"op": "unsubscribe", "origin": "n", "sub": "u"}',
        b'{"op": "shout", "origin": "n", "sub": "u"}',
        b'{"op": "unsubscribe", "origin": "n", "sub": 7, "channel": "a"}',
    ],
)
def test_what_is_not_a_control_message_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_control(body)


def test_a_malformed_stored_revocation_is_a_value_error() -> None:
    for stored in (b"", b"1.5", b"x y", b"1 inf"):
        with pytest.raises(ValueError):
            decode_revocation("u", stored)


def test_a_revocation_refuses_earlier_tokens_and_those_without_iat_until_it_ends() -> None:
    revocation = Revocation("u", before=100.5, until=200.0)
    assert revocation.refuses(100, now=150)
    assert revocation.refuses(None, now=150)
    assert not revocation.refuses(101, now=150)
    assert not revocation.refuses(100, now=200)


# rewind in queries and messages


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, 0), ("", 0), ("0", 0), ("7", 7), ("100", 100), ("101", 100), ("9" * 40, 100)],
)
def test_rewind_is_a_whole_number_lowered_to_the_cap(text: str | None, expected: int) -> None:
    assert parse_rewind(text, 100) == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "x", "+1", " 1", "1e3", "٣", True, -1, 2.0, [1]])
def test_anything_else_is_an_invalid_field(value: Any) -> None:
    with pytest.raises(InvalidField):
        parse_rewind(value, 100)


def test_a_subscription_with_cursors_does_not_rewind() -> None:
    query = parse_query("channel=a&channel=b&rewind=5")
    assert parse_subscription(query, 10, None, 50).rewind == 5
    resumed = parse_query("channel=a&rewind=5&since=e1.4")
    assert parse_subscription(resumed, 10, None, 50).rewind == 0
    assert parse_subscription(parse_query("channel=a&rewind=5"), 10, "e1.4", 50).rewind == 0
    with pytest.raises(InvalidField):
        parse_subscription(parse_query("channel=a&rewind=5&rewind=6"), 10, None, 50)
    assert parse_poll(parse_query("channel=a&rewind=500"), 10, 30.0, 50).subscription.rewind == 50


def test_a_websocket_subscribe_carries_its_rewind() -> None:
    message = ws.parse_client_message(b'{"op": "subscribe", "channel": "a", "rewind": 3}')
    assert isinstance(message, ws.Subscribe) and message.rewind == 3
    absent = ws.parse_client_message(b'{"op": "subscribe", "channel": "a", "rewind": null}')
    assert isinstance(absent, ws.Subscribe) and absent.rewind == 0
    for bad in (b"-1", b"1.5", b'"3"', b"true"):
        with pytest.raises(ws.MessageError) as refused:
            ws.parse_client_message(
                b'{"op":"subscribe","channel":"a","ref":9,"rewind":' + bad + b"}"
            )
        assert (refused.value.ref, refused.value.error.code) == (9, "invalid_field")


# what the clients see


def test_the_server_unsubscribed_message_has_a_null_ref_and_a_reason() -> None:
    ((opcode, payload),) = ws.server_frames(ws.server_unsubscribed_frame("news"))
    assert opcode == ws.OPCODE_TEXT
    assert orjson.loads(payload) == {
        "op": "unsubscribed",
        "ref": None,
        "channel": "news",
        "reason": "server",
    }
    assert (ws.CLOSE_DISCONNECTED, ws.CLOSE_REVOKED) == (4002, 4003)


def test_the_sse_control_events_carry_no_id_and_parse_back() -> None:
    parser = sse.SSEParser()
    stream = sse.encode_stream_open(2000, "e.1") + sse.encode_unsubscribed("news")
    stream += sse.encode_disconnect(False)
    messages = parser.feed(stream)
    assert [(m.event, orjson.loads(m.data), m.last_event_id) for m in messages] == [
        (sse.UNSUBSCRIBED_EVENT, {"channel": "news", "reason": "server"}, "e.1"),
        (sse.DISCONNECT_EVENT, {"reconnect": False}, "e.1"),
    ]


def test_a_poll_names_the_channels_the_server_ended() -> None:
    body = orjson.loads(poll_body((), "e.1,f.2", unsubscribed=("news",)))
    assert body == {"events": [], "cursor": "e.1,f.2", "unsubscribed": ["news"]}
    assert "unsubscribed" not in orjson.loads(poll_body((), "e.1"))
