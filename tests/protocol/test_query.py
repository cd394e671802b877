"""Query strings of ``/sse`` and ``/poll`` (docs/protocol.md sections 4 and 5).

Everything a subscription request can get wrong must come out as a RequestError (a 400),
never as another exception (a 500) and never as a silently wrong request.
"""

from __future__ import annotations

import math
import string
from urllib.parse import urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.exceptions import (
    InvalidChannel,
    InvalidCursor,
    InvalidField,
    RequestError,
    TooManyChannels,
)
from tidings.protocol.cursor import Cursor, format_cursor_list
from tidings.protocol.query import (
    DEFAULT_POLL_LIMIT,
    MAX_POLL_LIMIT,
    MAX_QUERY_PAIRS,
    PollRequest,
    Subscription,
    parse_flag,
    parse_poll,
    parse_query,
    parse_subscription,
)

CHANNEL_CHARS = string.ascii_letters + string.digits + "_-.:@/"
EPOCH_CHARS = string.ascii_letters + string.digits
MAX_CHANNELS = 4
MAX_POLL_SECONDS = 30.0

channel_names = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=20)
cursors = st.builds(
    Cursor,
    st.text(alphabet=EPOCH_CHARS, min_size=1, max_size=16),
    st.integers(0, 2**63 - 1),
)


def query(*pairs: tuple[str, str]) -> str:
    return urlencode(pairs)


def subscribe(raw: str, resume_from: str | None = None) -> Subscription:
    return parse_subscription(parse_query(raw), MAX_CHANNELS, resume_from)


def poll(raw: str) -> PollRequest:
    return parse_poll(parse_query(raw), MAX_CHANNELS, MAX_POLL_SECONDS)


# parse_query


def test_query_keeps_every_value_in_order_and_decodes_them() -> None:
    parsed = parse_query("channel=a&x=&channel=chat%3Alobby&channel=b+c")
    assert parsed.all("channel") == ["a", "chat:lobby", "b c"]
    assert parsed.one("x") == ""
    assert parsed.one("missing") is None


def test_a_name_given_twice_where_one_is_expected_is_refused() -> None:
    with pytest.raises(InvalidField, match="timeout"):
        parse_query("timeout=1&timeout=2").one("timeout")


def test_too_many_fields_is_refused() -> None:
    parse_query("&".join(["a=1"] * MAX_QUERY_PAIRS))
    with pytest.raises(InvalidField):
        parse_query("&".join(["a=1"] * (MAX_QUERY_PAIRS + 1)))


# parse_subscription


@settings(max_examples=150)
@given(st.lists(channel_names, min_size=1, max_size=MAX_CHANNELS, unique=True), st.data())
def test_subscription_keeps_channels_and_cursors_in_order(
    channels: list[str], data: st.DataObject
) -> None:
    since = data.draw(st.none() | st.lists(cursors, min_size=len(channels), max_size=len(channels)))
    pairs = [("channel", name) for name in channels]
    if since is not None:
        pairs.append(("since", format_cursor_list(since)))
    subscription = subscribe(query(*pairs))
    assert subscription.channels == tuple(channels)
    assert subscription.since == (None if since is None else tuple(since))


def test_no_channel_is_refused() -> None:
    with pytest.raises(InvalidChannel):
        subscribe("")
    with pytest.raises(InvalidChannel):
        subscribe("since=a.1")


def test_a_channel_named_twice_is_refused() -> None:
    with pytest.raises(InvalidChannel, match="twice"):
        subscribe("channel=a&channel=b&channel=a")


def test_an_invalid_channel_is_refused() -> None:
    with pytest.raises(InvalidChannel):
        subscribe("channel=a&channel=b%20c")
    with pytest.raises(InvalidChannel):
        subscribe("channel=")


def test_up_to_max_channels_are_accepted_and_one_more_is_refused() -> None:
    names = [f"c{i}" for i in range(MAX_CHANNELS + 1)]
    assert len(subscribe(query(*[("channel", n) for n in names[:-1]])).channels) == MAX_CHANNELS
    with pytest.raises(TooManyChannels) as caught:
        subscribe(query(*[("channel", n) for n in names]))
    assert (caught.value.status, caught.value.code) == (400, "too_many_channels")


