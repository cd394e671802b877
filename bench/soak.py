#!/usr/bin/env python3
"""Soak test: one `tidings serve` under a steady mixed load for half an hour.

10,000 subscribers over the four techniques (WebSocket, SSE, long poll, short poll), a tenth of
them reconnecting from their cursors every minute, a steady publish rate over ten channels and
two slow readers that the slow-consumer policy cuts. Every minute it prints the server's RSS and
open files, the events delivered, their p99 lag per technique, and the losses, duplicates,
reorderings and resets seen so far; at the end a verdict: nothing lost, duplicated or out of
order, no reset that history could have covered, RSS flat within 5 % after warm-up and the open
files back to the baseline once the clients are gone. See bench/README.md ("Soak").

The server is pinned to core 0, the load generator (bench/soakgen.js, Node.js) to core 1. All
traffic goes to 127.0.0.1. Every process it starts is stopped by its PID at the end, on errors
and on Ctrl-C. Standard library only; not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fanout import (
    CLK_TCK,
    REPO_DIR,
    LineDriven,
    ManagedProcess,
    cpu_busy_ticks,
    cpu_seconds,
    find_redis_pid,
    free_port,
    git_rev,
    interrupt_on_sigterm,
    log,
    pinned,
    raise_nofile,
    redis_delete_prefix,
    rss_kb,
    stop_all,
    wait_healthy,
)

BENCH_DIR = Path(__file__).resolve().parent
SOAKGEN = BENCH_DIR / "soakgen.js"
TECHNIQUES = ("websocket", "sse", "long_poll", "short_poll")
SHORT = {"websocket": "ws", "sse": "sse", "long_poll": "lp", "short_poll": "sp"}
RSS_FLAT = 0.05  # after warm-up, RSS stays within 5 % (max over min)
CORES = list(range(os.cpu_count() or 1))
REDIS_PORT = 6379
# The Redis broker's command pool (brokers/redis.py POOL_SIZE) plus its pub/sub link and the
# link's ping connection: it opens connections as concurrency needs them and keeps them.
REDIS_POOL_MAX = 32 + 2

CONFIG = """\
[server]
max_poll_seconds = 30
write_buffer_limit = {write_buffer_limit}
lab = false

[namespaces.default]
history_size = {history_size}
history_ttl_seconds = {history_ttl}

