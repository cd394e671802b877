"""Fragments: a message's frames joined, text checked as UTF-8 at the frame that breaks it."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.fragments import Fragments, check_utf8

# Continuation bytes at both ends of their range: any valid start of a sequence is completed
# by one of these, so a prefix none of them completes can never become text.
_TAILS = (b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\xbf", b"\xbf\xbf", b"\xbf\xbf\xbf")


def _valid(data: bytes) -> bool:
    try:
        check_utf8(data)
    except UnicodeDecodeError:
        return False
    return True


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[start:end] for start, end in pairwise(edges)]


def feed(fragments: Fragments, parts: list[bytes]) -> None:
    for index, part in enumerate(parts):
        fragments.add(part, fin=index == len(parts) - 1)


@given(st.text(), st.lists(st.integers(min_value=0, max_value=64), max_size=8))
def test_text_split_anywhere_joins_back(text: str, cuts: list[int]) -> None:
    data = text.encode()
    fragments = Fragments(text=True)
    feed(fragments, split(data, cuts))
    assert fragments.join() == data


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=64), max_size=8))
def test_binary_is_not_checked(data: bytes, cuts: list[int]) -> None:
    fragments = Fragments(text=False)
    feed(fragments, split(data, cuts))
    assert fragments.join() == data


@given(st.binary(max_size=32), st.lists(st.integers(min_value=0, max_value=32), max_size=6))
def test_invalid_text_fails_at_the_first_fragment_that_cannot_be_utf8(
    data: bytes, cuts: list[int]
) -> None:
    parts = split(data, cuts)
    fragments = Fragments(text=True)
    for index, part in enumerate(parts):
        fin = index == len(parts) - 1
        seen = b"".join(parts[: index + 1])
        # a prefix is still possible text when some continuation could complete it
        possible = any(_valid(seen + tail) for tail in _TAILS) if not fin else _valid(seen)
        if possible:
            fragments.add(part, fin)
        else:
            with pytest.raises(UnicodeDecodeError):
                fragments.add(part, fin)
            return
    assert _valid(data)


def test_check_utf8() -> None:
    check_utf8("κόσμε".encode())
    for bad in (b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
        with pytest.raises(UnicodeDecodeError):
            check_utf8(bad)
