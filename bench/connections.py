#!/usr/bin/env python3
"""Connections benchmark: how many idle SSE and WebSocket subscribers one machine holds.

Starts `tidings serve --workers N` on the Redis broker, pinned to the server core, and M
connection holders (bench/conngen.js, Node.js), pinned to the load core, each under the
20,000 open files a process may hold and each connecting from source addresses of its own in
127.0.0.0/8 (one address and one port run out of ephemeral ports near 28,000). Then, for
every mode (sse, ws, mix) it climbs the stages (100k, 250k, 500k, 1M by default) and at each
stage reports:

- connect rate (connections opened per second while climbing to the stage);
- server RSS per connection (workers' RSS over their RSS with no connection) and kernel
  memory per connection (slab and TCP buffer pages from /proc/meminfo and /proc/net/sockstat,
  both ends of every connection, since client and server are on this machine);
- heartbeat punctuality: the largest gap between two heartbeats (SSE ': ping', WebSocket
  ping) any connection saw, against heartbeat_seconds; beside it, how late the server wrote
  them (its tidings_heartbeat_delay_seconds) and how late the holders could read them (their
  own event loop's delay), since a starved holder reads a heartbeat that came on time late;
- time for one published event to reach every connection (p50, p99, max);
- CPU at idle (heartbeats alone) per 100k connections: server, load generator and Redis.

The top stage of the modes named by --hold-modes is held for --hold-seconds, with the gaps
and a broadcast checked every heartbeat interval.

It stops by itself (and stops everything it started, by PID) when MemAvailable falls below
--memory-floor-gib, when a stage cannot be reached (connections refused or timing out), or
when --time-limit-minutes pass; what ran out is the result's "ceiling".

Standard library and tidings' own dependencies; run it with the worktree's Python so that
`tidings` is the working tree's (`.venv/bin/python bench/connections.py`). All traffic goes
to 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fanout
from fanout import BENCH_DIR, REPO_DIR, ManagedProcess, cpu_seconds, find_redis_pid, rss_kb
from prometheus_client.parser import text_string_to_metric_families

CONNGEN = BENCH_DIR / "conngen.js"
PAGE = os.sysconf("SC_PAGE_SIZE")
REDIS = "redis://127.0.0.1:6379/0"
MODES = ("sse", "ws", "mix")
FD_HARD = 20000  # open files one process may hold here (the hard limit)
PER_GEN = 19000  # connections one holder takes at most (its own files stay under FD_HARD)

_STOP = threading.Event()
_WHY: list[str] = []


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc readings


def meminfo() -> dict[str, int]:
    """/proc/meminfo in kB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, rest = line.split(":", 1)
        out[name] = int(rest.split()[0])
    return out


def sockstat() -> dict[str, int]:
    """TCP line of /proc/net/sockstat (mem in pages) and the sockets used."""
    out: dict[str, int] = {}
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        kind, _, rest = line.partition(":")
        parts = rest.split()
        if kind in ("TCP", "sockets"):
            for key, value in zip(parts[::2], parts[1::2], strict=True):
                out[f"{kind.lower()}_{key}"] = int(value)
    return out