@settings(max_examples=100)
@given(
    st.lists(channel_names, min_size=1, max_size=MAX_CHANNELS, unique=True),
    st.lists(cursors, min_size=1, max_size=MAX_CHANNELS + 1),
)
def test_since_must_hold_one_cursor_per_channel(channels: list[str], since: list[Cursor]) -> None:
    raw = query(*[("channel", n) for n in channels], ("since", format_cursor_list(since)))
    if len(since) == len(channels):
        assert subscribe(raw).since == tuple(since)
    else:
        with pytest.raises(InvalidCursor):
            subscribe(raw)


def test_an_empty_since_starts_from_now() -> None:
    assert subscribe("channel=a&since=").since is None
    assert subscribe("channel=a").since is None


def test_an_invalid_since_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        subscribe("channel=a&since=k3x9.042")


def test_last_event_id_wins_over_since() -> None:
    subscription = subscribe("channel=a&channel=b&since=x.1,y.2", resume_from="p.7,q.8")
    assert subscription.since == (Cursor("p", 7), Cursor("q", 8))


def test_last_event_id_wins_even_over_a_bad_since() -> None:
    subscription = subscribe("channel=a&since=not-a-cursor", resume_from="p.7")
    assert subscription.since == (Cursor("p", 7),)


def test_an_empty_last_event_id_falls_back_to_since() -> None:
    assert subscribe("channel=a&since=x.1", resume_from="").since == (Cursor("x", 1),)
    assert subscribe("channel=a", resume_from=None).since is None


def test_a_bad_last_event_id_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        subscribe("channel=a&channel=b", resume_from="p.7")
    with pytest.raises(InvalidCursor):
        subscribe("channel=a", resume_from="p.07")


# parse_poll: the cursor list it answers with


def test_a_resuming_poll_carries_its_cursor_list_as_the_server_writes_it_and_its_etag() -> None:
    resumed = poll("channel=a&channel=b&since=e1.7,e2.0")
    assert resumed.since_text == format_cursor_list(resumed.subscription.since or ())
    assert resumed.since_text == "e1.7,e2.0"
    assert resumed.since_etag == b'"e1.7,e2.0"'
    fresh = poll("channel=a")
    assert (fresh.since_text, fresh.since_etag) == (None, None)


# parse_poll: timeout


def test_poll_defaults() -> None:
    request = poll("channel=a")
    assert (request.timeout, request.limit) == (0.0, DEFAULT_POLL_LIMIT)
    assert request.subscription.channels == ("a",)
    assert poll("channel=a&timeout=&limit=").timeout == 0.0


@settings(max_examples=200)
@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
@example(MAX_POLL_SECONDS)
@example(1e300)
@example(5e-324)
def test_a_timeout_is_kept_up_to_the_maximum_and_lowered_above_it(seconds: float) -> None:
    assert poll(query(("channel", "a"), ("timeout", repr(seconds)))).timeout == min(
        seconds, MAX_POLL_SECONDS
    )


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("0.25", 0.25), ("2.5", 2.5)])
def test_a_timeout_may_have_fractions(text: str, seconds: float) -> None:
    assert poll(f"channel=a&timeout={text}").timeout == seconds


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "-0.001",
        "-1e-300",
        "nan",
        "NaN",
        "-nan",
        "inf",
        "+inf",
        "-inf",
        "Infinity",
        "abc",
        "1s",
    ],
)
def test_a_timeout_that_is_negative_or_not_a_finite_number_is_refused(text: str) -> None:
    with pytest.raises(InvalidField, match="timeout"):
        poll(query(("channel", "a"), ("timeout", text)))


@settings(max_examples=100)
@given(st.floats(max_value=0, exclude_max=True, allow_nan=False))
def test_every_negative_timeout_is_refused(seconds: float) -> None:
    with pytest.raises(InvalidField):
        poll(query(("channel", "a"), ("timeout", repr(seconds))))


