"""The timer wheel (hub/timers.py) on a real event loop: deadlines, discards, periodic jobs.

Every wait is on the event expected, with a timeout; an item that must *not* expire is checked
after a later item has expired, never after a sleep. An expiry or a job that raises is recorded
and the wheel goes on: everything the node does on a timer hangs on it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import pytest

from tidings.hub.tally import LAG_BUCKETS_MS
from tidings.hub.timers import COARSE_PARTS, MAX_SLEEP_SECONDS, MAX_SLICES, Rounds, TimerWheel
from tidings.supervisor import Supervisor

RESOLUTION = 0.05
# Scheduling jitter of a loaded CI machine on top of the wheel's own step.
SLACK = 0.05
WAIT = 2.0

pytestmark = pytest.mark.timeout(10)


class Item:
    """An Expiring that records when it expired, and how often."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.added_at = loop.time()
        self.expired_at: list[float] = []
        self.done = asyncio.Event()

    def expire(self) -> None:
        self.expired_at.append(self.loop.time())
        self.done.set()

    @property
    def late_by(self) -> float:
        return self.expired_at[0] - self.added_at - self.delay

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), WAIT)


@pytest.fixture
async def wheel() -> AsyncIterator[TimerWheel]:
    timers = TimerWheel(asyncio.get_running_loop(), RESOLUTION)
    timers.start()
    yield timers
    timers.stop()


def add(wheel: TimerWheel, delay: float) -> Item:
    item = Item(asyncio.get_running_loop(), delay)
    wheel.add(item, delay)
    return item


async def test_an_item_expires_within_one_step_after_its_delay(wheel: TimerWheel) -> None:
    item = add(wheel, 0.15)
    await item.wait()
    assert item.expired_at and len(item.expired_at) == 1
    assert -RESOLUTION <= item.late_by <= RESOLUTION + SLACK


async def test_items_expire_in_deadline_order(wheel: TimerWheel) -> None:
    items = [add(wheel, delay) for delay in (0.25, 0.05, 0.15)]
    await asyncio.wait_for(asyncio.gather(*(item.wait() for item in items)), WAIT)
    by_expiry = sorted(items, key=lambda item: item.expired_at[0])
    assert [item.delay for item in by_expiry] == [0.05, 0.15, 0.25]
    for item in items:
        assert item.late_by <= RESOLUTION + SLACK


async def test_items_never_expire_before_their_delay(wheel: TimerWheel) -> None:
    # Deadlines spread finely over two steps, so one lands inside every tick's last step.
    items = [add(wheel, 0.1 + i * RESOLUTION / 10) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*(item.wait() for item in items)), WAIT)
    early = [(item.delay, round(item.late_by, 4)) for item in items if item.late_by < 0]
    assert early == []


async def test_many_items_on_one_deadline_all_expire_once(wheel: TimerWheel) -> None:
    items = [add(wheel, 0.1) for _ in range(50)]
    await asyncio.wait_for(asyncio.gather(*(item.wait() for item in items)), WAIT)
    assert all(len(item.expired_at) == 1 for item in items)


async def test_a_zero_delay_expires_on_the_next_tick(wheel: TimerWheel) -> None:
    item = add(wheel, 0)
    await item.wait()
    assert item.late_by <= RESOLUTION + SLACK


async def test_discard_prevents_expiry(wheel: TimerWheel) -> None:
    discarded = add(wheel, 0.05)
    kept = add(wheel, 0.1)
    wheel.discard(discarded)
    later = add(wheel, 0.2)
    await later.wait()
    assert discarded.expired_at == []
    assert len(kept.expired_at) == 1


async def test_discarding_twice_or_an_unknown_item_is_harmless(wheel: TimerWheel) -> None:
    item = add(wheel, 0.05)
    wheel.discard(item)
    wheel.discard(item)
    wheel.discard(Item(asyncio.get_running_loop(), 0))
    later = add(wheel, 0.1)
    await later.wait()
    assert item.expired_at == []


