"""The command line as a user runs it: ``tidings serve`` in a subprocess, ``tidings publish``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve_process import ServeProcess
from tidings.cli import main

TIDINGS = [sys.executable, "-m", "tidings.cli"]


@pytest.fixture
def serve() -> Iterator[tuple[subprocess.Popen[str], int]]:
    running = ServeProcess().wait_listening()
    yield running.process, running.port
    running.stop()


def test_serve_publish_and_stop_on_sigterm(serve: tuple[subprocess.Popen[str], int]) -> None:
    process, port = serve
    url = f"http://127.0.0.1:{port}"
    published = subprocess.run(
        [*TIDINGS, "publish", "news", '{"headline": "hi"}', "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert published.returncode == 0, published.stderr
    cursor = published.stdout.strip()
    epoch, offset = cursor.split(".")
    assert offset == "1"
    answer = httpx.get(f"{url}/poll", params={"channel": "news", "since": f"{epoch}.0"}).json()
    assert [event["data"] for event in answer["events"]] == [{"headline": "hi"}]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


def test_sigint_stops_cleanly_too(serve: tuple[subprocess.Popen[str], int]) -> None:
    process, _ = serve
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0


def test_a_bad_configuration_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text('[namespaces.chat]\nslow_consumer = "sometimes"\n')
    result = subprocess.run(
        [*TIDINGS, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "namespaces.chat.slow_consumer" in result.stderr


def test_an_environment_value_of_the_wrong_type_names_the_key() -> None:
    result = subprocess.run(
        [*TIDINGS, "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TIDINGS_SERVER_MAX_POLL_SECONDS": "soon"},
    )
    assert result.returncode == 2
    assert "server.max_poll_seconds" in result.stderr


def test_publish_to_a_server_that_is_not_there_fails_clearly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["publish", "news", "1", "--url", "http://127.0.0.1:9"]) == 1
    assert "could not reach http://127.0.0.1:9" in capsys.readouterr().err


def test_publish_refused_by_the_server_shows_its_error(
    serve: tuple[subprocess.Popen[str], int], capsys: pytest.CaptureFixture[str]
) -> None:
    _, port = serve
    assert main(["publish", "bad channel!", "1", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert "400 invalid_channel" in capsys.readouterr().err
