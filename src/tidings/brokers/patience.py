"""Deadlines for a broker's round trips, counted in time the event loop could run.

A node starved of CPU (a storm of connections, a machine shared with its clients) or held up
by long work (a fan-out to many thousands) reads a reply late that came on time. Measured on
the wall clock, its readiness check would then fail and its link would be rebuilt, on the
node that has the least time to spare for a resync. So a round trip's deadline is counted in
steps of at most ``STEP`` seconds, and a step that woke later than asked counts only for the
time asked: the rest the loop could not run, and could not have read the reply.

A broker that really is gone is still found out: every step the loop does run counts.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

STEP = 0.25
# A client library's own deadline is on the wall clock: under a patience it is set this many
# times longer, and left to the patience, so that only time the loop could run counts.
SLACK = 10


class Patience:
    """``seconds`` of running time, shared by the waits of one operation."""

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    async def wait(self, future: asyncio.Future[Any], at_most: float = math.inf) -> bool:
        """Until ``future`` is done (True), or the patience has run out or ``at_most``
        seconds of running time have passed (False). The future is never cancelled: the
        caller decides what becomes of a late one."""
        loop = asyncio.get_running_loop()
        while not future.done():
            if self.left <= 0 or at_most <= 0:
                return False
            step = min(self.left, at_most, STEP)
            asked = loop.time()
            await asyncio.wait({future}, timeout=step)
            # a wake-up later than asked: the loop was held up for the difference
            spent = min(loop.time() - asked, step)
            self.left -= spent
            at_most -= spent
        return True


def retrieve(task: asyncio.Task[Any]) -> None:
    """A done callback for a call left to finish late: fetch its outcome, so that a late
    failure is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()
