"""WebSocket JSON messages and server text frames (docs/protocol.md section 6, RFC 6455 5.2)."""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from tidings.exceptions import RequestError
from tidings.protocol.channel import Channel
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset
from tidings.protocol.ws import (
    DEFLATE_WINDOW_BITS,
    MessageError,
    Ping,
    PresenceQuery,
    Publish,
    Subscribe,
    Unsubscribe,
    deflated_event_frame,
    encode_deflated_text_frame,
    encode_text_frame,
    error_frame,
    event_frame,
    parse_client_message,
    pong_frame,
    published_frame,
    reset_frame,
    server_frames,
    subscribed_frame,
    unsubscribed_frame,
)

CHANNEL_CHARS = string.ascii_letters + string.digits + "_-.:@/"
EVENT_CHARS = string.ascii_letters + string.digits + "_-.:"
# orjson reads integers of up to 64 bits as int; the protocol's ref is an integer.
refs = st.integers(min_value=-(2**63), max_value=2**64 - 1)
channels = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=128)
event_names = st.text(alphabet=EVENT_CHARS, min_size=1, max_size=64).filter(
    lambda name: not name.startswith("tidings.")
)
cursor_texts = st.builds(
    lambda epoch, offset: f"{epoch}.{offset}",
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=16),
    st.integers(0, 2**63 - 1),
)
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


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def refusal(payload: str | bytes) -> MessageError:
    with pytest.raises(MessageError) as caught:
        parse_client_message(payload)
    assert isinstance(caught.value.error, RequestError)
    return caught.value


def with_ref(message: dict[str, Any], ref: int | None, present: bool) -> dict[str, Any]:
    return {**message, "ref": ref} if present else message


# Every op


@settings(max_examples=100)
@given(channels, st.none() | cursor_texts, refs, st.booleans())
def test_subscribe(channel: str, since: str | None, ref: int, has_ref: bool) -> None:
    message: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        message["since"] = since
    parsed = parse_client_message(encode(with_ref(message, ref, has_ref)))
    expected_since = None
    if since is not None:
        epoch, offset = since.split(".")
        expected_since = Cursor(epoch, int(offset))
    assert parsed == Subscribe(ref if has_ref else None, Channel(channel), expected_since)


@settings(max_examples=50)
@given(channels, refs)
def test_unsubscribe(channel: str, ref: int) -> None:
    message = {"op": "unsubscribe", "channel": channel, "ref": ref}
    assert parse_client_message(encode(message)) == Unsubscribe(ref, Channel(channel))


@settings(max_examples=150)
@given(
    channels,
    json_values,
    st.none() | event_names,
    st.none() | st.text(min_size=1, max_size=128),
    st.none() | refs,
)
def test_publish(
    channel: str, data: Any, event: str | None, key: str | None, ref: int | None
) -> None:
    message: dict[str, Any] = {"op": "publish", "channel": channel, "data": data, "ref": ref}
    if event is not None:
        message["event"] = event
    if key is not None:
        message["idempotency_key"] = key
    parsed = parse_client_message(encode(message))
    assert isinstance(parsed, Publish)
    assert (parsed.ref, parsed.channel, parsed.idempotency_key) == (ref, channel, key)
    assert parsed.event == (event or "message")
    assert orjson.loads(parsed.data) == data
    assert parsed.data == orjson.dumps(data)  # compact, as max_message_bytes measures it


def test_publish_with_null_data_is_a_publish_of_null() -> None:
    parsed = parse_client_message(b'{"op":"publish","channel":"a","data":null}')
    assert isinstance(parsed, Publish)
    assert parsed.data == b"null"


@settings(max_examples=50)
@given(channels, refs)
def test_presence(channel: str, ref: int) -> None:
    message = {"op": "presence", "channel": channel, "ref": ref}
    assert parse_client_message(encode(message)) == PresenceQuery(ref, Channel(channel))


@settings(max_examples=50)
@given(refs)
def test_ping(ref: int) -> None:
    assert parse_client_message(encode({"op": "ping", "ref": ref})) == Ping(ref)


def test_text_and_bytes_payloads_parse_alike() -> None:
    text = '{"op": "subscribe", "channel": "chat:lobby", "ref": 7}'
    assert (
        parse_client_message(text)
        == parse_client_message(text.encode())
        == Subscribe(7, Channel("chat:lobby"), None)
    )


# ref


@pytest.mark.parametrize("raw", ['{"op": "ping"}', '{"op": "ping", "ref": null}'])
def test_a_missing_or_null_ref_is_none(raw: str) -> None:
    assert parse_client_message(raw) == Ping(None)