def slabs(names: tuple[str, ...]) -> dict[str, int]:
    """Bytes held by the named slab caches (/proc/slabinfo: objects x object size)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
            parts = line.split()
            if parts[0] in names:
                out[parts[0]] = int(parts[2]) * int(parts[3])
    return out


SLAB_NAMES = (
    "TCP",
    "request_sock_TCP",
    "sock_inode_cache",
    "dentry",
    "filp",
    "eventpoll_epi",
    "eventpoll_pwq",
    "skbuff_head_cache",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-512",
    "kmalloc-256",
    "kmalloc-192",
    "kmalloc-64",
    "selinux_file_security",
    "lsm_file_cache",
)


# ---------------------------------------------------------------- kernel limits

# (key, value wanted at least, why). Only raised, never lowered; --tune applies them.
SYSCTLS = (
    ("fs.file-max", 4_000_000, "two million sockets, both ends, plus every other open file"),
    ("net.core.somaxconn", 4096, "each worker's accept queue (the server asks for 4096)"),
    ("net.ipv4.tcp_max_syn_backlog", 8192, "half-open connections during a connect storm"),
    (
        "net.ipv4.tcp_mem",
        (1_048_576, 1_572_864, 2_097_152),
        "pages of TCP buffers for all sockets (4, 6, 8 GiB): a broadcast queues bytes on all",
    ),
    ("net.ipv4.tcp_max_orphans", 262_144, "sockets closed by the process, still closing"),
)
READ_ONLY = (
    "fs.nr_open",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
)


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str | None:
    try:
        return " ".join(sysctl_path(key).read_text().split())
    except OSError:
        return None


def kernel_limits(tune: bool) -> dict[str, Any]:
    """Read the limits that bite at a million connections; raise those below what is needed."""
    out: dict[str, Any] = {"changed": {}, "values": {}}
    for key, wanted, why in SYSCTLS:
        current = read_sysctl(key)
        out["values"][key] = current
        if current is None:
            continue
        have = [int(x) for x in current.split()]
        want = list(wanted) if isinstance(wanted, tuple) else [wanted]
        if all(h >= w for h, w in zip(have, want, strict=True)):
            continue
        if not tune:
            log(f"{key} = {current} is below {want} ({why}); --tune raises it")
            continue
        value = " ".join(str(max(h, w)) for h, w in zip(have, want, strict=True))
        result = subprocess.run(["sysctl", "-w", f"{key}={value}"], capture_output=True, text=True)
        if result.returncode == 0:
            out["changed"][key] = {"from": current, "to": value, "why": why}
            out["values"][key] = value
            log(f"sysctl -w {key}={value} (was {current}): {why}")
        else:
            log(f"sysctl -w {key}={value} failed: {result.stderr.strip()}")
    for key in READ_ONLY:
        out["values"][key] = read_sysctl(key)
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    out["values"]["RLIMIT_NOFILE"] = f"{soft} {hard}"
    return out


# ---------------------------------------------------------------- processes


def stop_all() -> None:
    """Stop every process this run started; a server holding a million connections may take
    a while to close them."""
    fanout.stop_all(grace=20.0)


class Gen:
    """One conngen.js process, spoken to over its stdin and stdout, one JSON line each way.

    A thread reads its answers into one queue per command, so that a measurement can be
    asked for while a long ``connect`` is still running.
    """

    def __init__(self, index: int, cfg: dict[str, Any], cpu: str, logdir: Path) -> None:
        self.index = index
        argv = ["taskset", "-c", cpu, "node", str(CONNGEN), json.dumps(cfg)]
        self.proc = ManagedProcess(
            f"conngen {index}",
            argv,
            logdir / f"conngen-{index}.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_DIR,
        )
        self.answers: dict[str, queue.Queue[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _queue(self, cmd: str) -> queue.Queue[dict[str, Any]]:
        with self.lock:
            return self.answers.setdefault(cmd, queue.Queue())

    def _read(self) -> None:
        stdout = self.proc.proc.stdout
        assert stdout is not None
        for line in stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            self._queue(answer.get("cmd", "")).put(answer)
        for cmd in list(self.answers):
            self._queue(cmd).put({"error": "exited"})

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.proc.proc.stdin
        assert stdin is not None
        with self.lock:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()

    def wait(self, cmd: str, deadline: float) -> dict[str, Any] | None:
        answers = self._queue(cmd)
        while not _STOP.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(queue.Empty):
                return answers.get(timeout=min(left, 0.5))
        return None


def ask_all(gens: list[Gen], message: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Send every generator the message; wait for every answer."""
    for gen in gens:
        gen.send(message)
    deadline = time.monotonic() + timeout
    answers = [gen.wait(message["cmd"], deadline) for gen in gens]
    missing = [g.index for g, a in zip(gens, answers, strict=True) if a is None]
    if missing and not _STOP.is_set():
        raise RuntimeError(f"no answer from conngen {missing} to {message.get('cmd')}")
    return [a or {} for a in answers]


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    proc: ManagedProcess
    port: int
    workers: list[int] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        """The processes that serve: the workers, or the server itself when it has none."""
        pids = self.proc.tree() or [self.proc.pid]
        self.workers = [p for p in pids if p != self.proc.pid] or [self.proc.pid]
        return self.workers


