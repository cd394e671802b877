"""Backoff: exponential growth, full jitter, the cap, and the server's delay as a floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import Backoff, ClientError, ClientOptions
from tidings.client.websocket import closed_by


def fixed(value: float) -> Backoff:
    return Backoff(random=lambda: value)


def test_the_defaults_start_at_half_a_second_and_double_to_thirty() -> None:
    backoff = Backoff()
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_growth_follows_the_configuration() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, multiplier=3.0)
    assert [backoff.ceiling(n) for n in range(5)] == pytest.approx([0.1, 0.3, 0.9, 2.7, 5.0])


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert fixed(0.0).delay(3) == 0.0
    assert fixed(0.5).delay(3) == 2.0
    assert fixed(0.999).delay(3) == pytest.approx(3.996)


def test_the_cap_holds_for_any_number_of_attempts() -> None:
    almost_one = fixed(0.999999)
    assert almost_one.delay(10_000) < 30.0
    assert almost_one.ceiling(10**9) == 30.0


def test_the_server_delay_is_a_floor() -> None:
    assert fixed(0.0).delay(0, server_delay=2.0) == 2.0  # SSE retry: 2000
    assert fixed(0.9).delay(5, server_delay=2.0) == pytest.approx(14.4)  # ours is longer
    assert fixed(0.5).delay(0, server_delay=120.0) == 120.0  # beyond our cap: still honoured
    assert fixed(0.5).delay(2, server_delay=0.0) == 1.0


@given(
    attempt=st.integers(min_value=0, max_value=200),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    server=st.none() | st.floats(min_value=0.0, max_value=100.0),
)
def test_every_delay_is_within_bounds(attempt: int, draw: float, server: float | None) -> None:
    backoff = fixed(draw)
    delay = backoff.delay(attempt, server)
    assert delay >= 0.0
    assert delay < backoff.ceiling(attempt) or delay == (server or 0.0)
    assert delay >= (server or 0.0)


def test_the_random_source_is_used_once_per_delay() -> None:
    draws = iter([0.25, 0.75])
    backoff = Backoff(random=lambda: next(draws))
    assert (backoff.delay(1), backoff.delay(1)) == (0.25, 0.75)


@pytest.mark.parametrize(
    "arguments", [{"initial": 0.0}, {"initial": 5.0, "maximum": 1.0}, {"multiplier": 0.5}]
)
def test_nonsense_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ClientError):
        Backoff(**arguments)


@pytest.mark.parametrize(
    ("code", "expected"), [(1001, 2.5), (1012, 2.5), (4000, 0.0), (1006, None), (1011, None)]
)
def test_websocket_close_codes_set_the_server_delay(code: int, expected: float | None) -> None:
    """1001/1012: a random pause in the restart window; 4000: come back at once."""
    options = ClientOptions(restart_window=10.0, backoff=fixed(0.25))
    assert closed_by(code, "why", options).server_delay == expected
