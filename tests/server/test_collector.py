"""The collector of a serving process: frozen start-up heap, rarer young walks."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tidings.server.collector import YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tuning_freezes_what_is_there_and_spaces_the_young_walks() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()
    kept = [object() for _ in range(10)]  # noqa: F841 (alive while tuning)
    tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("restored_collector")
def test_what_comes_after_tuning_is_still_collected() -> None:
    """Cycles made while serving are still found: the collector runs less often, not never."""
    tune_collector()
    freed = []

    class Node:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            freed.append(1)

    for _ in range(3):
        Node()
    assert not freed  # a cycle: reference counting cannot free it
    gc.collect()
    assert len(freed) == 3


SERVE_THEN_REPORT = """
import asyncio, gc, os, signal
from tidings.config import load_settings
from tidings.server.uvloop.server import run

async def main():
    gc.unfreeze()
    before = gc.get_threshold()[0]

    async def report():
        while gc.get_freeze_count() == 0:
            await asyncio.sleep(0.01)
        print(before, gc.get_threshold()[0], flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    reporting = asyncio.ensure_future(report())
    await run(load_settings(environ={"TIDINGS_SERVER_PORT": "0"}))
    await reporting

asyncio.run(main())
"""


def test_the_standalone_server_tunes_its_process_once_listening() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_THEN_REPORT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    assert int(before) == 700  # CPython's default, as the process started
    assert int(after) == YOUNG_THRESHOLD


def test_an_application_that_mounts_tidings_tunes_with_the_same_function() -> None:
    import tidings.asgi

    assert tidings.asgi.tune_collector is tune_collector
