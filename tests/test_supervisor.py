"""The supervisor (supervisor.py): what long-lived work did not expect is logged, counted,
and survived; cancellation still stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidings.client.backoff import Backoff
from tidings.supervisor import Supervisor, name_of

pytestmark = pytest.mark.timeout(10)

QUICK = Backoff(0.001, 0.002)


def broken() -> None:
    raise ValueError("a bug")


def test_run_records_what_raised_under_its_name(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    supervisor.run(broken)
    supervisor.run(broken)
    supervisor.run(len, "fine")
    assert supervisor.failures == {"broken": 2}
    assert supervisor.total == 2
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2 and errors[0].exc_info is not None
    assert "broken failed unexpectedly" in errors[0].getMessage()


def test_names_are_qualified() -> None:
    class Connection:
        def expire(self) -> None: ...

    assert name_of(Connection().expire).endswith("Connection.expire")
    assert name_of(object()) == "object"


async def test_keep_starts_a_body_again_each_time_it_raises() -> None:
    supervisor = Supervisor()
    runs: list[int] = []

    async def body() -> None:
        runs.append(1)
        if len(runs) < 4:
            raise RuntimeError("not yet")

    await asyncio.wait_for(supervisor.keep("loop", body, QUICK), 5)
    assert len(runs) == 4
    assert supervisor.failures == {"loop": 3}


async def test_keep_ends_when_cancelled_and_counts_nothing_for_it() -> None:
    supervisor = Supervisor()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(supervisor.keep("loop", forever, QUICK))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    supervisor.ended("loop", task)
    assert supervisor.failures == {}


async def test_ended_records_a_task_that_died_of_what_no_one_catches() -> None:
    class Fatal(BaseException):
        pass

    async def dying() -> None:
        raise Fatal

    supervisor = Supervisor()
    task = asyncio.get_running_loop().create_task(supervisor.keep("loop", dying, QUICK))
    with pytest.raises(Fatal):
        await task
    supervisor.ended("loop", task)
    assert supervisor.failures == {"loop": 1}
