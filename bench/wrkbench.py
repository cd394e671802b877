"""What the wrk benchmarks (shortpoll.py, publish.py) share: the server and wrk options, the
settings fanout.start_server reads, the checks and signal handling before a run, one run of wrk
and what it cost, the medians of repeated runs and the report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fanout
from fanout import REPO_DIR, ManagedProcess, log

UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}  # wrk's units of time


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
    fanout.interrupt_on_sigterm()
    return sorted({int(args.server_cpu), int(args.wrk_cpu)})


@dataclass
class WrkRun:
    """What one run of wrk printed and what it cost (CPU times in seconds)."""

    text: str
    returncode: int
    log_tail: str
    wall: float
    server_s: float
    wrk_s: float
    busy_s: float  # the cores' busy time, everyone's

    def cpu(self, seconds: float) -> dict[str, float]:
        """The server's CPU time and share of a core, wrk's share over the seconds it reports,
        and other processes' share of a core on the cores."""
        return {
            "serverCpuS": self.server_s,
            "serverCpuPct": 100 * self.server_s / self.wall,
            "wrkCpuPct": 100 * self.wrk_s / seconds,
            "otherCpuPct": max(0.0, 100 * (self.busy_s - self.server_s - self.wrk_s) / self.wall),
        }


def run_wrk(
    name: str,
    argv: list[str],
    tmp: Path,
    out_name: str,
    server_cpu: Callable[[], float],
    cores: list[int],
    duration: float,
) -> WrkRun:
    """Run wrk to its end (at most duration + 30 s), its output in tmp / out_name."""
    out_path = tmp / out_name
    with open(out_path, "wb") as out:
        wrk = ManagedProcess(name, argv, tmp / "wrk.log", stdout=out)
        b0, s0, t0 = fanout.cpu_busy_ticks(cores), server_cpu(), time.monotonic()
        # wrk's own CPU: sampled just before it exits (a reaped process has no /proc entry)
        w0 = w1 = fanout.cpu_seconds([wrk.pid])
        deadline = time.monotonic() + duration + 30
        while wrk.alive() and time.monotonic() < deadline:
            w1 = max(w1, fanout.cpu_seconds([wrk.pid]))
            time.sleep(0.05)
        if wrk.alive():
            wrk.stop()
            raise RuntimeError(f"wrk did not finish in {duration + 30:g} s")
        s1, t1, b1 = server_cpu(), time.monotonic(), fanout.cpu_busy_ticks(cores)
        wrk.stop()
    return WrkRun(
        out_path.read_text(errors="replace"),
        wrk.proc.returncode,
        wrk.log_tail(),
        t1 - t0,
        s1 - s0,
        w1 - w0,
        fanout.busy_seconds(b0, b1, cores),
    )


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number that every run has."""
    return {
        key: statistics.median(r[key] for r in runs)
        for key in runs[0]
        if isinstance(runs[0][key], (int, float))
        and not isinstance(runs[0][key], bool)
        and all(isinstance(r.get(key), (int, float)) for r in runs)
    }


def header(title: str, script: str, argv: list[str] | None, args: argparse.Namespace) -> str:
    """The report's title, command line, machine, cores and commit; the script's own
    settings follow."""
    return (
        f"## {title}, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n"
        f"`python3 bench/{script} {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
        f"Machine: {os.cpu_count()} CPUs ({fanout.cpu_model()}); server on core "
        f"{args.server_cpu}, wrk on core {args.wrk_cpu}. Commit {fanout.git_rev()}. "
    )


def write_report(
    args: argparse.Namespace,
    report: str,
    results: Any,
    interrupted: bool,
    failed: bool,
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
