"""Counting the pub/sub link's retries from its log, wherever the link runs.

A link that stopped retrying says nothing more: the count is how a test tells that it goes
on. The log is read, not the link's internals, so the same test holds whatever the link
keeps inside; a server in another thread is counted too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tidings.brokers import redis_link

DEADLINE = 60.0
RETRYING = "retrying in"


class Retries(logging.Handler):
    """Counts the link's "retrying in" warnings; ``reach(n)`` waits for the n-th."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.loop = loop
        self.count = 0
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if RETRYING in record.getMessage():
            self.count += 1
            self.loop.call_soon_threadsafe(self._changed.set)

    async def reach(self, count: int) -> None:
        async def wait() -> None:
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(
                f"the pub/sub link stopped retrying after {self.count} failures"
            ) from None


@contextmanager
def counting_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[Retries]:
    """Retries at once (a backoff of a fraction of a millisecond), counted in the log.

    A thousand failures in a row then take a second or two instead of the hour of outage
    they take with the real backoff.
    """
    monkeypatch.setattr(redis_link, "BACKOFF_FIRST", 0.0001)
    monkeypatch.setattr(redis_link, "BACKOFF_CAP", 0.0005)
    retries = Retries(asyncio.get_running_loop())
    logger = logging.getLogger(redis_link.log.name)
    logger.addHandler(retries)
    try:
        yield retries
    finally:
        logger.removeHandler(retries)
