"""Work that must run for the node's life: what it did not expect is logged, counted, survived.

A timer job, a fan-out write or a broker's link keeper that raises must neither take the rest
of the node down with it nor end without a word. Each runs under its node's one
``Supervisor``, which logs the error with its traceback, counts it in ``failures`` under the
name of the loop or job that raised (the ``/metrics`` counter of unexpected errors), and lets
the work go on:

- ``record(where, error)``: a loop that caught what it did not expect reports it, then goes on
  with its next item. The fan-out does this inline: a call per delivery is too dear there.
- ``run(call, *args)``: one callback that must not break its caller (a timer's job).
- ``keep(where, body, backoff)``: a task for the node's life. Each time ``body`` raises, it is
  started again after a backoff; it ends when ``body`` returns (its work is over) or when the
  task is cancelled. A keeper that ended in any other way is reported by ``ended``.

Cancellation is never caught: it is how the node stops its own work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

from tidings.client.backoff import Backoff

log = logging.getLogger("tidings.supervisor")

Args = TypeVarTuple("Args")


class Supervisor:
    """Unexpected errors of one node's long-lived work, logged and counted by where they were."""

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}  # loop or job name -> errors it did not expect

    @property
    def total(self) -> int:
        return sum(self.failures.values())

    def record(self, where: str, error: BaseException) -> None:
        """``where`` raised ``error``, which it did not expect; the work goes on."""
        self.failures[where] = self.failures.get(where, 0) + 1
        log.error("%s failed unexpectedly; carrying on", where, exc_info=error)

    def run(self, call: Callable[[*Args], object], *args: *Args) -> None:
        """Call ``call(*args)``; what it raises is recorded under its qualified name."""
        try:
            call(*args)
        except Exception as error:
            self.record(name_of(call), error)

    async def keep(self, where: str, body: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
        """Run ``body`` until it returns, starting it again after a backoff whenever it raises.

        Crashes in a row lengthen the pause; a run that lasted longer than the longest pause
        starts the count again.
        """
        loop = asyncio.get_running_loop()
        crashes = 0
        while True:
            started = loop.time()
            try:
                await body()
                return
            except Exception as error:
                self.record(where, error)
            if loop.time() - started > backoff.maximum:
                crashes = 0
            await asyncio.sleep(backoff.delay(crashes))
            crashes += 1

    def ended(self, where: str, task: asyncio.Task[None]) -> None:
        """A kept task is over: anything but a cancellation or a return is recorded."""
        if not task.cancelled() and (error := task.exception()) is not None:
            self.record(where, error)


def name_of(work: object) -> str:
    """A stable label for a callable or a coroutine: ``Class.method``, or the function's name."""
    name = getattr(work, "__qualname__", None)
    return name if isinstance(name, str) else type(work).__qualname__