async def test_re_adding_moves_the_deadline_later(wheel: TimerWheel) -> None:
    item = add(wheel, 0.05)
    item.added_at = asyncio.get_running_loop().time()
    item.delay = 0.3
    wheel.add(item, 0.3)
    sentinel = add(wheel, 0.15)
    await sentinel.wait()
    assert item.expired_at == []  # its first deadline has passed
    await item.wait()
    assert len(item.expired_at) == 1
    assert -RESOLUTION <= item.late_by <= RESOLUTION + SLACK


async def test_re_adding_moves_the_deadline_earlier(wheel: TimerWheel) -> None:
    item = add(wheel, 0.3)
    item.added_at = asyncio.get_running_loop().time()
    item.delay = 0.05
    wheel.add(item, 0.05)
    await item.wait()
    assert item.late_by <= RESOLUTION + SLACK
    sentinel = add(wheel, 0.35)
    await sentinel.wait()
    assert len(item.expired_at) == 1  # not again at its old deadline


async def test_an_item_can_be_added_again_after_it_expired(wheel: TimerWheel) -> None:
    item = add(wheel, 0.05)
    await item.wait()
    item.done.clear()
    wheel.add(item, 0.05)
    await item.wait()
    assert len(item.expired_at) == 2


async def test_an_item_may_re_add_itself_when_it_expires(wheel: TimerWheel) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    done = asyncio.Event()

    class Repeating:
        def expire(self) -> None:
            times.append(loop.time())
            if len(times) < 3:
                wheel.add(self, 0.05)
            else:
                done.set()

    wheel.add(Repeating(), 0.05)
    await asyncio.wait_for(done.wait(), WAIT)
    assert len(times) == 3


async def test_periodic_jobs_run_every_interval(wheel: TimerWheel) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    runs: list[float] = []
    enough = asyncio.Event()

    def job() -> None:
        runs.append(loop.time())
        if len(runs) == 4:
            enough.set()

    wheel.every(0.1, job)
    await asyncio.wait_for(enough.wait(), WAIT)
    gaps = [b - a for a, b in zip([started, *runs], runs, strict=False)]
    assert all(gap >= 0.1 - 1e-6 for gap in gaps), gaps
    assert all(gap <= 0.1 + 2 * RESOLUTION + SLACK for gap in gaps), gaps


async def test_several_periodic_jobs_run_independently(wheel: TimerWheel) -> None:
    fast: list[int] = []
    slow: list[int] = []
    done = asyncio.Event()
    wheel.every(0.05, lambda: fast.append(1))

    def slow_job() -> None:
        slow.append(1)
        done.set()

    wheel.every(0.2, slow_job)
    await asyncio.wait_for(done.wait(), WAIT)
    assert len(slow) == 1
    assert len(fast) >= 2


async def test_a_stopped_wheel_expires_nothing() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, RESOLUTION)
    wheel.start()
    item = add(wheel, 0.05)
    ran: list[int] = []
    wheel.every(0.05, lambda: ran.append(1))
    wheel.stop()
    passed = asyncio.Event()
    loop.call_later(0.25, passed.set)
    await asyncio.wait_for(passed.wait(), WAIT)
    assert item.expired_at == []
    assert ran == []


class Exploding:
    """An Expiring whose expiry raises, as a connection with a bug would."""

    def expire(self) -> None:
        raise RuntimeError("a broken expiry")


def explode() -> None:
    raise RuntimeError("a broken job")


async def test_an_expiry_that_raises_does_not_stop_the_others_or_the_wheel(
    wheel: TimerWheel,
) -> None:
    wheel.add(Exploding(), 0.05)
    same_tick = add(wheel, 0.05)
    later = add(wheel, 0.2)
    await asyncio.wait_for(asyncio.gather(same_tick.wait(), later.wait()), WAIT)
    assert len(same_tick.expired_at) == len(later.expired_at) == 1


