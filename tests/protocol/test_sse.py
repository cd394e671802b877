"""SSE framing: exact bytes out, WHATWG-conformant parsing in, under any chunking.

Three sources of truth: the conformance vectors in ``data/sse_vectors.json`` (taken from
web-platform-tests and two client libraries, each vector naming its source and licence), a
literal transcription of the WHATWG algorithm used as a differential oracle, and round trips
of everything the server encodes.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol.sse import (
    RESET_EVENT,
    SSEMessage,
    SSEParser,
    encode_comment,
    encode_event_body,
    encode_id_line,
    encode_reset,
    encode_retry,
    encode_stream_open,
    is_event_stream_content_type,
)

VECTORS_PATH = Path(__file__).resolve().parent / "data" / "sse_vectors.json"
VECTORS_FORMAT = "sse-parsing-vectors/1"
# Inputs are text, sent as UTF-8. A key outside this set (raw bytes, say) must be handled
# here before it is trusted, so test_vectors_are_in_the_known_format fails on it.
VECTOR_KEYS = {"id", "source", "description", "input", "expect", "known_deviations", "content_type"}
EXPECT_KEYS = {"events", "lastEventId", "retry", "comments", "fail"}
# Taken from other projects, each vector keeps its source and that project's licence.
LICENCE = re.compile(r"\((BSD-3-Clause|Apache-2\.0|MIT)\)")

VECTOR_DOCUMENT: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS = [pytest.param(vector, id=vector["id"]) for vector in VECTOR_DOCUMENT["vectors"]]


# --- Helpers --------------------------------------------------------------------------------


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (duplicates give empty chunks, which must be fine)."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[start:stop] for start, stop in pairwise(bounds)]


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=40).map(lambda cuts: split_at(data, cuts))


@dataclass
class Parsed:
    messages: list[SSEMessage]
    comments: list[str]
    parser: SSEParser


def parse(chunks: Sequence[bytes]) -> Parsed:
    comments: list[str] = []
    parser = SSEParser(on_comment=comments.append)
    messages = [message for chunk in chunks for message in parser.feed(chunk)]
    messages += parser.end()
    return Parsed(messages, comments, parser)


def run_vector(vector: dict[str, Any], chunks: Sequence[bytes]) -> dict[str, Any]:
    """What a conforming client observes, in the vectors' own shape."""
    if not is_event_stream_content_type(vector.get("content_type", "text/event-stream")):
        return {"events": [], "lastEventId": "", "retry": None, "comments": [], "fail": True}
    parsed = parse(chunks)
    events = [
        {"type": m.event, "data": m.data, "lastEventId": m.last_event_id} for m in parsed.messages
    ]
    return {
        "events": events,
        "lastEventId": parsed.parser.last_event_id,
        "retry": parsed.parser.retry,
        "comments": parsed.comments,
        "fail": False,
    }


def assert_vector(vector: dict[str, Any], chunks: Sequence[bytes]) -> None:
    expect = vector["expect"]
    actual = run_vector(vector, chunks)
    assert actual["events"] == expect["events"]
    assert actual["lastEventId"] == expect["lastEventId"]
    assert actual["retry"] == expect["retry"]
    assert actual["fail"] == expect.get("fail", False)
    if "comments" in expect:
        assert actual["comments"] == expect["comments"]


def vector_bytes(vector: dict[str, Any]) -> bytes:
    text: str = vector["input"]
    return text.encode("utf-8")


# --- Conformance vectors --------------------------------------------------------------------


def test_vectors_are_in_the_known_format() -> None:
    assert VECTOR_DOCUMENT["format"] == VECTORS_FORMAT
    vectors = VECTOR_DOCUMENT["vectors"]
    assert len(vectors) >= 80
    assert len({vector["id"] for vector in vectors}) == len(vectors)
    for vector in vectors:
        assert set(vector) <= VECTOR_KEYS, vector["id"]
        assert set(vector["expect"]) <= EXPECT_KEYS, vector["id"]
        assert isinstance(vector["input"], str), vector["id"]
        assert LICENCE.search(vector["source"]), f"{vector['id']}: its source names no licence"


@pytest.mark.parametrize("vector", VECTORS)
def test_vector_fed_whole(vector: dict[str, Any]) -> None:
    assert_vector(vector, [vector_bytes(vector)])


@pytest.mark.parametrize("vector", VECTORS)
def test_vector_fed_byte_by_byte(vector: dict[str, Any]) -> None:
    assert_vector(vector, one_byte_chunks(vector_bytes(vector)))