def test_a_decimal_timeout_too_large_for_a_float_is_lowered_to_the_maximum() -> None:
    assert poll("channel=a&timeout=1" + "0" * 400).timeout == MAX_POLL_SECONDS


def test_a_timeout_given_twice_is_refused() -> None:
    with pytest.raises(InvalidField):
        poll("channel=a&timeout=1&timeout=2")


# parse_poll: limit


@settings(max_examples=100)
@given(st.integers(1, MAX_POLL_LIMIT))
def test_every_limit_from_1_to_1000_is_accepted(limit: int) -> None:
    assert poll(f"channel=a&limit={limit}").limit == limit


@settings(max_examples=100)
@given(st.integers().filter(lambda n: not 1 <= n <= MAX_POLL_LIMIT))
def test_every_whole_limit_outside_1_to_1000_is_refused(limit: int) -> None:
    with pytest.raises(InvalidField, match="limit"):
        poll(f"channel=a&limit={limit}")


@pytest.mark.parametrize("text", ["0", "1001", "-1", "+5", "1.0", "1e2", " 5", "5 ", "abc", "0x10"])
def test_a_limit_that_is_not_a_whole_number_in_range_is_refused(text: str) -> None:
    with pytest.raises(InvalidField, match="limit"):
        poll(query(("channel", "a"), ("limit", text)))


@pytest.mark.parametrize("text", ["²", "1²", "9" * 5000])
def test_a_limit_of_digit_like_characters_is_refused_as_a_bad_field(text: str) -> None:
    with pytest.raises(InvalidField):
        poll(query(("channel", "a"), ("limit", text)))


# parse_flag


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", False),
        ("envelope=", False),
        ("envelope=0", False),
        ("envelope=false", False),
        ("envelope=1", True),
        ("envelope=true", True),
    ],
)
def test_flag_values(raw: str, expected: bool) -> None:
    assert parse_flag(parse_query(raw), "envelope") is expected


@pytest.mark.parametrize("value", ["2", "yes", "TRUE", "True", "on", " 1", "-1"])
def test_other_flag_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidField, match="envelope"):
        parse_flag(parse_query(query(("envelope", value))), "envelope")


def test_a_flag_given_twice_is_refused() -> None:
    with pytest.raises(InvalidField):
        parse_flag(parse_query("envelope=1&envelope=1"), "envelope")


# Anything at all


names = st.sampled_from(["channel", "since", "timeout", "limit", "envelope", "token", "x", ""])
values = st.one_of(
    channel_names,
    st.builds(format_cursor_list, st.lists(cursors, min_size=1, max_size=3)),
    st.text(max_size=12),
    st.text(alphabet="0123456789.-+eE,naif", max_size=8),
)
query_strings = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(names, values), max_size=8).map(lambda pairs: urlencode(pairs)),
    st.lists(st.tuples(names, values), max_size=8).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
)


@settings(max_examples=400)
@given(query_strings, st.none() | st.text(max_size=30))
@example("channel=a&since=a.1&timeout=nan&limit=0&envelope=maybe", None)
@example("channel=a&channel=a", "x")
@example("%ff%fe=%80", None)
def test_arbitrary_query_strings_raise_nothing_but_request_errors(
    raw: str, last_event_id: str | None
) -> None:
    for parse in (
        lambda: subscribe(raw, last_event_id),
        lambda: poll(raw),
        lambda: parse_flag(parse_query(raw), "envelope"),
    ):
        try:
            parse()
        except RequestError as error:
            assert error.status == 400
            assert error.message


@settings(max_examples=200)
@given(query_strings)
def test_a_poll_that_parses_is_within_its_bounds(raw: str) -> None:
    try:
        request = poll(raw)
    except RequestError:
        return
    assert 0 <= request.timeout <= MAX_POLL_SECONDS
    assert math.isfinite(request.timeout)
    assert 1 <= request.limit <= MAX_POLL_LIMIT
    channels = request.subscription.channels
    assert 1 <= len(channels) <= MAX_CHANNELS
    assert len(set(channels)) == len(channels)
    since = request.subscription.since
    assert since is None or len(since) == len(channels)