def start_server(args: argparse.Namespace, tmp: Path) -> Server:
    config = tmp / "tidings.toml"
    config.write_text(
        "[server]\n"
        f"heartbeat_seconds = {args.heartbeat_seconds}\n"
        # refuse cleanly before a worker runs out of files; the client retries elsewhere
        f"max_connections = {FD_HARD - 200}\n"
        "admin = false\n"
        "lab = false\n"
        "[namespaces.default]\n"
        "public = true\n"
    )
    broker = f"{REDIS}?prefix=conns-{uuid.uuid4().hex[:10]}"
    argv = [
        "taskset", "-c", args.server_cpus,
        str(Path(sys.executable).parent / "tidings"), "serve",
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(args.port),
        "--broker", broker,
        "--workers", str(args.workers),
    ]  # fmt: skip
    proc = ManagedProcess(
        "tidings serve", argv, tmp / "server.log", stdin=subprocess.DEVNULL, cwd=REPO_DIR
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{proc.log_path.read_text()[-3000:]}")
        text = proc.log_path.read_text(errors="replace")
        if "tidings listening on" in text:
            # the port the supervisor chose: a fixed one could be shared (SO_REUSEPORT) with
            # another node still listening there, which would take half the connections
            port = int(text.split("tidings listening on http://127.0.0.1:", 1)[1].split()[0])
            server = Server(proc, port)
            server.worker_pids()
            log(f"server: {len(server.workers)} workers on cores {args.server_cpus}, {broker}")
            return server
        time.sleep(0.3)
    raise RuntimeError("the server did not listen within 120 s")


def publish(port: int, channel: str, seq: int) -> None:
    body = json.dumps(
        {"channel": channel, "data": {"seq": seq, "t": time.time() * 1000.0}}
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/api/publish", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"publish answered {answer.status}: {text[:200]!r}")
    finally:
        connection.close()


# ---------------------------------------------------------------- measurements


@dataclass
class Snapshot:
    at: float
    server_rss_kb: int
    gens_rss_kb: int
    mem: dict[str, int]
    sock: dict[str, int]
    slab: dict[str, int]

    @classmethod
    def take(cls, server: Server, gens: list[Gen]) -> Snapshot:
        return cls(
            time.monotonic(),
            rss_kb(server.worker_pids()),
            rss_kb([g.proc.pid for g in gens]),
            meminfo(),
            sockstat(),
            slabs(SLAB_NAMES),
        )

    def kernel_kb(self) -> int:
        """Slab (both kinds) and TCP buffer pages: what the kernel holds for the sockets."""
        return self.mem["Slab"] + self.sock.get("tcp_mem", 0) * PAGE // 1024


class CpuMeter:
    def __init__(self, server: Server, gens: list[Gen], redis_pid: int | None) -> None:
        self.server, self.gens, self.redis_pid = server, gens, redis_pid
        self.start = self.read()

    def read(self) -> tuple[float, float, float, float]:
        server = cpu_seconds(self.server.worker_pids())
        gens = cpu_seconds([g.proc.pid for g in self.gens])
        redis = cpu_seconds([self.redis_pid] if self.redis_pid else [])
        return time.monotonic(), server, gens, redis

    def cores(self) -> dict[str, float]:
        """Cores used since the start, by side; and the busiest single generator's share."""
        t1, s1, g1, r1 = self.read()
        t0, s0, g0, r0 = self.start
        span = max(t1 - t0, 1e-6)
        return {"server": (s1 - s0) / span, "gens": (g1 - g0) / span, "redis": (r1 - r0) / span}


def percentile(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def broadcast(gens: list[Gen], port: int, channel: str, seq: int, timeout: float) -> dict[str, Any]:
    ask_all(gens, {"cmd": "watch", "seq": seq}, 30)
    publish(port, channel, seq)
    answers = ask_all(
        gens,
        {"cmd": "collect", "seq": seq, "timeoutMs": timeout * 1000},
        timeout + 30,
    )
    hist = merged_hist(answers)
    return {
        "seq": seq,
        "received": sum(a.get("received", 0) for a in answers),
        "missing": sum(a.get("missing", 0) for a in answers),
        "p50_ms": percentile(hist, 0.50),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": max((a.get("maxMs", 0.0) for a in answers), default=0.0),
        # since the start, over every earlier broadcast a connection had not seen when its
        # wait ended: seen later, skipped over (a later one came first: lost), still unseen
        "owed_late": sum(a.get("late", 0) for a in answers),
        "owed_late_max_ms": max((a.get("lateMaxMs", 0.0) for a in answers), default=0.0),
        "owed_lost": sum(a.get("lost", 0) for a in answers),
        "owed_unseen": sum(a.get("stillOwed", 0) for a in answers),
    }


def heartbeat_gaps(gens: list[Gen]) -> dict[str, Any]:
    answers = ask_all(gens, {"cmd": "gaps"}, 60)
    hist = merged_hist(answers)
    return {
        "ready": sum(a.get("ready", 0) for a in answers),
        "silent": sum(a.get("silent", 0) for a in answers),
        "max_gap_s": max((a.get("worstMs", 0.0) for a in answers), default=0.0) / 1000,
        "p99_gap_s": percentile(hist, 0.99) / 10,
        "window_s": max((a.get("windowMs", 0.0) for a in answers), default=0.0) / 1000,
        # the holders' own loop delay: how much later than it came a heartbeat may be read
        "holder_loop_lag_max_s": max((a.get("loopLagMaxMs", 0.0) for a in answers), default=0.0)
        / 1000,
    }


DELAY = "tidings_heartbeat_delay_seconds"


def heartbeat_delays(port: int) -> dict[str, float]:
    """The node's heartbeat delay histogram (cumulative counts by upper bound, seconds)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == DELAY:
            for sample in family.samples:
                if sample.name == f"{DELAY}_bucket":
                    buckets[sample.labels["le"]] = sample.value
    return buckets


def server_delay(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """How late the server wrote the heartbeats between two readings: the count, the bound
    under which 99 % came, and the bound of the latest (``inf`` past the last bucket)."""
    bounds = sorted(after, key=float)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative
    total = counts[-1] if counts else 0.0
    if not total:
        return {"heartbeats": 0, "p99_le_s": float("nan"), "max_le_s": float("nan")}
    p99 = next(float(b) for b, c in zip(bounds, counts, strict=True) if c >= 0.99 * total)
    latest = next(float(b) for b, c in zip(bounds, counts, strict=True) if c >= total)
    return {"heartbeats": int(total), "p99_le_s": p99, "max_le_s": latest}


def gen_usage(gens: list[Gen]) -> list[dict[str, Any]]:
    return ask_all(gens, {"cmd": "status"}, 60)


# ---------------------------------------------------------------- the run


def memory_guard(floor_kb: int) -> None:
    """Stop the run once MemAvailable is below the floor (checked every half second)."""
    lowest = None
    while not _STOP.is_set():
        available = meminfo()["MemAvailable"]
        lowest = available if lowest is None else min(lowest, available)
        if available < floor_kb:
            _WHY.append(
                f"MemAvailable fell to {available / 1048576:.2f} GiB "
                f"(floor {floor_kb / 1048576:.1f})"
            )
            log(f"memory: {_WHY[-1]}: stopping")
            _STOP.set()
            return
        time.sleep(0.5)


def climb(
    server: Server,
    gens: list[Gen],
    redis_pid: int | None,
    mode: str,
    have: int,
    target: int,
    args: argparse.Namespace,
    seq: list[int] | None = None,
) -> dict[str, Any]:
    """Open target - have connections over all generators; the rate and what failed."""
    need = target - have
    per = [need // len(gens) + (1 if i < need % len(gens) else 0) for i in range(len(gens))]
    kinds = ["sse", "ws"] if mode == "mix" else [mode]
    started = time.monotonic()
    meter = CpuMeter(server, gens, redis_pid)
    connected = failed = 0
    reasons: dict[str, int] = {}
    during: list[dict[str, Any]] = []
    halted: list[str] = []

    def halt(why: str) -> None:  # the climb ends where it is; why is the run's ceiling
        halted.append(why)
        log(why)
        for gen in gens:
            gen.send({"cmd": "halt"})

    for kind in kinds:
        share = [n // len(kinds) + (n % len(kinds) if kind == kinds[0] else 0) for n in per]
        messages = [
            {
                "cmd": "connect",
                "n": n,
                "kind": kind,
                "window": args.window,
                "timeoutMs": args.climb_timeout * 1000,
            }
            for n in share
        ]
        for gen, message in zip(gens, messages, strict=True):
            gen.send(message)
        # while they connect: events to those already connected, every few seconds
        end = time.monotonic() + args.climb_timeout + 60
        while not _STOP.is_set() and any(
            not g.answers.get("connect", queue.Queue()).qsize() for g in gens
        ):
            if time.monotonic() > end:
                break
            available = meminfo()["MemAvailable"]
            if not halted and available < args.climb_floor_gib * 1048576:
                halt(
                    f"memory: MemAvailable fell to {available / 1048576:.2f} GiB while "
                    f"connecting (climbing stops below {args.climb_floor_gib:g} GiB)"
                )
            if have + connected > 0 and seq is not None and not halted:
                seq[0] += 1
                try:
                    during.append(broadcast(gens, server.port, args.channel, seq[0], 20))
                except (OSError, RuntimeError) as error:  # TimeoutError is an OSError
                    halt(
                        f"delivery: a publish while connecting went unanswered ({error}), "
                        f"with the cores at {meter.cores()} and the load average at "
                        f"{os.getloadavg()[0]:.0f}"
                    )
            time.sleep(2.0)
        answers = [g.wait("connect", end) or {} for g in gens]
        for answer in answers:
            connected += answer.get("connected", 0)
            failed += answer.get("failed", 0)
            for reason, count in answer.get("failReasons", {}).items():
                reasons[reason] = reasons.get(reason, 0) + count
    seconds = time.monotonic() - started
    return {
        "opened": connected, "failed": failed, "reasons": reasons, "seconds": seconds,
        "rate": connected / seconds if seconds else 0, "cores": meter.cores(),
        "broadcasts_during": during,
        "halted": halted[0] if halted else None,
    }  # fmt: skip


def measure_stage(
    mode: str,
    target: int,
    climb_result: dict[str, Any],
    server: Server,
    gens: list[Gen],
    base: Snapshot,
    redis_pid: int | None,
    args: argparse.Namespace,
    seq: list[int],
    window: float,
    broadcasts: int,
) -> dict[str, Any]:
    time.sleep(args.settle)
    ask_all(gens, {"cmd": "mark"}, 30)
    delays = heartbeat_delays(server.port)
    meter = CpuMeter(server, gens, redis_pid)
    gens_cpu0 = [u.get("cpuUs", 0) for u in gen_usage(gens)]
    deadline = time.monotonic() + window
    while time.monotonic() < deadline and not _STOP.is_set():
        time.sleep(0.5)
    cores = meter.cores()
    usage = gen_usage(gens)
    gaps = heartbeat_gaps(gens)
    gaps["server"] = server_delay(delays, heartbeat_delays(server.port))
    snap = Snapshot.take(server, gens)
    span = window
    busiest_gen = max(
        (u.get("cpuUs", 0) - c0) / 1e6 / span for u, c0 in zip(usage, gens_cpu0, strict=True)
    )
    alive = sum(u.get("alive", 0) for u in usage)
    results = []
    for _ in range(broadcasts):
        if _STOP.is_set():
            break
        seq[0] += 1
        results.append(broadcast(gens, server.port, args.channel, seq[0], args.broadcast_timeout))
        time.sleep(1.0)
    per100k = 100_000 / alive if alive else float("nan")
    per_conn = 1 / alive if alive else float("nan")
    stage = {
        "mode": mode,
        "target": target,
        "alive": alive,
        "climb": climb_result,
        "server_rss_gib": snap.server_rss_kb / 1048576,
        "server_rss_per_conn_b": (snap.server_rss_kb - base.server_rss_kb) * 1024 * per_conn,
        "gens_rss_per_conn_b": (snap.gens_rss_kb - base.gens_rss_kb) * 1024 * per_conn,
        "kernel_per_conn_b": (snap.kernel_kb() - base.kernel_kb()) * 1024 * per_conn,
        "slab_per_conn_b": (snap.mem["Slab"] - base.mem["Slab"]) * 1024 * per_conn,
        "tcp_mem_pages": snap.sock.get("tcp_mem", 0),
        "slab_detail_per_conn_b": {
            k: (v - base.slab.get(k, 0)) * per_conn
            for k, v in snap.slab.items()
            if v - base.slab.get(k, 0) > 0
        },
        "used_gib": (snap.mem["MemTotal"] - snap.mem["MemAvailable"]) / 1048576,
        "available_gib": snap.mem["MemAvailable"] / 1048576,
        "tcp_inuse": snap.sock.get("tcp_inuse", 0),
        "gaps": gaps,
        "idle_cores": cores,
        "idle_cores_per_100k": {k: v * per100k for k, v in cores.items()},
        "busiest_gen_cores": busiest_gen,
        "gens_rss_max_mib": max(u.get("rssKb", 0) for u in usage) / 1024,
        "gen_closes": _merge([u.get("stats", {}).get("closes", {}) for u in usage]),
        "gen_errors": _merge([u.get("stats", {}).get("errors", {}) for u in usage]),
        "broadcasts": results,
    }
    return stage


def _merge(maps: list[dict[str, int]]) -> dict[str, int]:
    """The counts of all the maps, summed key by key."""
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + v
    return out


def merged_hist(answers: list[dict[str, Any]]) -> dict[int, int]:
    """The generators' histograms (bin -> count; JSON gives the bins as strings) as one."""
    return {int(k): v for k, v in _merge([a.get("hist", {}) for a in answers]).items()}


def hold(
    mode: str,
    server: Server,
    gens: list[Gen],
    redis_pid: int | None,
    args: argparse.Namespace,
    seq: list[int],
) -> dict[str, Any]:
    """Hold the top stage for --hold-seconds: gaps and a broadcast every interval."""
    log(f"{mode}: holding for {args.hold_seconds:.0f} s")
    ask_all(gens, {"cmd": "mark"}, 30)
    delays = heartbeat_delays(server.port)
    meter = CpuMeter(server, gens, redis_pid)
    started = time.monotonic()
    checks = []
    while time.monotonic() - started < args.hold_seconds and not _STOP.is_set():
        time.sleep(
            min(
                args.heartbeat_seconds * 2,
                max(0.0, args.hold_seconds - (time.monotonic() - started)),
            )
        )
        if _STOP.is_set():
            break
        seq[0] += 1
        result = broadcast(gens, server.port, args.channel, seq[0], args.broadcast_timeout)
        usage = gen_usage(gens)
        result["alive"] = sum(u.get("alive", 0) for u in usage)
        result["at_s"] = time.monotonic() - started
        checks.append(result)
        log(
            f"  hold {result['at_s']:.0f} s: alive {result['alive']}, "
            f"broadcast p99 {result['p99_ms']:.0f} ms, missing {result['missing']}"
        )
    gaps = heartbeat_gaps(gens)
    gaps["server"] = server_delay(delays, heartbeat_delays(server.port))
    return {
        "mode": mode,
        "seconds": time.monotonic() - started,
        "gaps": gaps,
        "cores": meter.cores(),
        "broadcasts": checks,
        "alive_min": min((c["alive"] for c in checks), default=0),
    }


def restore_limits(limits: dict[str, Any]) -> None:
    """Put back every kernel limit --tune raised: the machine is left as it was found."""
    for key, change in limits["changed"].items():
        result = subprocess.run(
            ["sysctl", "-w", f"{key}={change['from']}"], capture_output=True, text=True
        )
        state = "restored" if result.returncode == 0 else f"not restored: {result.stderr.strip()}"
        log(f"sysctl {key} {state} to {change['from']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="conns-"))
    log(f"logs in {tmp}")
    limits = kernel_limits(args.tune)
    result: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "limits": limits,
        "stages": [],
        "holds": [],
        "ceiling": None,
    }
    guard = threading.Thread(
        target=memory_guard, args=(int(args.memory_floor_gib * 1048576),), daemon=True
    )
    guard.start()
    limit = args.time_limit_minutes * 60
    if args.end_by:
        hours, minutes = (int(x) for x in args.end_by.split(":"))
        now = dt.datetime.now(dt.UTC)
        end = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        limit = min(limit, (end - now).total_seconds())
        log(f"ends by {args.end_by} UTC: {limit / 60:.1f} minutes")
    deadline = time.monotonic() + limit
    server = start_server(args, tmp)
    redis_pid = find_redis_pid()
    top = max(args.stages)
    n_gens = args.gens or -(-top // PER_GEN)
    gens = []
    for i in range(n_gens):
        # eight source addresses of its own: a free port is found at once, even with the last mode's
        # connections still in TIME_WAIT
        sources = [f"127.{1 + i // 200}.{i % 200}.{k}" for k in range(1, 9)]
        cfg = {"id": i, "port": server.port, "sources": sources, "channel": args.channel,
               "capacity": PER_GEN, "maxLifetimeS": args.time_limit_minutes * 60 + 300}  # fmt: skip
        gens.append(Gen(i, cfg, args.load_cpus, tmp))
    ask_all(gens, {"cmd": "hello"}, 60)
    log(f"{n_gens} connection holders on cores {args.load_cpus}")
    time.sleep(2)
    base = Snapshot.take(server, gens)
    base_files = open_files(server.worker_pids())
    result["base"] = {
        "server_rss_mib": base.server_rss_kb / 1024,
        "gens_rss_mib": base.gens_rss_kb / 1024,
        "available_gib": base.mem["MemAvailable"] / 1048576,
        "workers": len(server.workers),
        "gens": n_gens,
    }
    seq = [0]
    window = args.window_seconds or args.heartbeat_seconds * 2.2
    try:
        for mode in args.modes:
            have = 0
            rate = args.expected_rate
            for target in sorted(args.stages):
                if _STOP.is_set():
                    break
                if time.monotonic() > deadline:
                    _WHY.append(f"time limit of {limit / 60:.0f} minutes")
                    _STOP.set()
                    break
                holding = mode in args.hold_modes and args.hold_seconds > 0
                reserve = (args.hold_seconds + 90 if holding else 0) + window + 60
                left = deadline - time.monotonic() - reserve
                needed = (target - have) / rate if rate else 0
                if have and needed > left:
                    why = (
                        f"time: climbing from {have:,} to {target:,} at {rate:,.0f}/s would take "
                        f"{needed:.0f} s, {max(left, 0):.0f} s were left before the hold"
                    )
                    log(f"{mode}: {why}")
                    _WHY.append(why)
                    break
                args.climb_timeout = max(60.0, min(args.climb_timeout, left))
                log(f"{mode}: climbing to {target:,}")
                climbed = climb(server, gens, redis_pid, mode, have, target, args, seq)
                rate = climbed["rate"] or rate
                if climbed["halted"]:
                    _WHY.append(climbed["halted"])
                log(
                    f"  opened {climbed['opened']:,}"
                    f" in {climbed['seconds']:.1f} s ({climbed['rate']:.0f}/s), "
                    f"failed {climbed['failed']} {climbed['reasons']}, cores {climbed['cores']}, "
                    "broadcast p99 while connecting "
                    f"{[round(b['p99_ms']) for b in climbed['broadcasts_during']]}"
                )
                stage = measure_stage(
                    mode,
                    target,
                    climbed,
                    server,
                    gens,
                    base,
                    redis_pid,
                    args,
                    seq,
                    window,
                    args.broadcasts,
                )
                result["stages"].append(stage)
                print_stage(stage, args)
                have = stage["alive"]
                if climbed["halted"]:
                    break  # hold where memory let it get
                if have < target * (1 - args.shortfall):
                    _WHY.append(
                        f"{mode}: {have:,} of {target:,} connections held ({climbed['reasons']})"
                    )
                    break
                if _STOP.is_set():
                    break
            if not _STOP.is_set() and mode in args.hold_modes and args.hold_seconds > 0:
                left = deadline - time.monotonic() - 60
                if left < args.hold_seconds:
                    log(
                        f"{mode}: {left:.0f} s left: the hold is that long, "
                        f"not {args.hold_seconds:.0f}"
                    )
                    args.hold_seconds = max(0.0, left)
                result["holds"].append(hold(mode, server, gens, redis_pid, args, seq))
            log(f"{mode}: closing every connection")
            ask_all(gens, {"cmd": "close"}, 90)
            wait_closed(server, base_files)
            if _STOP.is_set():
                break
    finally:
        _STOP.set()
        result["ceiling"] = _WHY[0] if _WHY else None
        result["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        result["server_log_errors"] = [
            line
            for line in (tmp / "server.log").read_text(errors="replace").splitlines()
            if "ERROR" in line
        ][:20]
        log("stopping everything this run started")
        stop_all()
        restore_limits(limits)
    return result


def open_files(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def wait_closed(server: Server, base_files: int) -> None:
    """Until the workers hold about the files they held with no connection (their broker
    pools grow a little meanwhile), at most 2 minutes."""
    deadline = time.monotonic() + 120
    workers = server.worker_pids()
    while time.monotonic() < deadline and open_files(workers) > base_files + 50 * len(workers):
        time.sleep(1)
    time.sleep(2)


def late(gaps: dict[str, Any]) -> str:
    """Where a heartbeat's lateness came from: the server's writing, the holders' reading."""
    server = gaps.get("server", {})
    return (
        f"server wrote 99 % within {server.get('p99_le_s', float('nan')):g} s, "
        f"all within {server.get('max_le_s', float('nan')):g} s; "
        f"holders read up to {gaps.get('holder_loop_lag_max_s', float('nan')):.1f} s late"
    )


def print_stage(stage: dict[str, Any], args: argparse.Namespace) -> None:
    b = stage["broadcasts"][-1] if stage["broadcasts"] else {}
    g = stage["gaps"]
    log(
        f"  {stage['mode']} {stage['alive']:,}: rss {stage['server_rss_per_conn_b']:.0f} B/conn, "
        f"kernel {stage['kernel_per_conn_b']:.0f} B/conn (slab {stage['slab_per_conn_b']:.0f}), "
        f"gen {stage['gens_rss_per_conn_b']:.0f} B/conn; max gap {g['max_gap_s']:.2f} s "
        f"(hb {args.heartbeat_seconds}; {late(g)}), silent {g['silent']}; broadcast p50/p99/max "
        f"{b.get('p50_ms', 0):.0f}/{b.get('p99_ms', 0):.0f}/{b.get('max_ms', 0):.0f} ms "
        f"missing {b.get('missing')}; idle cores/100k {stage['idle_cores_per_100k']}; "
        f"busiest gen {stage['busiest_gen_cores']:.2f}; "
        f"available {stage['available_gib']:.1f} GiB"
    )


def table(result: dict[str, Any], heartbeat: float) -> str:
    head = (
        "| mode | held | connect/s | server RSS B/conn | kernel B/conn | max heartbeat gap (s) "
        "| heartbeats late | broadcast p50 / p99 / max (ms) | p99 while connecting (ms) "
        "| idle CPU per 100k: server / load / Redis (% core) |\n"
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|\n"
    )
    rows = []
    for s in result["stages"]:
        bs = s["broadcasts"]
        p50 = max((b["p50_ms"] for b in bs), default=float("nan"))
        p99 = max((b["p99_ms"] for b in bs), default=float("nan"))
        mx = max((b["max_ms"] for b in bs), default=float("nan"))
        miss = sum(b["missing"] for b in bs)
        c = s["idle_cores_per_100k"]
        during = s["climb"].get("broadcasts_during", [])
        storm = max((b["p99_ms"] for b in during), default=float("nan"))
        storm_miss = sum(b["missing"] for b in during)
        rows.append(
            f"| {s['mode']} | {s['alive']:,} | {s['climb']['rate']:,.0f} "
            f"| {s['server_rss_per_conn_b']:,.0f} "
            f"| {s['kernel_per_conn_b']:,.0f} | {s['gaps']['max_gap_s']:.2f} / {heartbeat:g} "
            f"| {late(s['gaps'])} "
            f"| {p50:.0f} / {p99:.0f} / {mx:.0f}{f' ({miss} missed)' if miss else ''} "
            f"| {'-' if storm != storm else f'{storm:.0f}'}"
            f"{f' ({storm_miss} missed)' if storm_miss else ''} "
            f"| {100 * c['server']:.1f} / {100 * c['gens']:.1f} / {100 * c['redis']:.1f} |"
        )
    return head + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default="100000,250000,500000,1000000")
    parser.add_argument("--modes", default="sse,ws,mix")
    parser.add_argument("--hold-modes", default="mix", help="modes whose top stage is held")
    parser.add_argument("--hold-seconds", type=float, default=600)
    parser.add_argument(
        "--workers", type=int, default=0, help="server workers (default: top stage / 18,000)"
    )
    parser.add_argument(
        "--gens", type=int, default=0, help="connection holders (default: top / 19,000)"
    )
    parser.add_argument("--heartbeat-seconds", type=float, default=15.0)
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=0,
        help="idle window per stage (default 2.2 heartbeats)",
    )
    parser.add_argument("--broadcasts", type=int, default=2, help="events broadcast per stage")
    parser.add_argument("--broadcast-timeout", type=float, default=60)
    parser.add_argument("--climb-timeout", type=float, default=1200)
    parser.add_argument(
        "--expected-rate",
        type=float,
        default=800,
        help="connections a second assumed before the first climb (to plan within the time)",
    )
    parser.add_argument("--window", type=int, default=64, help="handshakes in flight per holder")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--shortfall", type=float, default=0.01, help="stop when more are missing")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument(
        "--memory-floor-gib",
        type=float,
        default=2.0,
        help="stop everything below this MemAvailable",
    )
    parser.add_argument(
        "--climb-floor-gib",
        type=float,
        default=3.0,
        help="stop connecting below this MemAvailable, and hold what is open",
    )
    parser.add_argument("--time-limit-minutes", type=float, default=35)
    parser.add_argument("--end-by", default="", help="HH:MM (UTC): end by then, whenever it starts")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="raise the kernel limits below what is needed (sysctl -w)",
    )
    parser.add_argument("--out", default="", help="write the result as JSON here")
    args = parser.parse_args()
    args.stages = [int(s) for s in args.stages.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    args.hold_modes = [m for m in args.hold_modes.split(",") if m]
    bad = [m for m in args.modes + args.hold_modes if m not in MODES]
    if bad:
        parser.error(f"modes are {', '.join(MODES)}, not {bad}")
    if not args.workers:
        args.workers = max(1, -(-max(args.stages) // 18_000))
    args.channel = f"conns-{uuid.uuid4().hex[:8]}"
    if not shutil.which("node") or not shutil.which("taskset"):
        raise SystemExit("node and taskset are required")

    def on_signal(signum: int, frame: Any) -> None:
        _WHY.append(f"signal {signum}")
        _STOP.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    result: dict[str, Any] = {}
    try:
        result = run(args)
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        stop_all()
    if not result:
        sys.exit(1)
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(table(result, args.heartbeat_seconds))
    for h in result["holds"]:
        print(
            f"\nheld {h['mode']} for {h['seconds']:.0f} s: "
            f"max heartbeat gap {h['gaps']['max_gap_s']:.2f} s ({late(h['gaps'])}), "
            f"silent {h['gaps']['silent']}, fewest alive {h['alive_min']:,}, broadcast p99 worst "
            f"{max((b['p99_ms'] for b in h['broadcasts']), default=float('nan')):.0f} ms, "
            f"missing {sum(b['missing'] for b in h['broadcasts'])}, cores {h['cores']}"
        )
    last = _last_broadcast(result)
    if last is not None and "owed_late" in last:
        print(
            "\nbroadcasts a connection had not seen when their wait ended, by the last one: "
            f"seen later {last['owed_late']:,} (at most {last['owed_late_max_ms']:.0f} ms after"
            f" publishing), skipped over (lost) {last['owed_lost']:,}, still unseen"
            f" {last['owed_unseen']:,}"
        )
    print(f"\nceiling: {result['ceiling'] or 'none reached'}")


def _last_broadcast(result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's last broadcast (its counts of late and lost deliveries are cumulative)."""
    found: list[dict[str, Any]] = []
    for stage in result["stages"]:
        found += stage.get("climb", {}).get("broadcasts_during", []) + stage.get("broadcasts", [])
    for hold_result in result["holds"]:
        found += hold_result["broadcasts"]
    return max(found, key=lambda b: b.get("seq", 0), default=None)


if __name__ == "__main__":
    main()
