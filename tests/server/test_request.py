"""The request the core sees: its target split, its headers read, its identity's default."""

from __future__ import annotations

from tidings.protocol.identity import ANONYMOUS
from tidings.server.core.request import (
    SPLIT_TARGET_BYTES,
    SPLITS_KEPT,
    Request,
    split_target,
)


def request(target: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request("GET", target, headers or [], b"", True, "127.0.0.1")


def test_the_target_splits_into_path_and_query_at_the_first_question_mark() -> None:
    made = request(b"/poll?channel=a&since=x.1?y")
    assert made.path == "/poll"
    assert made.query_string == "channel=a&since=x.1?y"
    assert request(b"/healthz").query_string == ""


def test_a_short_target_is_split_once_and_the_splits_kept_are_bounded() -> None:
    first = split_target(b"/poll?channel=kept")
    assert first == ("/poll", "channel=kept")
    # kept: the same strings again (compiled, the tuple itself is made anew)
    assert split_target(b"/poll?channel=kept")[1] is first[1]
    long = b"/poll?channel=" + b"x" * SPLIT_TARGET_BYTES
    assert split_target(long) == ("/poll", "channel=" + "x" * SPLIT_TARGET_BYTES)
    assert split_target(long)[1] is not split_target(long)[1]  # too long to keep
    for index in range(SPLITS_KEPT):
        split_target(b"/poll?channel=%d" % index)
    assert split_target(b"/poll?channel=kept")[1] is not first[1]  # forgotten once full


def test_a_target_outside_ascii_is_read_as_latin_1_and_never_fails() -> None:
    assert request(b"/caf\xe9?x=\xff").path == "/caf\xe9"


def test_a_header_is_found_whatever_the_case_the_client_wrote_it_in() -> None:
    made = request(b"/", [(b"If-None-Match", b'"a.1"'), (b"Host", b"h")])
    assert made.header(b"if-none-match") == '"a.1"'
    assert made.header(b"origin") is None


def test_a_repeated_header_reads_as_its_values_joined_in_order() -> None:
    made = request(b"/", [(b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")])
    assert made.header(b"x-forwarded-for") == "1.1.1.1, 2.2.2.2"


def test_a_raw_header_is_the_bytes_sent_joined_as_header_joins_them() -> None:
    made = request(b"/", [(b"If-None-Match", b'"a.\xe9"'), (b"if-none-match", b'"b.2"')])
    assert made.raw_header(b"if-none-match") == b'"a.\xe9", "b.2"'
    assert made.header(b"if-none-match") == '"a.\xe9", "b.2"'
    assert made.raw_header(b"host") is None


def test_a_new_request_has_no_identity_until_the_core_verifies_one() -> None:
    made = request(b"/poll")
    assert made.identity is ANONYMOUS
    assert not made.hooked
    assert made.leftover == b""
    assert not made.upgrade


def test_only_a_loopback_peer_is_loopback() -> None:
    assert request(b"/").is_loopback()
    assert Request("GET", b"/", [], b"", True, "::1").is_loopback()
    assert not Request("GET", b"/", [], b"", True, "10.0.0.1").is_loopback()
