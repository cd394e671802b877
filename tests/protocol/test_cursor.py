"""Cursors and cursor lists (docs/protocol.md section 1): what parses, what does not, round trips.

The oracle is a character-by-character reading of the grammar, written without a regex so it
does not share the implementation's mistakes.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.exceptions import InvalidCursor
from tidings.protocol.cursor import (
    Cursor,
    format_cursor_list,
    new_epoch,
    parse_cursor,
    parse_cursor_list,
)

EPOCH_CHARS = string.ascii_letters + string.digits
# The server's offsets are 64-bit counters; the parser takes decimal integers of up to 19 digits.
MAX_OFFSET = 2**63 - 1
MAX_OFFSET_DIGITS = 19

epochs = st.text(alphabet=EPOCH_CHARS, min_size=1, max_size=16)
offsets = st.integers(min_value=0, max_value=MAX_OFFSET)
cursors = st.builds(Cursor, epochs, offsets)


def is_valid_cursor(text: str) -> bool:
    """docs/protocol.md 1, read literally: ``<1-16 of A-Za-z0-9>.<decimal, no leading 0>``."""
    epoch, dot, offset = text.partition(".")
    if not dot or not 1 <= len(epoch) <= 16 or not all(c in EPOCH_CHARS for c in epoch):
        return False
    if not offset or not all(c in "0123456789" for c in offset):
        return False
    return (offset == "0" or offset[0] != "0") and len(offset) <= MAX_OFFSET_DIGITS


@st.composite
def near_cursors(draw: st.DrawFn) -> str:
    """A valid cursor with one small edit: the inputs most likely to slip through a parser."""
    text = str(draw(cursors))
    edit = draw(
        st.sampled_from(
            ["none", "insert", "delete", "replace", "prefix_zero", "extra_dot", "swap_dot"]
        )
    )
    noise: st.SearchStrategy[str] = st.sampled_from(
        [
            " ",
            "\t",
            "\n",
            "\r",
            "\x00",
            ".",
            ",",
            "-",
            "+",
            "_",
            "0",
            "\u0661",
            "\u0663",
            "²",
            "é",
            "\uff41",
            "\uff11",
            *EPOCH_CHARS[:5],
        ]
    )
    position = draw(st.integers(0, len(text)))
    if edit == "insert":
        return text[:position] + draw(noise) + text[position:]
    if edit == "delete" and text:
        position = min(position, len(text) - 1)
        return text[:position] + text[position + 1 :]
    if edit == "replace" and text:
        position = min(position, len(text) - 1)
        return text[:position] + draw(noise) + text[position + 1 :]
    if edit == "prefix_zero":
        epoch, _, offset = text.partition(".")
        return f"{epoch}.0{offset}"
    if edit == "extra_dot":
        return text + "." + str(draw(offsets))
    if edit == "swap_dot":
        return text.replace(".", draw(st.sampled_from([",", ":", "", ".."])))
    return text


@settings(max_examples=300)
@given(epochs, offsets)
def test_valid_cursor_round_trips(epoch: str, offset: int) -> None:
    text = f"{epoch}.{offset}"
    cursor = parse_cursor(text)
    assert cursor == Cursor(epoch, offset)
    assert str(cursor) == text


@settings(max_examples=100)
@given(cursors)
def test_str_of_a_cursor_parses_back_to_it(cursor: Cursor) -> None:
    assert parse_cursor(str(cursor)) == cursor


@settings(max_examples=500)
@given(st.one_of(near_cursors(), st.text(max_size=40)))
@example("a." + "9" * MAX_OFFSET_DIGITS)
@example("a" * 16 + ".0")
def test_parse_cursor_accepts_exactly_the_grammar(text: str) -> None:
    if is_valid_cursor(text):
        cursor = parse_cursor(text)
        assert str(cursor) == text
    else:
        with pytest.raises(InvalidCursor):
            parse_cursor(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "k3x9",
        "k3x9.",
        ".42",
        "k3x9.042",
        "k3x9.00",
        "k3x9.-1",
        "k3x9.+1",
        "k3x9..42",
        "k3x9.4.2",
        "k3x9.42.",
        "a" * 17 + ".1",
        "k3-x9.42",
        "k3_x9.42",
        " k3x9.42",
        "k3x9.42 ",
        "k3x9.42\n",
        "k3x9. 42",
        "k3x9 .42",
        "k3x9.4 2",
        "k3x9.\u0661",
        "k3x9.4\u0662",
        "k\u0663x9.42",
        "k3x9.²",
        "k3x9.\uff11",
        "\uff4b3x9.42",
        "é.1",
        "k3x9.1e3",
        "k3x9.0x1",
        "k3x9.4_2",
        "k3x9.42,p0aa.7",
        "k3x9,42",
    ],
)
def test_invalid_cursor_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        parse_cursor(text)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_cursor"


def test_long_garbage_is_cut_in_the_message() -> None:
    with pytest.raises(InvalidCursor) as caught:
        parse_cursor("x" * 100_000)
    assert len(caught.value.message) < 300


@settings(max_examples=200)
@given(st.lists(cursors, min_size=1, max_size=8), st.integers(1, 9))
def test_cursor_list_needs_exactly_one_cursor_per_channel(listed: list[Cursor], count: int) -> None:
    text = format_cursor_list(listed)
    if count == len(listed):
        assert parse_cursor_list(text, count) == listed
    else:
        with pytest.raises(InvalidCursor):
            parse_cursor_list(text, count)


@settings(max_examples=100)
@given(st.lists(cursors, min_size=1, max_size=8))
def test_cursor_list_round_trips_in_order(listed: list[Cursor]) -> None:
    text = ",".join(map(str, listed))
    assert format_cursor_list(parse_cursor_list(text, len(listed))) == text


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 1),
        ("a.1,", 2),
        (",a.1", 2),
        ("a.1,,b.2", 3),
        ("a.1, b.2", 2),
        ("a.1;b.2", 2),
        ("a.1,b.02", 2),
    ],
)
def test_cursor_list_with_a_bad_member_is_refused(text: str, count: int) -> None:
    with pytest.raises(InvalidCursor):
        parse_cursor_list(text, count)


@settings(max_examples=300)
@given(st.text(max_size=60), st.integers(1, 4))
def test_cursor_list_only_ever_raises_invalid_cursor(text: str, count: int) -> None:
    try:
        parsed = parse_cursor_list(text, count)
    except InvalidCursor:
        return
    assert len(parsed) == count
    assert format_cursor_list(parsed) == text


def test_new_epochs_are_valid_and_differ() -> None:
    made = {new_epoch() for _ in range(50)}
    assert len(made) == 50
    for epoch in made:
        assert parse_cursor(f"{epoch}.0") == Cursor(epoch, 0)


@given(cursors)
def test_next_moves_one_offset_in_the_same_epoch(cursor: Cursor) -> None:
    assert cursor.next() == Cursor(cursor.epoch, cursor.offset + 1)


@given(epochs, offsets, epochs, offsets)
def test_cursors_are_equal_and_hash_alike_exactly_when_their_fields_are(
    epoch: str, offset: int, other_epoch: str, other_offset: int
) -> None:
    first, same, other = (
        Cursor(epoch, offset),
        Cursor(epoch, offset),
        Cursor(other_epoch, other_offset),
    )
    assert first == same and hash(first) == hash(same) and len({first, same}) == 1
    assert (first == other) == (epoch == other_epoch and offset == other_offset)
    assert first != (epoch, offset)  # a cursor is not its fields' tuple
    assert repr(first) == f"Cursor(epoch={epoch!r}, offset={offset!r})"
