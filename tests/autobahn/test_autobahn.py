"""Autobahn's WebSocket cases 1 to 10 against a real node whose ``/ws`` echoes (``echo.py``).

kosoku runs Autobahn's own case files as a fuzzing client (one connection per case to the
echo at ``/ws``) and writes Autobahn's report: ``index.json`` with each case's verdicts and
one JSON file per case. Cases 1 to 10 are framing, pings, reserved bits and opcodes,
fragmentation, UTF-8, closing and large messages (9.x); 12 and 13 need permessage-deflate,
which Tidings does not offer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.serve_process import ServeProcess

# Autobahn has no group 8; 1 to 10 is 301 cases, and a run that reports fewer missed some.
GROUPS = ("1", "2", "3", "4", "5", "6", "7", "9", "10")
MIN_CASES = 301
# Autobahn's verdicts that pass: NON-STRICT breaks a SHOULD, not a MUST; INFORMATIONAL
# probes what RFC 6455 leaves open.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}
ECHO_COMMAND = [sys.executable, "-m", "tests.autobahn.echo"]
ECHO_ENV = {
    # case 9.1.6 and 9.2.6 send 16 MiB messages
    "TIDINGS_SERVER_MAX_MESSAGE_BYTES": str(16 * 1024 * 1024),
    # a heartbeat ping would arrive in the middle of a case as an event it does not expect
    "TIDINGS_SERVER_HEARTBEAT_SECONDS": "3600",
}
RUN_SECONDS = 480  # the whole run takes about 15 s on the 2-core development machine


def kosoku_command() -> list[str]:
    """The kosoku console script installed beside this Python (the ``test`` extra)."""
    beside = Path(sys.executable).parent / "kosoku"
    found = str(beside) if beside.exists() else shutil.which("kosoku")
    if found:
        return [found]
    if os.environ.get("CI") == "true":
        pytest.fail("kosoku is missing: CI must run the Autobahn suite (pip install -e '.[test]')")
    pytest.skip("KOSOKU IS MISSING: the Autobahn WebSocket suite did not run")


@pytest.fixture
def echo_server() -> Any:
    server = ServeProcess(env=ECHO_ENV, command=ECHO_COMMAND).wait_listening()
    yield server
    server.stop()


def read_report(outdir: Path) -> dict[str, dict[str, Any]]:
    """Case id -> its index entry, for the one agent (our server) the run tested."""
    index = json.loads((outdir / "index.json").read_text())
    assert len(index) == 1, f"expected one agent in the report, got {sorted(index)}"
    cases: dict[str, dict[str, Any]] = next(iter(index.values()))
    return cases


def describe(outdir: Path, case_id: str, entry: dict[str, Any]) -> str:
    case = json.loads((outdir / entry["reportfile"]).read_text())
    return (
        f"  {case_id}: {entry['behavior']} / close {entry['behaviorClose']}"
        f" (we closed with {entry['remoteCloseCode']}): {case['description']}"
        f"\n      expected: {case['expectation']}\n      got: {case['result']}"
        f"\n      close: {case['resultClose']}"
    )


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


@pytest.mark.timeout(RUN_SECONDS + 60)
def test_autobahn_cases_1_to_10_pass(echo_server: ServeProcess, tmp_path: Path) -> None:
    command = kosoku_command()
    outdir = tmp_path / "reports"
    selection = [arg for group in GROUPS for arg in ("-i", f"{group}.*")]
    url = f"ws://127.0.0.1:{echo_server.port}/ws"
    run = subprocess.run(
        [*command, "-m", "fuzzingclient", url, *selection, "-o", str(outdir)],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    assert (outdir / "index.json").exists(), (
        f"kosoku wrote no report (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"
    )
    cases = read_report(outdir)
    failed = [
        describe(outdir, case_id, entry)
        for case_id, entry in sorted(cases.items(), key=lambda item: case_key(item[0]))
        if entry["behavior"] not in PASSING or entry["behaviorClose"] not in PASSING_CLOSE
    ]
    assert not failed, f"{len(failed)} Autobahn cases failed:\n" + "\n".join(failed)
    assert run.returncode == 0, f"kosoku failed:\n{run.stdout}\n{run.stderr}"
    assert {case_id.split(".")[0] for case_id in cases} == set(GROUPS)
    assert len(cases) >= MIN_CASES, f"only {len(cases)} cases ran"
    assert echo_server.alive, "the server died during the run:\n" + echo_server.logs()
    assert "Traceback" not in echo_server.logs(), echo_server.logs()