@pytest.mark.parametrize("ref", ["true", "false", '"1"', "1.0", "1.5", "[1]", '{"a": 1}', "1e3"])
def test_a_ref_that_is_not_an_integer_is_refused_under_ref_null(ref: str) -> None:
    error = refusal(f'{{"op": "ping", "ref": {ref}}}')
    assert error.ref is None
    assert error.error.code == "invalid_field"


# Refusals


@pytest.mark.parametrize("raw", ["", "{", "ping", '{"op": "ping",}', "\xff", b"\xff\xfe", "nan"])
def test_invalid_json_is_refused(raw: str | bytes) -> None:
    error = refusal(raw)
    assert (error.ref, error.error.code) == (None, "invalid_json")


@pytest.mark.parametrize("raw", ["[]", '[{"op": "ping", "ref": 1}]', "1", '"ping"', "null", "true"])
def test_a_message_that_is_not_an_object_is_refused(raw: str) -> None:
    error = refusal(raw)
    assert (error.ref, error.error.code) == (None, "invalid_json")


@pytest.mark.parametrize(
    "message",
    [
        {"ref": 3},
        {"op": "Subscribe", "ref": 3},
        {"op": 1, "ref": 3},
        {"op": None, "ref": 3},
        {"op": "pong", "ref": 3},
        {"op": "event", "ref": 3},
        {"op": ["ping"], "ref": 3},
    ],
)
def test_an_unknown_op_is_refused_under_its_ref(message: dict[str, Any]) -> None:
    error = refusal(encode(message))
    assert (error.ref, error.error.code) == (3, "unknown_op")


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe", "publish", "presence"])
@pytest.mark.parametrize("channel", [None, "", 5, ["a"], "a b", "a" * 129], ids=repr)
def test_a_missing_or_bad_channel_is_refused_under_its_ref(op: str, channel: Any) -> None:
    message: dict[str, Any] = {"op": op, "ref": 9, "data": 1}
    if channel is not None:
        message["channel"] = channel
    error = refusal(encode(message))
    assert (error.ref, error.error.code) == (9, "invalid_channel")


def test_publish_without_data_is_refused() -> None:
    error = refusal(encode({"op": "publish", "channel": "a", "ref": 4}))
    assert (error.ref, error.error.code) == (4, "invalid_field")


@pytest.mark.parametrize(
    "extra",
    [
        {"event": "tidings.reset"},
        {"event": ""},
        {"event": "a" * 65},
        {"event": 5},
        {"event": "chat@x"},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 129},
        {"idempotency_key": 5},
        {"idempotency_key": ["k"]},
    ],
    ids=repr,
)
def test_publish_with_a_bad_optional_field_is_refused(extra: dict[str, Any]) -> None:
    error = refusal(encode({"op": "publish", "channel": "a", "data": 1, "ref": 4, **extra}))
    assert (error.ref, error.error.code) == (4, "invalid_field")


@pytest.mark.parametrize(("since", "code"), [(5, "invalid_field"), (["a.1"], "invalid_field")])
def test_subscribe_with_a_since_that_is_not_a_string_is_refused(since: Any, code: str) -> None:
    error = refusal(encode({"op": "subscribe", "channel": "a", "since": since, "ref": 2}))
    assert (error.ref, error.error.code) == (2, code)


@pytest.mark.parametrize("since", ["a.01", "a", "a.1,b.2", "é.1", "a.1 "])
def test_subscribe_with_a_bad_cursor_is_refused(since: str) -> None:
    error = refusal(encode({"op": "subscribe", "channel": "a", "since": since, "ref": 2}))
    assert (error.ref, error.error.code) == (2, "invalid_cursor")


# Anything at all

keys = st.sampled_from(
    ["op", "ref", "channel", "since", "data", "event", "idempotency_key", "x", ""]
)
ops = st.sampled_from(["subscribe", "unsubscribe", "publish", "presence", "ping", "pong", ""])
field_values = st.one_of(ops, refs, channels, cursor_texts, event_names, json_values)
messages = st.dictionaries(keys, field_values, max_size=6)


def check_only_message_errors(payload: str | bytes) -> None:
    try:
        parse_client_message(payload)
    except MessageError as error:
        assert error.ref is None or (type(error.ref) is int)
        assert isinstance(error.error, RequestError)
        assert error.error.code
        assert error.error.message


