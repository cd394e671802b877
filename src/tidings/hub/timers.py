"""One timer for every connection: a wheel of deadline buckets ticked by a single callback.

A long poll's timeout, a request's read deadline and a lingering close each put one entry in a
bucket; answering early removes it in O(1). No connection owns a timer or a task.

The wheel sleeps while nothing is due: its callback is scheduled for the first bucket that
holds an entry, the next periodic job, or the next step while heartbeat rounds have members,
and a second from now at the latest. A far deadline shares a coarser bucket (a step, or up to
1/32 of its delay, in powers of two), so that thousands of connections' read deadlines and
long-poll timeouts wake the loop about once a second rather than once a step: an idle node,
or one holding long polls, is not woken twenty times a second for nothing.

Heartbeats are ``Rounds``: every member is visited once per interval, each tick visiting the
slice of members whose turn came. A tick's work is the members over the number of slices,
never all of them at once: a hundred thousand streams get their pings spread evenly over the
interval, not written in one burst that holds up every delivery behind it.

Every node's heartbeats, deadlines, presence refreshes and broker checks hang on this one
callback, so an expiry or a job that raises is recorded by the supervisor and the tick goes
on: the next item expires, the next job runs, and the wheel is scheduled again.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tidings.hub.tally import LagHistogram
from tidings.supervisor import Supervisor


class Expiring(Protocol):
    """Something with a deadline: ``expire`` runs once the deadline has passed."""

    def expire(self) -> None: ...


Member = TypeVar("Member")


# How late each tick is scheduled after its slot's end: the event loop's clock resolution.
CLOCK_SLACK = 0.001

# A deadline is late by at most a step or 1/COARSE_PARTS of its delay, whichever is more.
COARSE_PARTS = 32

# The longest the wheel sleeps with nothing due.
MAX_SLEEP_SECONDS = 1.0

# Slices per round at most: a long interval (a heartbeat of a day) gets slices longer than
# the wheel's step rather than a slice for every step (1.7 million of them for a day).
MAX_SLICES = 4096


class Rounds(Generic[Member]):
    """Members visited once per ``interval``, a slice at each of the wheel's ticks.

    A member joins the slice after the last one it filled, so slices stay even however
    members come and go, and its first visit comes within one interval of joining.
    Adding and discarding are O(1); a tick visits the slices whose time came (all the
    slices it missed, if the loop was late), so a member is never skipped. ``delay`` counts,
    once per member visited, how long after its slice's turn the visit came: a loop held up
    (by CPU starvation, or by work that did not yield) shows there.
    """

    def __init__(
        self,
        interval: float,
        resolution: float,
        visit: Callable[[Member], Callable[[float], None]],
        delay: LagHistogram | None = None,
        joined: Callable[[], None] | None = None,
    ) -> None:
        self.interval = interval
        self._first_joined = joined  # called when a first member joins: the wheel wakes
        self.delay = delay if delay is not None else LagHistogram()
        count = max(1, min(MAX_SLICES, round(interval / resolution)))
        self._resolution = interval / count  # a slice's turn: the wheel's step, or longer
        self._slices: list[dict[Member, None]] = [{} for _ in range(count)]
        self._slice_of: dict[Member, int] = {}
        self._visit = visit
        self._joined = 0  # members ever added: the next one goes to the next slice
        self._step: int | None = None  # the wheel step of the last tick

    def add(self, member: Member) -> None:
        if member in self._slice_of:
            return
        if not self._slice_of:
            # the slices passed empty while the wheel slept: none is left to catch up on, or a
            # first member would be visited at once if its slice had passed in that sleep
            self._step = None
            if self._first_joined is not None:
                self._first_joined()
        index = self._joined % len(self._slices)
        self._joined += 1
        self._slices[index][member] = None
        self._slice_of[member] = index

    def update(self, members: Iterator[Member] | set[Member] | list[Member]) -> None:
        for member in members:
            self.add(member)

    def discard(self, member: Member) -> None:
        index = self._slice_of.pop(member, None)
        if index is not None:
            del self._slices[index][member]

    def __len__(self) -> int:
        return len(self._slice_of)

    def __contains__(self, member: object) -> bool:
        return member in self._slice_of

    def __iter__(self) -> Iterator[Member]:
        return iter(tuple(self._slice_of))

    def slice_sizes(self) -> list[int]:
        return [len(members) for members in self._slices]

    def tick(self, now: float, run: Callable[[Callable[[float], None], float], None]) -> int:
        """Visit the slices whose turn came since the last tick; the members visited.

        ``run`` calls each member's visit (the supervisor's, which records what raises).
        """
        step = math.floor(now / self._resolution)
        last = self._step
        if last is not None and step <= last:
            return 0
        self._step = step
        count = len(self._slices)
        first = step if last is None else max(last + 1, step - count + 1)
        visited = 0
        resolution = self._resolution
        for current in range(first, step + 1):
            members = self._slices[current % count]
            if members:
                visited += len(members)
                # below 0 by a rounding at most (counted as 0): the step is floor(now / res)
                self.delay.observe((now - current * resolution) * 1000, len(members))
                for member in tuple(members):  # a visit may end the member's connection
                    run(self._visit(member), now)
        return visited


@dataclass(slots=True)
class _Periodic:
    due: float
    interval: float
    job: Callable[[], None]


class TimerWheel:
    """Deadline buckets of ``resolution`` seconds, and periodic jobs, on one loop callback."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        resolution: float = 0.05,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._loop = loop
        self._supervisor = supervisor or Supervisor()
        self._resolution = resolution
        # a bucket stays, emptied or not, until its slot's tick: its slot is in the heap once
        self._buckets: dict[int, set[Expiring]] = {}
        self._bucket_of: dict[Expiring, int] = {}
        self._slots: list[int] = []  # a heap of the buckets' slots
        self._periodic: list[_Periodic] = []
        self._rounds: list[Rounds[object]] = []
        self._next_slot = self._slot(loop.time())
        self._max_sleep = max(1, round(MAX_SLEEP_SECONDS / resolution))  # in slots
        self._handle: asyncio.TimerHandle | None = None
        self._wake_slot = 0  # the slot the callback is scheduled for
        self._ticking = False

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _slot(self, when: float) -> int:
        return math.ceil(when / self._resolution)

    def add(self, item: Expiring, delay: float) -> None:
        """Expire ``item`` after ``delay`` seconds: within one resolution step after it, or
        1/``COARSE_PARTS`` of ``delay`` for a long one."""
        self.discard(item)
        slot = self._slot(self._loop.time() + delay)
        grain = 1
        while grain * 2 * COARSE_PARTS * self._resolution <= delay:
            grain *= 2
        if grain > 1:
            slot = -(-slot // grain) * grain
        slot = max(slot, self._next_slot)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._slots, slot)
            self._wake_at(slot)
        bucket.add(item)
        self._bucket_of[item] = slot

    def discard(self, item: Expiring) -> None:
        slot = self._bucket_of.pop(item, None)
        if slot is not None:
            self._buckets[slot].discard(item)

    @property
    def resolution(self) -> float:
        return self._resolution

    def rounds(
        self,
        interval: float,
        visit: Callable[[Member], Callable[[float], None]],
        delay: LagHistogram | None = None,
    ) -> Rounds[Member]:
        """Members visited once every ``interval``, spread over it: at each member's turn,
        ``visit(member)(now)`` runs (and its delay is counted in ``delay``)."""
        spread: Rounds[Member] = Rounds(
            interval, self._resolution, visit, delay, lambda: self._wake_at(self._next_slot)
        )
        self._rounds.append(spread)  # type: ignore[arg-type]
        return spread

    def every(self, interval: float, job: Callable[[], None]) -> None:
        """Run ``job`` every ``interval`` seconds from this tick on."""
        due = self._loop.time() + interval
        self._periodic.append(_Periodic(due, interval, job))
        self._wake_at(self._slot(due))

    def beat(self) -> None:
        """Visit the rounds' members whose turn came, now: called from inside long work (a
        fan-out), so that heartbeats do not wait for it. Deadlines and jobs wait for the tick."""
        self._visit_rounds(self._loop.time())

    def _visit_rounds(self, now: float) -> None:
        run = self._supervisor.run
        for spread in self._rounds:
            spread.tick(now, run)

    def _schedule(self) -> None:
        """Sleep until the first slot with something due: a bucket, a periodic job, the next
        step while rounds have members; ``MAX_SLEEP_SECONDS`` at most."""
        first = self._next_slot
        slot = first if any(self._rounds) else first + self._max_sleep
        slot = min(slot, self._slots[0]) if self._slots else slot
        for periodic in self._periodic:
            slot = min(slot, self._slot(periodic.due))
        self._schedule_at(max(slot, first))

    def _schedule_at(self, slot: int) -> None:
        # a millisecond past the slot's end: uvloop's clock counts whole milliseconds and
        # rounds a timer's delay, so a tick due at the very end could run before it, find
        # its slot not yet over, and be scheduled again and again until the clock moved on
        self._wake_slot = slot
        when = slot * self._resolution + CLOCK_SLACK
        self._handle = self._loop.call_at(when, self._tick)

    def _wake_at(self, slot: int) -> None:
        """Something is due at ``slot``: wake then if the wheel sleeps longer (a tick under
        way schedules the next itself, when it ends)."""
        if self._handle is None or self._ticking or slot >= self._wake_slot:
            return
        self._handle.cancel()
        self._schedule_at(max(slot, self._next_slot))

    def _tick(self) -> None:
        now = self._loop.time()
        current = math.floor(now / self._resolution)  # every slot here has its deadline passed
        run = self._supervisor.run
        slots = self._slots
        self._next_slot = current + 1  # what an expiry adds again goes to a later slot
        self._ticking = True
        try:
            while slots and slots[0] <= current:
                for item in self._buckets.pop(heapq.heappop(slots)):
                    del self._bucket_of[item]
                    run(item.expire)
            self._visit_rounds(now)
            self._run_periodic(now)
        finally:
            self._ticking = False
        self._schedule()

    def _run_periodic(self, now: float) -> None:
        for periodic in self._periodic:
            if now >= periodic.due:
                # from when the job starts, not from the tick: what ran before it in this tick
                # must not bring its next run closer than ``interval``
                periodic.due = self._loop.time() + periodic.interval
                self._supervisor.run(periodic.job)