async def test_a_periodic_job_that_raises_does_not_stop_the_other_jobs(
    wheel: TimerWheel,
) -> None:
    runs: list[int] = []
    enough = asyncio.Event()

    def counting() -> None:
        runs.append(1)
        if len(runs) == 3:
            enough.set()

    wheel.every(0.05, explode)  # registered first: it runs before the other on every tick
    wheel.every(0.05, counting)
    await asyncio.wait_for(enough.wait(), WAIT)
    item = add(wheel, 0.05)
    await item.wait()  # deadlines still expire too


async def test_what_raised_is_logged_and_counted_by_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()
    wheel = TimerWheel(asyncio.get_running_loop(), RESOLUTION, supervisor)
    wheel.start()
    try:
        wheel.every(0.05, explode)
        wheel.add(Exploding(), 0.05)
        sentinel = add(wheel, 0.15)
        await sentinel.wait()
    finally:
        wheel.stop()
    assert supervisor.failures["explode"] >= 1
    assert supervisor.failures["Exploding.expire"] == 1
    failed = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert {record.exc_info[1].args[0] for record in failed if record.exc_info} == {
        "a broken job",
        "a broken expiry",
    }


# Rounds: members visited once per interval, a slice per tick (heartbeats)


class Visits:
    """What a Rounds visit records: each member's visit times."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {}

    def of(self, member: int) -> Callable[[float], None]:
        return lambda now: self.times.setdefault(member, []).append(now)


def run(call: Callable[[float], None], now: float) -> None:
    call(now)


def test_rounds_fill_their_slices_evenly() -> None:
    rounds: Rounds[int] = Rounds(1.0, RESOLUTION, Visits().of)
    for member in range(600):
        rounds.add(member)
    assert len(rounds) == 600
    assert rounds.slice_sizes() == [30] * 20
    for member in range(0, 600, 2):
        rounds.discard(member)
    for member in range(600, 900):
        rounds.add(member)
    assert max(rounds.slice_sizes()) - min(rounds.slice_sizes()) <= 30


def test_each_member_is_visited_once_per_interval_a_slice_per_tick() -> None:
    visits = Visits()
    rounds: Rounds[int] = Rounds(1.0, RESOLUTION, visits.of)
    for member in range(2000):
        rounds.add(member)
    per_tick = [rounds.tick(step * RESOLUTION + 1e-9, run) for step in range(1000, 1040)]
    assert per_tick == [100] * 40  # 2000 members over 20 slices, never all at once
    assert sorted(visits.times) == list(range(2000))
    for times in visits.times.values():
        assert len(times) == 2
        assert times[1] - times[0] == pytest.approx(1.0)


def test_a_late_tick_visits_every_slice_it_missed_and_no_member_twice() -> None:
    visits = Visits()
    rounds: Rounds[int] = Rounds(1.0, RESOLUTION, visits.of)
    for member in range(200):
        rounds.add(member)
    rounds.tick(100 * RESOLUTION, run)
    assert rounds.tick(105 * RESOLUTION, run) == 50  # five slices late: five slices
    assert rounds.tick(105 * RESOLUTION, run) == 0  # the same step again: nothing
    assert rounds.tick(200 * RESOLUTION, run) == 200  # a whole interval late: everyone once
    assert all(len(times) <= 3 for times in visits.times.values())


def test_members_joining_after_an_empty_spell_wait_for_their_turn() -> None:
    """The wheel sleeps while rounds are empty, so their last tick may be a second old when a
    first member joins: the slices that passed empty are not caught up on, and no member is
    visited before its slice's turn (a WebSocket got a ping within a step of its upgrade)."""
    visits = Visits()
    rounds: Rounds[int] = Rounds(1.0, RESOLUTION, visits.of)
    rounds.tick(100 * RESOLUTION, run)
    for member in range(20):  # one in each slice
        rounds.add(member)
    assert rounds.tick(118 * RESOLUTION, run) == 1  # its own slice's member, not 18
    assert [rounds.tick(step * RESOLUTION, run) for step in range(119, 138)] == [1] * 19
    assert all(len(times) == 1 for times in visits.times.values())
    for member in range(20):
        rounds.discard(member)
    rounds.tick(140 * RESOLUTION, run)
    rounds.add(20)  # into slice 0, which passed at step 140: its turn is step 160
    assert [rounds.tick(step * RESOLUTION, run) for step in range(159, 162)] == [0, 1, 0]


