"""``tidings bench`` against a real ``tidings serve`` process: the table's shape and sane numbers.

The run is short and small (it is a test, not a benchmark); what it checks holds at any load:
every event reached every subscriber, streams make no request per event while long polling
makes about one, HTTP costs more bytes per event than a WebSocket frame, short polling waits
for its interval, and the server's CPU and memory were read from its process, found by port.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.serve_process import ServeProcess
from tidings.client import TRANSPORTS

UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@pytest.fixture
def served() -> Iterator[ServeProcess]:
    running = ServeProcess().wait_listening()
    yield running
    running.stop()


def _seconds(cell: str) -> float:
    value, unit = cell.split()
    return float(value) * UNITS[unit]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _table(output: str) -> dict[str, dict[str, str]]:
    rows = [line for line in output.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert re.fullmatch(r"\|(---\|)+", rows[1])
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == len(headers), row
        table[cells[0]] = dict(zip(headers, cells, strict=True))
    return table


SHORT_RUN = ["--rate", "20", "--seconds", "1", "--subscribers", "3", "--poll-interval", "0.2"]


def test_bench_prints_the_table_with_measured_numbers(served: ServeProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "bench", served.url, *SHORT_RUN],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    output = result.stdout
    settings = "20 events/s for 1 s per technique, 3 subscribers each, short polls every 0.2 s"
    assert settings in output
    assert f"server PIDs {served.process.pid}" in output
    table = _table(output)
    assert list(table) == list(TRANSPORTS)
    for technique, row in table.items():
        assert row["received"] == "60/60", technique
        assert 0 < _seconds(row["latency p50"]) <= _seconds(row["latency p99"]) < 10
        assert _number(row["bytes down/event"]) > 0
        assert 0 <= _seconds(row["server CPU/event"]) < 0.1
        assert row["memory/connection"].endswith(" KB")
    # CPU time is counted in ticks (10 ms): a short window may hold none, the run as a whole not.
    assert sum(_seconds(row["server CPU/event"]) for row in table.values()) > 0
    requests = {name: _number(row["HTTP requests/event"]) for name, row in table.items()}
    assert requests["websocket"] == requests["sse"] == 0
    assert 0.8 <= requests["long_poll"] <= 1.5
    assert requests["poll"] > 0
    down = {name: _number(row["bytes down/event"]) for name, row in table.items()}
    assert down["websocket"] < down["long_poll"]
    assert down["sse"] < down["long_poll"]
    latency = {name: _seconds(row["latency p50"]) for name, row in table.items()}
    assert latency["poll"] > latency["websocket"]


def test_bench_refuses_a_url_it_cannot_relay() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "bench", "https://127.0.0.1:1", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "give an http:// URL" in result.stderr