@settings(max_examples=300)
@given(messages)
def test_arbitrary_messages_raise_nothing_but_message_errors(message: dict[str, Any]) -> None:
    check_only_message_errors(encode(message))


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60)))
@example(b'{"op":"publish","channel":"a","data":1e400}')
@example('{"op":"ping","ref":"\\ud800"}')
@example('"\ud800"')
@example(b'{"op":"publish","channel":"a","data":' + b"[" * 2000 + b"]" * 2000 + b"}")
@example(b'{"op":"publish","channel":"a","data":100000000000000000000000}')
@example(b'{"op":"ping","ref":100000000000000000000000}')
def test_arbitrary_bytes_and_text_raise_nothing_but_message_errors(payload: str | bytes) -> None:
    check_only_message_errors(payload)


@settings(max_examples=200)
@given(messages.map(json.dumps))
def test_arbitrary_json_text_raises_nothing_but_message_errors(payload: str) -> None:
    check_only_message_errors(payload)


# Text frames


def decode_frame(frame: bytes) -> Frame:
    """Parse one server frame with the websockets library; nothing may follow it."""
    reader = StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
    else:
        raise AssertionError("frame is incomplete")
    assert not reader.buffer, "bytes left after the frame"
    return parsed


def header_length(payload_length: int) -> int:
    if payload_length <= 125:
        return 2
    if payload_length <= 65535:
        return 4
    return 10


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 65537, 200_000])
def test_text_frame_header_at_the_length_boundaries(length: int) -> None:
    payload = bytes(ord("a") + i % 26 for i in range(length))
    frame = encode_text_frame(payload)
    assert len(frame) == header_length(length) + length
    assert frame[0] == 0x81  # FIN, opcode text
    assert frame[1] & 0x80 == 0  # a server never masks
    indicator = frame[1] & 0x7F
    if length <= 125:
        assert indicator == length
    elif length <= 65535:
        assert (indicator, int.from_bytes(frame[2:4], "big")) == (126, length)
    else:
        assert (indicator, int.from_bytes(frame[2:10], "big")) == (127, length)
    parsed = decode_frame(frame)
    assert (parsed.opcode, parsed.fin, bytes(parsed.data)) == (Opcode.TEXT, True, payload)


@settings(max_examples=50)
@given(st.text(max_size=300).map(str.encode))
def test_any_text_frame_decodes_to_its_payload(payload: bytes) -> None:
    frame = encode_text_frame(payload)
    assert len(frame) == header_length(len(payload)) + len(payload)
    parsed = decode_frame(frame)
    assert (parsed.opcode, parsed.fin, bytes(parsed.data)) == (Opcode.TEXT, True, payload)


def frame_json(frame: bytes) -> Any:
    parsed = decode_frame(frame)
    assert parsed.opcode == Opcode.TEXT
    return json.loads(bytes(parsed.data))


def make_event(data: bytes = b'{"text":"hi"}') -> Event:
    return Event("chat:lobby", "k3x9", 42, "message", data, 1763700000123)


def test_event_frame_is_the_event_with_op_first_and_is_built_once() -> None:
    event = make_event()
    frame = event_frame(event)
    decoded = frame_json(frame)
    assert list(decoded) == ["op", "channel", "id", "event", "data", "ts"]
    assert decoded == {
        "op": "event",
        "channel": "chat:lobby",
        "id": "k3x9.42",
        "event": "message",
        "data": {"text": "hi"},
        "ts": 1763700000123,
    }
    assert event_frame(event) is frame


@settings(max_examples=50)
@given(json_values)
def test_event_frame_carries_any_data(data: Any) -> None:
    assert frame_json(event_frame(make_event(orjson.dumps(data))))["data"] == data


def test_reset_frame() -> None:
    decoded = frame_json(reset_frame(Reset("news", Cursor("p0aa", 7), "gap")))
    assert decoded == {"op": "reset", "channel": "news", "id": "p0aa.7", "reason": "gap"}


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            subscribed_frame(1, "a", Cursor("k3x9", 42), True),
            {"op": "subscribed", "ref": 1, "channel": "a", "id": "k3x9.42", "recovered": True},
        ),
        (
            subscribed_frame(1, "a", Cursor("k3x9", 42), False),
            {"op": "subscribed", "ref": 1, "channel": "a", "id": "k3x9.42", "recovered": False},
        ),
        (
            subscribed_frame(None, "a", Cursor("k3x9", 0), None),
            {"op": "subscribed", "ref": None, "channel": "a", "id": "k3x9.0"},
        ),
        (unsubscribed_frame(2, "a"), {"op": "unsubscribed", "ref": 2, "channel": "a"}),
        (
            published_frame(3, "a", "k3x9.43"),
            {"op": "published", "ref": 3, "channel": "a", "id": "k3x9.43"},
        ),
        (pong_frame(5), {"op": "pong", "ref": 5}),
        (pong_frame(None), {"op": "pong", "ref": None}),
        (
            error_frame(None, "unknown_op", "unknown op 'x'"),
            {"op": "error", "ref": None, "code": "unknown_op", "message": "unknown op 'x'"},
        ),
    ],
)
def test_answer_frames_hold_exactly_the_protocol_fields(
    frame: bytes, expected: dict[str, Any]
) -> None:
    assert frame_json(frame) == expected


