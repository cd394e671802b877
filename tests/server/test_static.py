"""Shipped files are read before the first request, off the event loop: no request waits on
the disk (a blocking read on the loop would stall every connection of the node)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tidings.server.core.ops import static


def test_the_first_request_reads_nothing_from_disk(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_disk(*args: Any) -> Any:
        raise AssertionError("a shipped file was read while serving a request")

    monkeypatch.setattr(static.resources, "files", no_disk)
    for path in ("/tidings.js", "/lab", "/admin"):
        answer = httpx.get(server.url + path, timeout=10)
        assert answer.status_code == 200 and answer.content, path


async def test_files_are_read_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    read_all = static._read_all

    def watched() -> dict[str, static.StaticFile]:
        threads.append(threading.current_thread())
        return read_all()

    monkeypatch.setattr(static, "_read_all", watched)
    files = await static.StaticFiles.load()
    assert threads and threads[0] is not threading.main_thread()
    assert b"class Tidings" in files.get("tidings.js").body
