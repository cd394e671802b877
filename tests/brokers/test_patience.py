"""Deadlines counted in time the loop could run (brokers/patience.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.brokers.patience import STEP, Patience

pytestmark = pytest.mark.timeout(20)


async def test_a_future_done_in_time_is_waited_for_and_its_time_counted() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_later(0.1, future.set_result, None)
    patience = Patience(1.0)
    assert await patience.wait(future)
    assert 0.85 <= patience.left <= 0.95
    assert await patience.wait(future)  # done already: at once, nothing more counted
    assert 0.85 <= patience.left <= 0.95


async def test_a_future_never_done_runs_the_patience_out_on_time() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    assert not await Patience(0.6).wait(future)
    assert 0.6 <= time.monotonic() - started < 0.6 + STEP
    assert not future.cancelled()  # left to the caller


async def test_time_the_loop_was_held_up_does_not_count() -> None:
    """Half a second of patience; the loop held up for 1.5 s (a starved process) just after
    the wait began; the answer comes 0.1 s of running time after that: it is in time."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def held_up() -> None:
        time.sleep(1.5)
        loop.call_later(0.1, future.set_result, None)

    loop.call_later(0.05, held_up)
    patience = Patience(0.5)
    assert await patience.wait(future)
    assert patience.left > 0


async def test_a_loop_held_up_again_and_again_still_runs_out() -> None:
    """Every step woken late still counts for the time it asked: a broker that is gone is
    found out however held up the loop is."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    holding = True

    def hold() -> None:
        if holding:
            time.sleep(0.3)
            loop.call_later(0.01, hold)

    hold()
    try:
        assert not await Patience(0.5).wait(future)
    finally:
        holding = False


async def test_a_bounded_wait_ends_after_at_most_and_keeps_the_rest() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    patience = Patience(1.0)
    started = time.monotonic()
    assert not await patience.wait(future, at_most=0.3)
    assert 0.3 <= time.monotonic() - started < 0.3 + STEP
    assert 0.65 <= patience.left <= 0.7  # what the bounded wait spent, and no more
    assert not await patience.wait(future, at_most=5.0)  # the patience runs out first
    assert patience.left <= 0
