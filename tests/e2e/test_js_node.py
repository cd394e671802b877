"""tidings.js under Node: its unit tests, and its smoke tests against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningServer

JS = Path(__file__).resolve().parents[2] / "js"
NODE = shutil.which("node")


def require_node() -> str:
    if NODE is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed: CI must run the browser client's tests")
        pytest.skip("NODE IS MISSING: tidings.js tests did not run (install nodejs)")
    return NODE


def run_node(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [require_node(), *args],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def counts(output: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"^# (pass|fail|skipped) (\d+)$", output, re.M)}


def test_unit_tests_pass() -> None:
    summary = counts(run_node("--test", "test/"))
    assert summary["fail"] == 0
    assert summary["pass"] >= 50


def test_smoke_tests_pass_against_a_real_server(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(namespaces__smoke__client_publish=True)
    output = run_node(
        "--experimental-websocket",
        "--test",
        "test/smoke.test.js",
        env={"TIDINGS_URL": server.url},
    )
    summary = counts(output)
    assert summary["fail"] == 0
    assert summary["skipped"] == 0
    assert summary["pass"] >= 6