@pytest.mark.parametrize("vector", VECTORS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vector_fed_in_random_chunks(vector: dict[str, Any], data: st.DataObject) -> None:
    assert_vector(vector, data.draw(chunkings(vector_bytes(vector)), label="chunks"))


# --- Encoder: exact bytes -------------------------------------------------------------------


def test_protocol_example_stream_is_byte_exact() -> None:
    stream = (
        encode_stream_open(2000, "k3x9.41")
        + encode_id_line("k3x9.42")
        + encode_event_body("message", b'{"text":"hi"}')
        + encode_comment()
    )
    assert stream == (
        b"retry: 2000\nid: k3x9.41\n\n"
        b'id: k3x9.42\nevent: message\ndata: {"text":"hi"}\n\n'
        b": ping\n\n"
    )


def test_encode_retry_stream_open_and_id_line() -> None:
    assert encode_retry(2000) == b"retry: 2000\n"
    assert encode_retry(0) == b"retry: 0\n"
    assert encode_stream_open(2000, "k3x9.41,p0aa.7") == b"retry: 2000\nid: k3x9.41,p0aa.7\n\n"
    assert encode_id_line("k3x9.42") == b"id: k3x9.42\n"
    with pytest.raises(ValueError, match="non-negative"):
        encode_retry(-1)


@pytest.mark.parametrize("bad", ["k3x9.1\ndata: x", "k3x9.1\r", "k3x9\x00.1"])
def test_encode_id_line_refuses_what_would_break_the_id(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_id_line(bad)


def test_encode_event_body() -> None:
    assert encode_event_body("message", b'{"a":[1,2]}') == b'event: message\ndata: {"a":[1,2]}\n\n'
    assert encode_event_body("chat.typing", b"null") == b"event: chat.typing\ndata: null\n\n"
    # Line breaks, which compact JSON never holds, still frame correctly: one data line each.
    assert encode_event_body("m", b"a\nb") == b"event: m\ndata: a\ndata: b\n\n"
    assert encode_event_body("m", b"a\r\nb\rc\n") == (
        b"event: m\ndata: a\ndata: b\ndata: c\ndata: \n\n"
    )
    with pytest.raises(ValueError, match="event name"):
        encode_event_body("message\ndata: forged", b"1")


def test_encode_comment() -> None:
    assert encode_comment() == b": ping\n\n"
    assert encode_comment("bye") == b": bye\n\n"
    with pytest.raises(ValueError, match="comment"):
        encode_comment("ping\ndata: forged")


def test_encode_reset() -> None:
    assert encode_reset("chat:lobby", "k3x9.50", "gap", "k3x9.50,p0aa.7") == (
        b"id: k3x9.50,p0aa.7\n"
        b"event: tidings.reset\n"
        b'data: {"channel":"chat:lobby","id":"k3x9.50","reason":"gap"}\n\n'
    )
    with pytest.raises(ValueError, match="'gap' or 'epoch'"):
        encode_reset("news", "k3x9.1", "expired", "k3x9.1")


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("Text/Event-Stream;", True),
        (" text/event-stream ", True),
        ("text/plain", False),
        ("text/event-streams", False),
        ("x bogus", False),
        ("", False),
    ],
)
def test_is_event_stream_content_type(content_type: str, accepted: bool) -> None:
    assert is_event_stream_content_type(content_type) is accepted


# --- Parser: details the vectors do not pin down --------------------------------------------


def test_full_event_is_parsed_with_its_id() -> None:
    parser = SSEParser()
    assert parser.feed(encode_stream_open(1500, "k3x9.41")) == []
    assert parser.last_event_id == "k3x9.41"
    assert parser.retry == 1500
    wire = encode_id_line("k3x9.42") + encode_event_body("message", b'{"text":"hi"}')
    assert parser.feed(wire) == [SSEMessage("message", '{"text":"hi"}', "k3x9.42")]
    assert parser.last_event_id == "k3x9.42"


def test_event_is_only_returned_once_its_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [SSEMessage("message", "a", "")]


