"""One timer for every connection: a wheel of deadline buckets ticked by a single callback.

A long poll's timeout, a request's read deadline and a lingering close each put one entry in a
bucket; answering early removes it in O(1). No connection owns a timer or a task.

Every node's heartbeats, deadlines, presence refreshes and broker checks hang on this one
callback, so an expiry or a job that raises is recorded by the supervisor and the tick goes
on: the next item expires, the next job runs, and the wheel is scheduled again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tidings.supervisor import Supervisor


class Expiring(Protocol):
    """Something with a deadline: ``expire`` runs once the deadline has passed."""

    def expire(self) -> None: ...


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
        self._buckets: dict[int, set[Expiring]] = {}
        self._bucket_of: dict[Expiring, int] = {}
        self._periodic: list[_Periodic] = []
        self._next_slot = self._slot(loop.time())
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _slot(self, when: float) -> int:
        return math.ceil(when / self._resolution)

    def add(self, item: Expiring, delay: float) -> None:
        """Expire ``item`` after ``delay`` seconds (within one resolution step)."""
        self.discard(item)
        slot = max(self._slot(self._loop.time() + delay), self._next_slot)
        self._buckets.setdefault(slot, set()).add(item)
        self._bucket_of[item] = slot

    def discard(self, item: Expiring) -> None:
        slot = self._bucket_of.pop(item, None)
        if slot is not None:
            bucket = self._buckets[slot]
            bucket.discard(item)
            if not bucket:
                del self._buckets[slot]

    def every(self, interval: float, job: Callable[[], None]) -> None:
        """Run ``job`` every ``interval`` seconds from this tick on."""
        self._periodic.append(_Periodic(self._loop.time() + interval, interval, job))

    def _schedule(self) -> None:
        self._handle = self._loop.call_at(self._next_slot * self._resolution, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        current = math.floor(now / self._resolution)  # every slot here has its deadline passed
        run = self._supervisor.run
        for slot in range(self._next_slot, current + 1):
            for item in self._buckets.pop(slot, ()):
                del self._bucket_of[item]
                run(item.expire)
        self._next_slot = current + 1
        self._run_periodic(now)
        self._schedule()

    def _run_periodic(self, now: float) -> None:
        for periodic in self._periodic:
            if now >= periodic.due:
                periodic.due = now + periodic.interval
                self._supervisor.run(periodic.job)