def test_server_frames_give_back_the_messages_the_frames_carry() -> None:
    from tidings.protocol.ws import (
        OPCODE_CLOSE,
        OPCODE_TEXT,
        encode_close_frame,
        encode_text_frame,
        server_frames,
    )

    texts = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    run = b"".join(encode_text_frame(t) for t in texts) + encode_close_frame(4001, "bye")
    frames = server_frames(run)
    assert frames[:-1] == [(OPCODE_TEXT, t) for t in texts]
    assert frames[-1] == (OPCODE_CLOSE, (4001).to_bytes(2, "big") + b"bye")


# permessage-deflate (RFC 7692): the compressed event frame, read by a client that negotiated
# the extension with a server that offers what the standalone edge offers.


def deflate_client(server_max_window_bits: int | None = None) -> ClientProtocol:
    """A ``websockets`` client protocol that negotiated permessage-deflate, sans I/O."""
    client = ClientProtocol(
        parse_uri("ws://127.0.0.1/ws"),
        extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=server_max_window_bits)],
    )
    request = client.connect()
    server = ServerProtocol(
        extensions=[
            ServerPerMessageDeflateFactory(
                server_no_context_takeover=True, server_max_window_bits=DEFLATE_WINDOW_BITS
            )
        ]
    )
    server.receive_data(request.serialize())
    [received] = server.events_received()
    assert isinstance(received, Request)
    response = server.accept(received)
    assert "permessage-deflate" in response.headers["Sec-WebSocket-Extensions"]
    client.receive_data(response.serialize())
    client.events_received()
    assert client.state is State.OPEN and client.handshake_exc is None
    return client


def client_reads(client: ClientProtocol, data: bytes) -> list[bytes]:
    client.receive_data(data)
    frames = client.events_received()
    assert client.parser_exc is None, client.parser_exc
    assert all(isinstance(frame, Frame) and frame.opcode is Opcode.TEXT for frame in frames)
    return [bytes(frame.data) for frame in frames if isinstance(frame, Frame)]


@pytest.mark.parametrize("window_bits", [None, 9, 12, 15])
def test_a_deflated_event_frame_inflates_to_the_plain_frames_message(
    window_bits: int | None,
) -> None:
    event = make_event(orjson.dumps({"text": "hello " * 200, "n": list(range(100))}))
    compressed = deflated_event_frame(event)
    assert compressed[0] == 0xC1  # FIN, RSV1 (compressed), opcode text
    assert len(compressed) < len(event_frame(event)) // 3
    client = deflate_client(window_bits)
    assert client_reads(client, compressed) == [bytes(decode_frame(event_frame(event)).data)]


def test_each_deflated_frame_stands_alone_so_any_subscriber_can_read_it_at_any_point() -> None:
    events = [make_event(orjson.dumps({"text": "same words again", "i": i})) for i in range(3)]
    late = deflate_client()
    early = deflate_client()
    assert client_reads(early, deflated_event_frame(events[0])) == [
        bytes(decode_frame(event_frame(events[0])).data)
    ]
    # a subscriber that joins at the third event reads it without having seen the others
    assert client_reads(late, deflated_event_frame(events[2])) == [
        bytes(decode_frame(event_frame(events[2])).data)
    ]
    run = deflated_event_frame(events[1]) + deflated_event_frame(events[2])
    assert client_reads(early, run) == [
        bytes(decode_frame(event_frame(event)).data) for event in events[1:]
    ]


def test_the_deflated_frame_is_built_once_and_shared() -> None:
    event = make_event()
    frame = deflated_event_frame(event)
    assert deflated_event_frame(event) is frame
    assert event.wire["ws-deflate"] is frame
    assert event_frame(event) is not frame


@settings(max_examples=50)
@given(st.text(max_size=3000).map(str.encode))
def test_any_payload_deflates_to_a_message_that_inflates_back(payload: bytes) -> None:
    frame = encode_deflated_text_frame(payload)
    assert client_reads(deflate_client(), frame) == [payload]


def test_a_compressed_frame_never_reaches_an_edge_that_sends_messages() -> None:
    with pytest.raises(ValueError, match="compressed"):
        server_frames(encode_text_frame(b"{}") + encode_deflated_text_frame(b"{}"))