def test_invalid_utf8_is_replaced_like_whatwg_utf8_decode() -> None:
    # One U+FFFD per maximal invalid subpart: a truncated sequence, an overlong lead byte, an
    # encoded surrogate (three bytes, three replacements) and a lone continuation byte.
    parser = SSEParser()
    stream = b"id: \xff\ndata: \xf0\x9f\x98x\xc0\x80|\xed\xa0\x80|\x80\n\n"
    expected = SSEMessage("message", "\ufffdx\ufffd\ufffd|\ufffd\ufffd\ufffd|\ufffd", "\ufffd")
    assert parser.feed(stream) == [expected]


def test_multibyte_character_split_across_chunks() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: caf\xc3") == []
    assert parser.feed(b"\xa9\ndata: \xe2\x82") == []
    assert parser.feed(b"\xac\n\n") == [SSEMessage("caf\u00e9", "\u20ac", "")]


def test_bom_split_across_chunks_is_stripped() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [SSEMessage("message", "x", "")]


def test_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.feed(b"data: x\n\n") == []  # the field name is "\ufffddata": ignored
    assert parser.feed(b"data: y\n\n") == [SSEMessage("message", "y", "")]


def test_cr_at_end_of_chunk_then_lf_is_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SSEMessage("message", "a", "")]
    assert parser.feed(b"\ndata: b\r\r") == [SSEMessage("message", "b", "")]


def test_cr_then_empty_chunk_then_lf_is_still_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\ndata: b\n\n") == [SSEMessage("message", "a\nb", "")]


def test_end_discards_the_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: done\n\nid: 7\ndata: half\n") == [SSEMessage("message", "done", "")]
    assert parser.end() == []
    assert parser.last_event_id == ""


def test_connection_state_survives_end_and_stream_state_does_not() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 3000\nid: k3x9.9\n\nevent: half\ndata: lost")
    parser.end()
    assert (parser.last_event_id, parser.retry) == ("k3x9.9", 3000)
    # A new response starts a new stream: its BOM is stripped, and its id buffer starts empty
    # (so a blank line with no id commits "", as WHATWG says).
    assert parser.feed(b"\xef\xbb\xbfdata: x\n\n") == [SSEMessage("message", "x", "")]
    assert (parser.last_event_id, parser.retry) == ("", 3000)


def test_retry_too_long_for_int_is_ignored() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 10\n\nretry: " + b"9" * 100_000 + b"\n\n") == []
    assert parser.retry == 10


def test_retry_needs_ascii_digits() -> None:
    parser = SSEParser()
    parser.feed("retry: \u0661\u0662\nretry: 12 \nretry: -1\nretry: +1\n\n".encode())
    assert parser.retry is None


def test_comments_are_counted_and_reported_even_alone() -> None:
    seen: list[str] = []
    parser = SSEParser(on_comment=seen.append)
    assert parser.feed(encode_comment() + encode_comment("x") + b":\n") == []
    assert (parser.comments, seen) == (3, [" ping", " x", ""])
    without_callback = SSEParser()
    without_callback.feed(b": ping\n\n")
    assert without_callback.comments == 1


def test_long_line_in_many_chunks() -> None:
    parser = SSEParser()
    payload = b"x" * 1_000_000
    for chunk in split_at(b"data: " + payload, range(0, len(payload), 1000)):
        assert parser.feed(chunk) == []
    assert parser.feed(b"\n\n") == [SSEMessage("message", payload.decode(), "")]


# --- Round trips of what the server sends ---------------------------------------------------

ALNUM = string.ascii_letters + string.digits
EVENT_NAMES = st.text(alphabet=ALNUM + "_-.:", min_size=1, max_size=64)
CHANNELS = st.text(alphabet=ALNUM + "_-.:@/", min_size=1, max_size=128)
CURSORS = st.builds(
    "{}.{}".format, st.text(alphabet=ALNUM, min_size=1, max_size=16), st.integers(0, 10**18)
)
CURSOR_LISTS = st.lists(CURSORS, min_size=1, max_size=5).map(",".join)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"))
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(codec="utf-8")), children, max_size=5)
    ),
    max_leaves=20,
)
COMMENT_TEXTS = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)


@dataclass(frozen=True)
class Part:
    """A piece of a stream and what the parser must make of it."""

    wire: bytes
    message: SSEMessage | None = None
    value: object = None
    cursor_list: str | None = None
    comment: str | None = None


def event_part(name: str, cursor_list: str, value: object) -> Part:
    data = orjson.dumps(value)
    wire = encode_id_line(cursor_list) + encode_event_body(name, data)
    return Part(wire, SSEMessage(name, data.decode(), cursor_list), value, cursor_list)


