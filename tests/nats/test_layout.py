"""The mapping of channels onto JetStream names and subjects, and the URL options: no I/O."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.brokers.nats_layout import (
    EVENT_HEADER,
    TS_HEADER,
    Layout,
    NatsOptions,
    decode_event,
    parse_url,
    token_of,
)
from tidings.config import NamespaceSettings
from tidings.exceptions import ConfigError
from tidings.protocol.event import Event

channels = st.text(
    alphabet="ABCXYZabcxyz0189_-.:@/", min_size=1, max_size=128
)  # the characters docs/protocol.md section 1 allows, both cases


@given(channels)
def test_a_token_is_safe_in_subjects_stream_names_and_case_insensitive_files(
    channel: str,
) -> None:
    token = token_of(channel)
    assert re.fullmatch(r"[a-z2-7]+", token)
    padded = token.upper() + "=" * (-len(token) % 8)
    assert base64.b32decode(padded).decode() == channel


@given(channels, channels)
def test_distinct_channels_get_distinct_tokens(first: str, second: str) -> None:
    assert (token_of(first) == token_of(second)) == (first == second)


def test_the_longest_names_fit_in_a_file_name() -> None:
    layout = Layout("p" * 32)
    assert len(layout.stream_name("/" * 128)) <= 255


def test_channels_that_differ_only_in_case_do_not_share_a_stream() -> None:
    layout = Layout("tidings")
    assert layout.stream_name("News").lower() != layout.stream_name("news").lower()


def test_a_stream_carries_its_epoch_in_its_subject() -> None:
    layout = Layout("tidings")
    stream = layout.stream("chat:lobby", "k3x9", NamespaceSettings(history_size=5))
    assert stream.subject == f"tidings.c.{token_of('chat:lobby')}.k3x9"
    assert layout.epoch_of("chat:lobby", [stream.subject]) == "k3x9"
    assert layout.fanout_subject("chat:lobby") == f"tidings.r.{token_of('chat:lobby')}"
    assert layout.owns(stream.name) and not Layout("tidings-2").owns(stream.name)


@pytest.mark.parametrize(
    "subjects",
    [None, [], ["a.b"], ["tidings.c.xyz.k3x9"], ["tidings.c.{t}.bad-epoch"], ["x", "y"]],
)
def test_a_stream_that_is_not_a_channel_stream_has_no_epoch(subjects: list[str] | None) -> None:
    token = token_of("chat:lobby")
    filled = [subject.replace("{t}", token) for subject in subjects or []] or subjects
    assert Layout("tidings").epoch_of("chat:lobby", filled) is None


def test_history_held_honours_a_size_that_jetstream_cannot() -> None:
    layout = Layout("tidings")
    nothing = layout.stream("news", "e", NamespaceSettings(history_size=0))
    assert nothing.held_from(first_seq=7, last_seq=7) == 8
    three = layout.stream("news", "e", NamespaceSettings(history_size=3))
    assert three.held_from(first_seq=5, last_seq=7) == 5
    assert three.held_from(first_seq=1, last_seq=7) == 5


def test_a_stored_message_decodes_to_its_event() -> None:
    headers = {
        "Nats-Subject": "tidings.c.nzsxg5dt.k3x9",
        "Nats-Sequence": "42",
        EVENT_HEADER: "typing",
        TS_HEADER: "1763700000123",
    }
    event = decode_event("news", headers, b'{"a":1}')
    assert event == Event("news", "k3x9", 42, "typing", b'{"a":1}', 1763700000123)
    for missing in headers:
        partial = {key: value for key, value in headers.items() if key != missing}
        assert decode_event("news", partial, b"1") is None
    assert decode_event("news", {**headers, "Nats-Sequence": "x"}, b"1") is None
    assert decode_event("news", None, b"1") is None


def test_url_options_and_their_defaults() -> None:
    assert parse_url("nats://127.0.0.1:4222") == NatsOptions(("nats://127.0.0.1:4222",))
    options = parse_url("nats://u:p@a:4222,b:4223?prefix=app-1&replicas=3&storage=memory&timeout=2")
    assert options == NatsOptions(("nats://u:p@a:4222", "nats://b:4223"), "app-1", 3, "memory", 2.0)


@pytest.mark.parametrize(
    "url",
    [
        "nats://",
        "nats://h:4222/path",
        "nats://h:4222?prefix=",
        "nats://h:4222?prefix=a.b",
        "nats://h:4222?prefix=a_b",
        "nats://h:4222?prefix=" + "p" * 33,
        "nats://h:4222?replicas=0",
        "nats://h:4222?replicas=x",
        "nats://h:4222?storage=disk",
        "nats://h:4222?timeout=0",
        "nats://h:4222?prefx=typo",
    ],
)
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert caught.value.key == "server.broker"