def test_each_visit_counts_how_late_its_slice_came() -> None:
    rounds: Rounds[int] = Rounds(1.0, RESOLUTION, Visits().of)
    for member in range(200):  # ten in each of the twenty slices
        rounds.add(member)
    rounds.tick(100 * RESOLUTION + 0.0001, run)
    assert rounds.delay.count == 10
    assert rounds.delay.counts[0] == 10  # on its turn: within the first bucket (1 ms)
    # five slices due while the loop was held up: late by 200, 150, 100, 50 and 0 ms
    rounds.tick(105 * RESOLUTION + 0.0001, run)
    assert rounds.delay.count == 60
    assert rounds.delay.sum_ms == pytest.approx(10 * 0.1 * 6 + 10 * (200 + 150 + 100 + 50))
    assert rounds.delay.counts[LAG_BUCKETS_MS.index(100.0)] == 10  # 50 ms late
    assert rounds.delay.counts[LAG_BUCKETS_MS.index(250.0)] == 30  # 100 to 200 ms late
    assert sum(rounds.delay.counts[LAG_BUCKETS_MS.index(1.0) + 1 :]) == 40


def test_a_visit_on_its_turn_is_never_counted_early() -> None:
    """At 6554.95 s, floor(now / 0.05) * 0.05 is 6554.950000000001: rounding, not a visit
    before its turn, so it counts as on time."""
    rounds: Rounds[int] = Rounds(0.05, 0.05, Visits().of)
    rounds.add(1)
    now = 6554.95
    assert math.floor(now / 0.05) * 0.05 > now
    rounds.tick(now, run)
    assert rounds.delay.count == 1
    assert rounds.delay.sum_ms == 0.0


def test_a_discarded_member_is_not_visited_and_adding_twice_is_once() -> None:
    visits = Visits()
    rounds: Rounds[int] = Rounds(0.1, RESOLUTION, visits.of)
    rounds.add(1)
    rounds.add(1)
    rounds.add(2)
    rounds.discard(2)
    rounds.discard(3)
    rounds.tick(1.0, run)
    rounds.tick(1.0 + 0.1, run)
    assert list(visits.times) == [1]
    assert 2 not in rounds and 1 in rounds and len(rounds) == 1


async def test_the_wheel_spreads_rounds_over_the_interval(wheel: TimerWheel) -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    members = 400
    enough = asyncio.Event()

    def visit(member: int) -> Callable[[float], None]:
        def beat(now: float) -> None:
            seen.append(loop.time())
            if len(seen) == members:
                enough.set()

        return beat

    rounds = wheel.rounds(0.5, visit)
    for member in range(members):
        rounds.add(member)
    await asyncio.wait_for(enough.wait(), WAIT)
    # ten slices of forty, a tick apart: never more than two slices in one loop turn
    bursts: dict[float, int] = {}
    for at in seen:
        bursts[at] = bursts.get(at, 0) + 1
    assert max(bursts.values()) <= 2 * members // 10
    assert max(seen) - min(seen) >= 0.5 - 2 * RESOLUTION - SLACK


