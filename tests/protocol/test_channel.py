"""Channel names, namespaces and event names (docs/protocol.md section 1)."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.exceptions import InvalidChannel, InvalidField
from tidings.protocol.channel import (
    DEFAULT_EVENT,
    RESERVED_EVENT_PREFIX,
    namespace_of,
    parse_channel,
    parse_event_name,
)

ALNUM = string.ascii_letters + string.digits
CHANNEL_CHARS = ALNUM + "_-.:@/"
EVENT_CHARS = ALNUM + "_-.:"

channel_names = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=128)
event_names = st.text(alphabet=EVENT_CHARS, min_size=1, max_size=64)
not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=10),
    st.lists(st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Mostly-valid text with the odd foreign character, so the interesting boundary gets examples.
near_names = st.text(
    alphabet=st.one_of(
        st.sampled_from(CHANNEL_CHARS),
        st.sampled_from(" \t\n\r\x00,;#?&=%+!*'\"\\é\u0661²\uff41\uff11\u200b\ufeff"),
        st.characters(),
    ),
    min_size=0,
    max_size=130,
)


def is_valid_channel(text: str) -> bool:
    return 1 <= len(text) <= 128 and all(c in CHANNEL_CHARS for c in text)


def is_valid_event_name(text: str) -> bool:
    return 1 <= len(text) <= 64 and all(c in EVENT_CHARS for c in text)


@settings(max_examples=200)
@given(channel_names)
def test_every_name_from_the_allowed_set_is_a_channel(name: str) -> None:
    assert parse_channel(name) == name


@settings(max_examples=400)
@given(st.one_of(near_names, st.text(max_size=20)))
@example("a" * 128)
@example("a" * 129)
@example("")
def test_parse_channel_accepts_exactly_the_allowed_names(text: str) -> None:
    if is_valid_channel(text):
        assert parse_channel(text) == text
    else:
        with pytest.raises(InvalidChannel):
            parse_channel(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a" * 129,
        "chat lobby",
        "chat#1",
        "chat?x",
        "chat&x",
        "café",
        "\u0661",
        "\uff43hat",
        "a\n",
        "a,b",
    ],
)
def test_invalid_channel_is_refused_with_its_code(text: str) -> None:
    with pytest.raises(InvalidChannel) as caught:
        parse_channel(text)
    assert (caught.value.status, caught.value.code) == (400, "invalid_channel")


@settings(max_examples=50)
@given(not_strings)
def test_a_channel_that_is_not_a_string_is_refused(value: Any) -> None:
    with pytest.raises(InvalidChannel):
        parse_channel(value)


@pytest.mark.parametrize(
    ("channel", "namespace"),
    [
        ("chat:lobby", "chat"),
        ("news", ""),
        ("a:b:c", "a"),
        ("chat:", "chat"),
        (":lobby", ""),
        ("user@host/x", ""),
        ("a.b:c", "a.b"),
    ],
)
def test_namespace_is_the_part_before_the_first_colon(channel: str, namespace: str) -> None:
    assert namespace_of(channel) == namespace


@settings(max_examples=200)
@given(channel_names)
def test_namespace_is_a_prefix_ending_at_the_first_colon(channel: str) -> None:
    namespace = namespace_of(channel)
    if ":" in channel:
        assert channel.startswith(namespace + ":")
        assert ":" not in namespace
    else:
        assert namespace == ""


def test_an_absent_event_name_is_message() -> None:
    assert parse_event_name(None) == DEFAULT_EVENT == "message"


@settings(max_examples=200)
@given(event_names)
def test_every_event_name_from_the_allowed_set_is_accepted_unless_reserved(name: str) -> None:
    if name.startswith(RESERVED_EVENT_PREFIX):
        with pytest.raises(InvalidField):
            parse_event_name(name)
    else:
        assert parse_event_name(name) == name


@settings(max_examples=300)
@given(st.one_of(near_names, event_names, st.text(max_size=10)))
@example("a" * 64)
@example("a" * 65)
@example("chat@x")
@example("a/b")
def test_parse_event_name_accepts_exactly_the_allowed_names(text: str) -> None:
    if is_valid_event_name(text) and not text.startswith("tidings."):
        assert parse_event_name(text) == text
    else:
        with pytest.raises(InvalidField):
            parse_event_name(text)


@pytest.mark.parametrize("name", ["tidings.reset", "tidings.", "tidings.x.y", "tidings.ping"])
def test_server_event_names_are_reserved(name: str) -> None:
    with pytest.raises(InvalidField, match="reserved"):
        parse_event_name(name)


@pytest.mark.parametrize("name", ["tidings", "Tidings.reset", "my.tidings.reset", "tidings:x"])
def test_names_that_only_look_reserved_are_accepted(name: str) -> None:
    assert parse_event_name(name) == name


@settings(max_examples=50)
@given(not_strings.filter(lambda value: value is not None))
def test_an_event_name_that_is_not_a_string_is_refused(value: Any) -> None:
    with pytest.raises(InvalidField):
        parse_event_name(value)