def reset_part(channel: str, cursor: str, reason: str, cursor_list: str) -> Part:
    value = {"channel": channel, "id": cursor, "reason": reason}
    data = json.dumps(value, separators=(",", ":"))
    message = SSEMessage(RESET_EVENT, data, cursor_list)
    return Part(encode_reset(channel, cursor, reason, cursor_list), message, value, cursor_list)


def comment_part(text: str) -> Part:
    return Part(encode_comment(text), comment=" " + text)


PARTS = st.lists(
    st.builds(event_part, EVENT_NAMES, CURSOR_LISTS, JSON_VALUES)
    | st.builds(reset_part, CHANNELS, CURSORS, st.sampled_from(["gap", "epoch"]), CURSOR_LISTS)
    | st.builds(comment_part, COMMENT_TEXTS),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(retry=st.integers(0, 2**31), opening=CURSOR_LISTS, parts=PARTS, data=st.data())
def test_encoded_stream_parses_back_exactly(
    retry: int, opening: str, parts: list[Part], data: st.DataObject
) -> None:
    stream = encode_stream_open(retry, opening) + b"".join(part.wire for part in parts)
    parsed = parse(data.draw(chunkings(stream), label="chunks"))
    with_messages = [part for part in parts if part.message is not None]
    assert parsed.messages == [part.message for part in with_messages]
    for message, part in zip(parsed.messages, with_messages, strict=True):
        assert json.loads(message.data) == part.value
    cursor_lists = [opening] + [part.cursor_list for part in parts if part.cursor_list]
    assert parsed.parser.last_event_id == cursor_lists[-1]
    assert parsed.parser.retry == retry
    assert parsed.comments == [part.comment for part in parts if part.comment is not None]
    assert parsed.parser.comments == len(parsed.comments)


@settings(max_examples=300, deadline=None)
@given(name=EVENT_NAMES, text=st.text(st.characters(codec="utf-8")), data=st.data())
def test_data_with_line_breaks_parses_back_with_lf(
    name: str, text: str, data: st.DataObject
) -> None:
    stream = encode_event_body(name, text.encode())
    parsed = parse(data.draw(chunkings(stream), label="chunks"))
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.messages == [SSEMessage(name, expected, "")]


# --- Differential fuzzing against a literal reading of the spec -----------------------------


def reference_parse(stream: bytes) -> tuple[list[SSEMessage], str, int | None, list[str]]:
    """The WHATWG algorithm transcribed step by step on the whole stream: slow and obvious."""
    text = stream.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split("\r\n|\r|\n", text)[:-1]  # the last piece has no line ending
    messages: list[SSEMessage] = []
    comments: list[str] = []
    data, event, id_buffer, last_event_id, retry = "", "", "", "", None
    for line in lines:
        if line == "":
            last_event_id = id_buffer
            if data:
                messages.append(SSEMessage(event or "message", data[:-1], last_event_id))
            data, event = "", ""
            continue
        if line.startswith(":"):
            comments.append(line[1:])
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return messages, last_event_id, retry, comments


TOKENS = [
    b"data", b"event", b"id", b"retry", b"Data", b":", b": ", b" ", b"\r", b"\n", b"\r\n",
    b"x", b"1", b"0", b"\x00", b"\xef\xbb\xbf", b"\xef\xbb", b"\xe2\x82", b"\xac", b"\xff",
    b"\xc3\xa9", b"\t",
]  # fmt: skip
FUZZ_STREAMS = st.lists(st.sampled_from(TOKENS) | st.binary(max_size=3), max_size=60).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(stream=FUZZ_STREAMS, data=st.data())
def test_parser_matches_reference_under_any_chunking(stream: bytes, data: st.DataObject) -> None:
    messages, last_event_id, retry, comments = reference_parse(stream)
    parsed = parse(data.draw(chunkings(stream), label="chunks"))
    assert parsed.messages == messages
    assert parsed.parser.last_event_id == last_event_id
    assert parsed.parser.retry == retry
    assert parsed.comments == comments


@settings(max_examples=200, deadline=None)
@given(stream=FUZZ_STREAMS)
def test_parser_matches_reference_byte_by_byte(stream: bytes) -> None:
    messages, last_event_id, retry, comments = reference_parse(stream)
    parsed = parse(one_byte_chunks(stream))
    assert (parsed.messages, parsed.parser.last_event_id) == (messages, last_event_id)
    assert (parsed.parser.retry, parsed.comments) == (retry, comments)