class SteppedLoop:
    """What the wheel asks of a loop, on a clock the test moves: the wheel's one pending
    callback is run by ``run_due`` as the loop would run it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> SteppedLoop:
        self.pending.append((when, callback))
        return self  # the handle: the wheel only cancels it

    def cancel(self) -> None:
        self.pending.clear()

    def run_due(self) -> None:
        due = [entry for entry in self.pending if entry[0] <= self.now]
        self.pending = [entry for entry in self.pending if entry[0] > self.now]
        for _, callback in due:
            callback()


def calls_made(action: Callable[[], None]) -> int:
    """Calls made and lines run by ``action``, in Python: the same count is the same work,
    however busy the machine is (a loop over the items waiting would run its lines for each)."""
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += 1
        return trace

    # the collector could run some earlier test's finalizers inside the action, and they
    # would count as its lines (seen once in a full run, compiled: 105 against 92)
    gc.collect()
    gc.disable()
    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(None)
        gc.enable()
    return count


class Quiet:
    expired = 0

    def expire(self) -> None:
        Quiet.expired += 1


@pytest.mark.parametrize("waiting", [0, 100_000])
def test_a_tick_and_an_add_cost_the_same_however_many_items_wait(waiting: int) -> None:
    """A hundred thousand connections' deadlines further out do not make a tick, or adding
    and discarding one deadline, do any more work (compared with none waiting)."""
    work = []
    for others in (0, waiting):
        loop = SteppedLoop()
        timers = TimerWheel(loop, RESOLUTION)  # type: ignore[arg-type]
        timers.start()
        for _ in range(others):
            timers.add(Quiet(), 60.0)
        due = [Quiet() for _ in range(10)]
        for item in due:
            timers.add(item, 0.0)
        loop.now += RESOLUTION * 2
        Quiet.expired = 0
        tick = calls_made(loop.run_due)
        assert Quiet.expired == 10
        one = Quiet()
        add = calls_made(lambda: timers.add(one, 30.0))  # noqa: B023
        discard = calls_made(lambda: timers.discard(one))  # noqa: B023
        work.append((tick, add, discard))
    assert work[0] == work[1], work


def test_a_long_interval_gets_longer_slices_not_more() -> None:
    """A heartbeat of a day: MAX_SLICES slices of 21 s, each member still visited once."""
    visits = Visits()
    day = 86400.0
    rounds: Rounds[int] = Rounds(day, RESOLUTION, visits.of)
    assert len(rounds.slice_sizes()) == MAX_SLICES
    for member in range(MAX_SLICES * 2):
        rounds.add(member)
    turn = day / MAX_SLICES
    start = 10 * day
    per_tick = [rounds.tick(start + step * RESOLUTION, run) for step in range(0, 1000)]
    assert sum(per_tick) == 2 * math.ceil(1000 * RESOLUTION / turn)  # a slice per turn
    rounds.tick(start + day - turn / 2, run)  # the rest of the round, late
    assert sorted(visits.times) == list(range(MAX_SLICES * 2))
    assert all(len(times) == 1 for times in visits.times.values())


class MillisecondLoop:
    """uvloop's clock as the wheel meets it: ``time()`` in whole milliseconds, a timer's delay
    rounded to the nearest one, and a loop turn that takes a tenth of a millisecond."""

    def __init__(self) -> None:
        self.tenths = 10_000_000  # the clock in tenths of a millisecond
        self.pending: list[tuple[int, Callable[[], None]]] = []
        self.calls = 0

    def time(self) -> float:
        return (self.tenths // 10) / 1000

    def call_at(self, when: float, callback: Callable[[], None]) -> MillisecondLoop:
        delay_ms = max(round((when - self.time()) * 1000), 0)
        self.pending.append(((self.tenths // 10 + delay_ms) * 10, callback))
        return self

    def cancel(self) -> None:
        self.pending.clear()

    def run_for(self, seconds: float) -> None:
        for _ in range(round(seconds * 10_000)):
            due = [entry for entry in self.pending if entry[0] <= self.tenths]
            self.pending = [entry for entry in self.pending if entry[0] > self.tenths]
            for _, callback in due:
                self.calls += 1
                callback()
            self.tenths += 1


def test_the_wheel_runs_once_a_step_on_a_millisecond_clock() -> None:
    """A tick scheduled for the very end of its slot can run half a millisecond early on
    uvloop's clock; it must not find its slot unfinished and run again at every loop turn
    until the clock moves (an idle node woke 141 times a second for 20 ticks; 40 since)."""
    loop = MillisecondLoop()
    timers = TimerWheel(loop, RESOLUTION)  # type: ignore[arg-type]
    expired = []

    class Due:
        def expire(self) -> None:
            expired.append(loop.time())

    timers.start()
    loop.run_for(0.01)
    timers.add(Due(), 0.2)
    added = loop.time()
    loop.run_for(2.0)
    assert loop.calls <= 2.01 / RESOLUTION + 1, loop.calls
    assert len(expired) == 1 and 0.2 <= expired[0] - added <= 0.2 + RESOLUTION + 0.002


def test_an_idle_wheel_sleeps_a_second_at_a_time() -> None:
    """Nothing due: no deadline, no member in the rounds, no periodic job within a second."""
    loop = MillisecondLoop()
    timers = TimerWheel(loop, RESOLUTION)  # type: ignore[arg-type]
    timers.rounds(0.5, Visits().of)  # no member yet
    timers.start()
    loop.run_for(5.0)
    assert loop.calls <= 5 / MAX_SLEEP_SECONDS + 1, loop.calls


def test_far_deadlines_share_coarse_slots_and_are_late_by_a_32nd_at_most() -> None:
    """A thousand connections' 30 s deadlines, made over 30 s, wake the wheel about once a
    second, not once a step; none expires early, none later than its delay / 32."""
    loop = MillisecondLoop()
    timers = TimerWheel(loop, RESOLUTION)  # type: ignore[arg-type]
    timers.start()
    late: list[float] = []

    class Deadline:
        def __init__(self, delay: float) -> None:
            self.due = loop.time() + delay
            timers.add(self, delay)

        def expire(self) -> None:
            late.append(loop.time() - self.due)

    for _ in range(1000):
        Deadline(30.0)
        loop.run_for(0.03)
    calls = loop.calls
    loop.run_for(31.0)
    assert len(late) == 1000
    assert min(late) >= 0 and max(late) <= 30.0 / COARSE_PARTS + 0.002, (min(late), max(late))
    assert loop.calls - calls <= 31.0 * 2, loop.calls - calls  # 620 a step apart


def test_a_sleeping_wheel_wakes_for_a_nearer_deadline_a_job_or_a_first_member() -> None:
    loop = MillisecondLoop()
    timers = TimerWheel(loop, RESOLUTION)  # type: ignore[arg-type]
    seen: list[tuple[str, float]] = []

    class Due:
        def expire(self) -> None:
            seen.append(("deadline", loop.time()))

    def visit(member: int) -> Callable[[float], None]:
        return lambda now: seen.append(("member", loop.time()))

    rounds = timers.rounds(0.2, visit)
    timers.start()
    loop.run_for(0.3)  # asleep now, until a second after it started
    start = loop.time()
    timers.add(Due(), 0.1)
    loop.run_for(0.3)
    timers.every(0.1, lambda: seen.append(("job", loop.time())))
    loop.run_for(0.15)
    rounds.add(1)
    loop.run_for(0.3)
    kinds = [kind for kind, _ in seen]
    assert kinds[:2] == ["deadline", "job"] and "member" in kinds, seen
    deadline, job = seen[0][1], seen[1][1]
    assert 0.1 <= deadline - start <= 0.1 + RESOLUTION + 0.002
    assert 0.4 <= job - start <= 0.4 + RESOLUTION + 0.002
    member = next(at for kind, at in seen if kind == "member")
    assert member - (start + 0.55) <= 0.2 + RESOLUTION + 0.002
