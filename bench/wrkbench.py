"""What the wrk benchmarks (shortpoll.py, publish.py) share: the server and wrk options, the
settings fanout.start_server reads, and the checks and signal handling before a run."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import fanout
from fanout import REPO_DIR, log


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """The cores, nice value and commands of the server under test and of wrk."""
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--wrk-cpu", default="1")
    p.add_argument("--nice", type=int, default=0, help="nice value for the server and wrk")
    p.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    p.add_argument("--tidings-cmd", default=str(REPO_DIR / ".venv" / "bin" / "tidings"))
    p.add_argument("--tidings-args", default="", help="extra arguments for `tidings serve`")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--start-timeout", type=float, default=20.0)


def server_settings(args: argparse.Namespace) -> None:
    """What fanout.start_server reads besides the options above."""
    args.nchan_module = fanout.nchan_module_path() if "nchan" in args.targets else None
    args.backlog, args.nchan_buffer, args.tidings_broker = 4096, 32, "memory"
    args.workers_cpus = args.server_cpu


def prepare(args: argparse.Namespace) -> list[int]:
    """Raise the file limit, check the tools, turn SIGTERM into a clean stop; the cores used."""
    args.nofile = fanout.raise_nofile()
    for tool in ("taskset", args.wrk):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    return sorted({int(args.server_cpu), int(args.wrk_cpu)})


def write_report(
    args: argparse.Namespace, report: str, results: Any, interrupted: bool, failed: bool,
    workdir: Path,
) -> int:
    """Print the report, write it and its JSON to --out, keep the logs only when a cell failed;
    the exit status."""
    if interrupted:
        report = "**Interrupted: partial results.**\n\n" + report
    print(report)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(report + "\n")
    out_path.with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1, default=str)
    )
    if failed:
        log(f"keeping logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"wrote {out_path} and {out_path.with_suffix('.json')}")
    return 130 if interrupted else 0