[namespaces.slow]
history_size = {bulk_history_size}
history_ttl_seconds = {history_ttl}
"""


class SoakGen(LineDriven):
    """The soak's Node.js load generator (``soakgen.js``)."""

    def __init__(self, argv: list[str], log_path: Path):
        super().__init__(
            ManagedProcess("soakgen", argv, log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        )


def renice_group(mp: ManagedProcess, nice: int) -> None:
    """Give the process's own scheduling group the nice value too.

    Every process we start leads a new session, and with ``sched_autogroup`` each session is a
    group that the scheduler shares the CPU with as a whole: a process's own nice value then
    only weighs against the rest of its session, not against the other work on the machine.
    """
    if nice:
        try:
            Path(f"/proc/{mp.pid}/autogroup").write_text(str(nice))
        except OSError as exc:
            log(f"could not set the scheduling group's nice value of {mp.name}: {exc}")


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def heap_kb(pid: int) -> int:
    """The size of the process's C heap (the ``[heap]`` mapping that malloc grows with brk),
    resident or not: it grows only when the allocator needs more room, whereas the RSS also
    grows as pages of the heap already there are written for the first time."""
    size = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps") as smaps:
        in_heap = False
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                in_heap = line.rstrip().endswith("[heap]")
            elif in_heap and line.startswith("Size:"):
                size += int(line.split()[1])
    return size


def broker_sockets(pid: int, port: int) -> int:
    """How many of the process's descriptors are TCP connections to ``port`` (the broker)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def metrics(port: int) -> dict[str, float]:
    """The server's counters from /metrics (loopback needs no key)."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out


def wait_files(pid: int, target: int, timeout: float) -> int:
    """Wait (bounded) until the server holds at most ``target`` descriptors besides its
    connections to Redis; the last count of all its descriptors."""
    deadline = time.monotonic() + timeout
    count = open_files(pid)
    while count - broker_sockets(pid, REDIS_PORT) > target and time.monotonic() < deadline:
        time.sleep(0.2)
        count = open_files(pid)
    return count


def split_counts(total: int, mix: dict[str, float]) -> dict[str, int]:
    weights = sum(mix.values())
    counts = {t: int(total * mix.get(t, 0) / weights) for t in TECHNIQUES}
    counts["websocket"] += total - sum(counts.values())
    return counts


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name not in TECHNIQUES:
            raise argparse.ArgumentTypeError(f"unknown technique {name!r} in --mix")
        mix[name] = float(value)
    return mix


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=30, help="minutes of load (default 30)")
    p.add_argument("--broker", default="memory", help="memory, redis, or a broker URL")
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--rate", type=float, default=20.0, help="publishes per second, all channels")
    p.add_argument("--channels", type=int, default=10)
    p.add_argument(
        "--mix",
        type=parse_mix,
        default=parse_mix("websocket=40,sse=40,long_poll=15,short_poll=5"),
        help="share of each technique (default websocket=40,sse=40,long_poll=15,short_poll=5)",
    )
    p.add_argument("--churn", type=float, default=0.1, help="share reconnecting per minute")
    p.add_argument("--short-poll-seconds", type=float, default=5.0)
    p.add_argument("--slow-readers", type=int, default=2, help="on every channel, WS and SSE")
    p.add_argument("--slow-pause", type=float, default=25.0, help="seconds a slow reader stops")
    p.add_argument("--slow-read", type=float, default=20.0, help="seconds it reads in between")
    p.add_argument(
        "--bulk-rate",
        type=float,
        default=30.0,
        help="publishes/s on the channel only the slow readers follow (large events)",
    )
    p.add_argument("--bulk-pad-bytes", type=int, default=10000)
    p.add_argument("--bulk-history-size", type=int, default=1000)
    p.add_argument("--pad-bytes", type=int, default=300, help="padding in every event's data")
    p.add_argument("--history-size", type=int, default=300)
    p.add_argument("--history-ttl", type=float, default=300.0)
    p.add_argument("--write-buffer-limit", type=int, default=65536)
    p.add_argument(
        "--warmup-minutes",
        type=int,
        default=None,
        help="minutes left out of the RSS check (default 5, or a third of a shorter run)",
    )
    p.add_argument("--server-log-level", default="warning", help="info logs every connection")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice value of the server and the load generator (negative needs root)",
    )
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument("--tidings", default=str(REPO_DIR / ".venv" / "bin" / "tidings"))
    p.add_argument("--node", default="node")
    p.add_argument("--out", default=str(BENCH_DIR / "results"), help="where reports go")
    args = p.parse_args(argv)
    if args.warmup_minutes is None:
        args.warmup_minutes = min(5, max(1, args.minutes // 3))
    if not 1 <= args.minutes <= 120:
        p.error("--minutes: 1 to 120")
    return args


def broker_url(args: argparse.Namespace, prefix: str) -> str:
    if args.broker == "memory":
        return "memory://"
    if args.broker == "redis":
        return f"redis://127.0.0.1:6379/0?prefix={prefix}"
    return str(args.broker)


# --------------------------------------------------------------------------- report


def fmt_ms(v: Any) -> str:
    return "-" if v is None else f"{v:,}"


def row(m: dict[str, Any]) -> list[str]:
    t = m["gen"]["totals"]
    conn = m["gen"]["connected"]
    return [
        str(m["minute"]),
        f"{m['rss_kb'] / 1024:.1f}",
        f"{m['heap_kb'] / 1024:.1f}",
        f"{m['files']:,}",
        f"{sum(conn.values()):,}",
        f"{m['gen']['acked']:,}",
        f"{sum(m['gen']['received'].values()):,}",
        " / ".join(fmt_ms(m["gen"]["p99ms"][k]) for k in TECHNIQUES),
        f"{t['churned']:,}",
        f"{t['slowReaderCloses']}",
        f"{sum(t['serverCloses'].values())}",
        f"{m['gen']['openGaps']}",
        f"{t['duplicates']}",
        f"{t['outOfOrder']}",
        f"{t['resets']} ({t['resetsUnjustified']})",
        f"{m['cpu_pct']:.0f}",
        f"{m['other_pct']:.0f}",
    ]


HEADER = [
    "min",
    "RSS MB",
    "heap MB",
    "open files",
    "connected",
    "published",
    "delivered",
    "p99 lag ms ws / sse / lp / sp",
    "churned",
    "slow cut",
    "other closes",
    "gaps open",
    "dup",
    "order",
    "resets (unjustified)",
    "server CPU %",
    "other load %",
]


def table(minutes: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(row(m)) + " |" for m in minutes]
    return "\n".join(lines)


def judge(run: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Why the run failed; empty when it passed."""
    fin = run["final"]
    t = fin["totals"]
    reasons = []
    if fin["lost"]:
        reasons.append(
            f"{fin['lost']} events not received ({fin['skipped']} skipped over, "
            f"{fin['undelivered']} still undelivered at the end; {fin['lostBy']})"
        )
    if t["duplicates"]:
        reasons.append(f"{t['duplicates']} duplicates")
    if t["outOfOrder"]:
        reasons.append(f"{t['outOfOrder']} out of order")
    if t["resetsUnjustified"]:
        reasons.append(f"{t['resetsUnjustified']} resets that history could have covered")
    if t["foreign"] or t["badData"]:
        reasons.append(f"{t['foreign']} foreign ids, {t['badData']} events with wrong data")
    if t["protocolErrors"]:
        reasons.append(f"{t['protocolErrors']} protocol errors ({t['protocolSamples'][:3]})")
    if fin["gaveUp"]:
        reasons.append(f"{fin['gaveUp']} subscribers could not reconnect")
    if not fin["caughtUp"]:
        reasons.append("not every subscriber caught up with the last publish")
    after = [m["rss_kb"] for m in run["minutes"] if m["minute"] > args.warmup_minutes]
    if after:
        spread = max(after) / min(after) - 1
        run["rss_spread"] = spread
        if spread > RSS_FLAT:
            reasons.append(f"RSS after warm-up varied by {spread:.1%} (limit {RSS_FLAT:.0%})")
    own_end = run["files_end"] - run["broker_end"]
    own_idle = run["files_idle"] - run["broker_idle"]
    if own_end > own_idle:
        reasons.append(f"open files {own_end} after the clients left, baseline {own_idle}")
    if run["broker_end"] > REDIS_POOL_MAX:
        reasons.append(f"{run['broker_end']} connections to Redis, beyond its pool")
    if args.slow_readers and not run["final"]["totals"]["slowReaderCloses"]:
        reasons.append("the slow readers were never cut (slow-consumer policy not exercised)")
    return reasons


def render(run: dict[str, Any], args: argparse.Namespace) -> str:
    fin = run["final"]
    t = fin["totals"]
    counts = run["counts"]
    after = [m["rss_kb"] for m in run["minutes"] if m["minute"] > args.warmup_minutes]
    heaps = [m["heap_kb"] for m in run["minutes"] if m["minute"] > args.warmup_minutes]
    rss_line = (
        f"RSS after minute {args.warmup_minutes}: {min(after) / 1024:.1f} to "
        f"{max(after) / 1024:.1f} MB ({run.get('rss_spread', 0):.1%}); C heap "
        f"{min(heaps) / 1024:.1f} to {max(heaps) / 1024:.1f} MB "
        f"({max(heaps) / max(1, min(heaps)) - 1:.1%})"
        if after
        else "no minute after warm-up"
    )
    published = sum(c["acked"] - c["start"] for c in fin["channels"].values())
    refused_polls = sum(n for k, n in t["pollStatus"].items() if k.endswith(" 503"))
    redis_files = (
        f", of which connections to Redis {run['broker_end']} (baseline "
        f"{run['broker_idle']}; the broker's pool keeps up to {REDIS_POOL_MAX}; most per "
        f"minute: {max(m['broker_files'] for m in run['minutes'])})"
        if run["broker"].startswith("redis")
        else ""
    )
    verdict = "PASS" if not run["reasons"] else "FAIL: " + "; ".join(run["reasons"])
    return "\n".join(
        [
            f"Run on {run['date']} at commit `{run['git']}`, broker `{run['broker']}`, with",
            f"`{run['command']}`",
            "",
            f"{args.subscribers:,} subscribers ({counts['websocket']:,} WebSocket, "
            f"{counts['sse']:,} SSE, {counts['long_poll']:,} long poll, "
            f"{counts['short_poll']:,} short poll every {args.short_poll_seconds:g} s) on "
            f"{args.channels} channels, {args.rate:g} publishes/s, {args.churn:.0%} reconnecting "
            f"per minute, {args.slow_readers} slow readers on every channel and on one more "
            f"channel of their own ({args.bulk_rate:g} publishes/s of {args.bulk_pad_bytes:,} "
            f"bytes), which stop reading {args.slow_pause:g} s of every "
            f"{args.slow_pause + args.slow_read:g} s.",
            "",
            table(run["minutes"]),
            "",
            f"- Connected {run['connect']['connected']:,} of {args.subscribers:,} in "
            f"{run['connect']['ms'] / 1000:.1f} s. Server before any client: "
            f"{run['rss_idle_kb'] / 1024:.1f} MB, {run['files_idle']} open files; with every "
            f"subscriber connected: {run['rss_connected_kb'] / 1024:.1f} MB, "
            f"{run['files_connected']:,} open files.",
            f"- {rss_line}. Open files after the clients left: {run['files_end']} "
            f"(baseline {run['files_idle']}){redis_files}.",
            f"- Published and acknowledged: {published:,}; "
            f"lost {fin['lost']} ({fin['skipped']} skipped over, {fin['undelivered']} still "
            f"undelivered at the end), duplicated {t['duplicates']}, "
            f"out of order {t['outOfOrder']}, "
            f"foreign ids {t['foreign']}, wrong data {t['badData']}, protocol errors "
            f"{t['protocolErrors']}; every subscriber caught up: {fin['caughtUp']} "
            f"({fin['catchUpMs'] / 1000:.1f} s after the last publish).",
            f"- Resets: {t['resets']} ({t['resetsJustified']} where history was exceeded, "
            f"{t['resetsUnjustified']} unjustified); server `tidings_resets_total` "
            f"{run['server_resets']:g}.",
            f"- Churn: {t['churned']:,} reconnections with the cursor; slow readers paused "
            f"{t['slowReaderPauses']} times and were cut {t['slowReaderCloses']} times; server "
            f"`tidings_slow_consumer_closes_total` {run['server_slow_closes']:g}; other "
            f"closes by the server: {t['serverCloses'] or 'none'}; WebSocket subscribes "
            f"refused (and asked again): {t['subscribeRefused'] or 'none'}; polls answered "
            f"503 (and asked again): {refused_polls}.",
            f"- Publish errors: {fin['pubErrors'] or 'none'}; publishes skipped because a "
            f"channel's publisher was behind: {fin['pubLate']}.",
            f"- Server CPU over the run: {run['cpu_pct_run']:.0f} % of a core; load generator "
            f"{run['loadgen_cpu_pct_run']:.0f} %.",
            "",
            f"Verdict: {verdict}",
        ]
    )


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    revision = git_rev()  # the code the server runs: the tree may move during the run
    workdir = Path(tempfile.mkdtemp(prefix="tidings-soak-"))
    prefix = f"soak-{secrets.token_hex(4)}"
    config = workdir / "tidings.toml"
    config.write_text(
        CONFIG.format(
            write_buffer_limit=args.write_buffer_limit,
            history_size=args.history_size,
            history_ttl=args.history_ttl,
            bulk_history_size=args.bulk_history_size,
        )
    )
    port = free_port()
    broker = broker_url(args, prefix)
    server = ManagedProcess(
        "tidings",
        [
            *pinned(args, args.server_cpu),
            args.tidings,
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--broker",
            broker,
            "--log-level",
            args.server_log_level,
        ],
        workdir / "server.log",
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
    renice_group(server, args.nice)
    gen: SoakGen | None = None
    try:
        if not wait_healthy(server, port, 30):
            raise RuntimeError(f"the server did not become healthy:\n{server.log_tail()}")
        channels = [f"{prefix}-c{k}" for k in range(args.channels)]
        gen_config = {
            "port": port,
            "channels": channels,
            "historySize": args.history_size,
            "historyTtlS": args.history_ttl,
            "shortPollS": args.short_poll_seconds,
            "padBytes": args.pad_bytes,
            "slowPauseS": args.slow_pause,
            "slowReadS": args.slow_read,
            "runId": prefix,
            "bulkChannel": f"slow:{prefix}",
            "bulkHistorySize": args.bulk_history_size,
            "bulkRate": args.bulk_rate,
            "bulkPadBytes": args.bulk_pad_bytes,
            "maxLifetimeS": args.minutes * 60 + 900,
        }
        gen = SoakGen(
            [*pinned(args, args.loadgen_cpu), args.node, str(SOAKGEN), json.dumps(gen_config)],
            workdir / "soakgen.log",
        )
        renice_group(gen.mp, args.nice)
        cursors = gen.cmd(30, cmd="probe")["cursors"]
        log(f"channels start at {cursors}")
        files_idle = wait_files(server.pid, 0, 1.0)  # settle: the probe's connection closes
        time.sleep(1.0)
        files_idle = open_files(server.pid)
        broker_idle = broker_sockets(server.pid, REDIS_PORT)
        rss_idle = rss_kb([server.pid])
        counts = split_counts(args.subscribers, args.mix)
        log(f"connecting {counts} and {args.slow_readers} slow readers")
        connect = gen.cmd(
            600, cmd="connect", counts=counts, slowReaders=args.slow_readers, window=200
        )
        log(f"connected: {connect}")
        files_connected = open_files(server.pid)
        rss_connected = rss_kb([server.pid])
        cpu0 = cpu_seconds([server.pid])
        gen_cpu0 = cpu_seconds([gen.mp.pid])
        t0 = time.monotonic()
        gen.cmd(10, cmd="start", rate=args.rate, churn=args.churn)
        minutes: list[dict[str, Any]] = []
        cpu_last, t_last = cpu0, t0
        # Redis serves this run too: its CPU is not "other load" (it is not pinned, not ours)
        redis_pid = find_redis_pid() if broker.startswith("redis://") else None
        helpers = [gen.mp.pid] + ([redis_pid] if redis_pid else [])
        ours_last = cpu0 + cpu_seconds(helpers)
        busy_last = sum(cpu_busy_ticks(CORES).values()) / CLK_TCK
        log(" | ".join(HEADER))
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, t0 + minute * 60 - time.monotonic()))
            if not server.alive():
                raise RuntimeError(f"the server exited:\n{server.log_tail()}")
            cpu_now, t_now = cpu_seconds([server.pid]), time.monotonic()
            ours = cpu_now + cpu_seconds(helpers)
            busy = sum(cpu_busy_ticks(CORES).values()) / CLK_TCK
            m = {
                "minute": minute,
                "rss_kb": rss_kb([server.pid]),
                "heap_kb": heap_kb(server.pid),
                "files": open_files(server.pid),
                "broker_files": broker_sockets(server.pid, REDIS_PORT),
                "cpu_pct": 100 * (cpu_now - cpu_last) / (t_now - t_last),
                # CPU of other processes on the machine (not the server, the load generator
                # or Redis), in % of a core
                "other_pct": 100 * (busy - busy_last - (ours - ours_last)) / (t_now - t_last),
                "gen": gen.cmd(30, cmd="minute"),
            }
            cpu_last, t_last, ours_last, busy_last = cpu_now, t_now, ours, busy
            minutes.append(m)
            log(" | ".join(row(m)))
        cpu_run = cpu_seconds([server.pid]) - cpu0
        gen_cpu_run = cpu_seconds([gen.mp.pid]) - gen_cpu0
        wall = time.monotonic() - t0
        final = gen.cmd(180, cmd="finish", timeoutMs=90000)
        counters = metrics(port)
        gen.cmd(30, cmd="close")
        files_end = wait_files(server.pid, files_idle - broker_idle, 30.0)
        broker_end = broker_sockets(server.pid, REDIS_PORT)
        return {
            "date": started,
            "git": revision,
            "command": "python3 bench/soak.py " + " ".join(sys.argv[1:]),
            "broker": broker.split("?")[0],
            "counts": counts,
            "connect": connect,
            "rss_idle_kb": rss_idle,
            "files_idle": files_idle,
            "rss_connected_kb": rss_connected,
            "files_connected": files_connected,
            "minutes": minutes,
            "final": final,
            "files_end": files_end,
            "broker_idle": broker_idle,
            "broker_end": broker_end,
            "cpu_pct_run": 100 * cpu_run / wall,
            "loadgen_cpu_pct_run": 100 * gen_cpu_run / wall,
            "server_resets": counters.get("tidings_resets_total", -1),
            "server_slow_closes": counters.get("tidings_slow_consumer_closes_total", -1),
            "server_log": str(workdir / "server.log"),
        }
    finally:
        if gen is not None:
            gen.stop()
        server.stop(grace=15)
        if broker.startswith("redis://"):
            with contextlib.suppress(OSError):
                log(f"deleted {redis_delete_prefix(prefix + ':')} Redis keys of {prefix}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    if nofile < args.subscribers + 1000:
        log(f"warning: open files limit is {nofile}, below {args.subscribers + 1000}")
    interrupt_on_sigterm()
    try:
        result = run(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    result["reasons"] = judge(result, args)
    report = render(result, args)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "soak-" + ("memory" if args.broker == "memory" else "redis")
    (out / f"{name}.md").write_text(report + "\n")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"report in {out / (name + '.md')}")
    return 0 if not result["reasons"] else 1


if __name__ == "__main__":
    sys.exit(main())
