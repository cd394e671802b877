"""Poll answers' bodies and ETags (docs/protocol.md section 5)."""

from __future__ import annotations

import orjson

from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset
from tidings.protocol.poll import etag, poll_body


def test_an_etag_is_the_cursor_list_quoted() -> None:
    assert etag("abcdefgh.12") == b'"abcdefgh.12"'
    assert etag("abcdefgh.12,ijklmnop.3") == b'"abcdefgh.12,ijklmnop.3"'


def test_a_body_holds_the_events_the_cursor_list_and_resets_when_there_are_some() -> None:
    event = Event("news", "abcdefgh", 3, "message", b'{"n":1}', 1_700_000_000_000)
    reset = Reset("news", Cursor("abcdefgh", 2), "gap")
    body = orjson.loads(poll_body([event], "abcdefgh.3", [reset], ["old"]))
    assert body["cursor"] == "abcdefgh.3"
    assert [e["data"] for e in body["events"]] == [{"n": 1}]
    assert body["resets"][0]["reason"] == "gap"
    assert body["unsubscribed"] == ["old"]
    assert orjson.loads(poll_body((), "abcdefgh.3")) == {"events": [], "cursor": "abcdefgh.3"}
