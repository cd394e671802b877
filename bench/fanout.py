#!/usr/bin/env python3
"""Fan-out benchmark: Tidings against nginx + Nchan.

For every target, transport and subscriber count this starts the server pinned to core 0, the
load generator (bench/loadgen.js, Node.js) pinned to core 1, connects N idle subscribers to one
channel, then publishes at a fixed rate and at saturation, and measures server CPU per
delivered message, deliveries per second, publish-to-receive latency and server memory per
idle connection. See bench/README.md for what every column means.

`--workers 1,2` measures the tidings target once per worker count (`tidings serve --workers
N`, targets `tidings-w1`, `tidings-w2`); with more than one worker the server is pinned to
`--workers-cpus` (both cores by default), so it shares them with the load generator.

Standard library only. Every process it starts is stopped by its PID at the end, on errors and
on Ctrl-C. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN = BENCH_DIR / "loadgen.js"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHANNEL = "bench"
TRANSPORTS = ("ws", "sse", "long_poll")
TARGETS = (
    "tidings",
    "nchan",
    "tidings-redis2",
    "mount",
    "sse-starlette",
    "fastapi-sse",
    "socketio",
    "channels",
    "tidings-deflate",
    "floor",
)
REDIS2 = "tidings-redis2"  # two `tidings serve` nodes sharing the channel through Redis
MOUNT = "mount"  # Tidings mounted at /rt in a FastAPI app (bench/mount_app.py) under uvicorn
SSE_STARLETTE = "sse-starlette"  # sse-starlette + broadcaster (bench/sse_starlette_app.py)
FASTAPI_SSE = "fastapi-sse"  # FastAPI's own fastapi.sse.EventSourceResponse (fastapi_sse_app.py)
SOCKETIO = "socketio"  # python-socketio, one room (bench/socketio_app.py)
CHANNELS = "channels"  # Django Channels, InMemoryChannelLayer (bench/channels_app.py)
# What Python teams use instead of Tidings, each under the same uvicorn as the mount
PEERS = (SSE_STARLETTE, FASTAPI_SSE, SOCKETIO, CHANNELS)
# `tidings serve` as the `tidings` target, its WebSocket subscribers offering permessage-deflate
# (the `tidings` target's do not, so they get plain frames from the same server)
DEFLATE = "tidings-deflate"
# bench/floor_server.py --long-poll: uvloop + httptools holding polls and writing one built
# answer per event, the least a Python server can spend per long-poll delivery
FLOOR = "floor"
UVICORN_APPS = {
    MOUNT: ("mount_app:app", "/rt"),
    SSE_STARLETTE: ("sse_starlette_app:app", ""),
    FASTAPI_SSE: ("fastapi_sse_app:app", ""),
    SOCKETIO: ("socketio_app:app", ""),
    CHANNELS: ("channels_app:application", ""),
}
# What each target can serve; the cells it cannot are skipped (the SSE peers stream only, the
# WebSocket peers have no SSE or poll endpoint).
TARGET_TRANSPORTS = {
    SSE_STARLETTE: ("sse",),
    FASTAPI_SSE: ("sse",),
    SOCKETIO: ("ws",),
    CHANNELS: ("ws",),
    DEFLATE: ("ws",),
    FLOOR: ("long_poll",),
}
# How the load generator's WebSocket subscribers subscribe on each target (loadgen.js WS_FLAVOUR)
WS_FLAVOURS = {SOCKETIO: ("socketio", None), CHANNELS: ("plain", f"/ws/{CHANNEL}/")}
WORKERS_PREFIX = "tidings-w"  # tidings-w2: `tidings serve --workers 2`, from --workers
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 0
TRANSPORT_TITLE = {"ws": "WebSocket", "sse": "SSE", "long_poll": "long poll"}
NOFILE = 65536
LOADGEN_HOT_PCT = 85.0  # warn when the load generator used more than this much of its core


def serves(target: str, transport: str) -> bool:
    """Whether target has an endpoint for transport (TARGET_TRANSPORTS)."""
    return transport in TARGET_TRANSPORTS.get(target, TRANSPORTS)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc helpers


def proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def proc_children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(entry))
    return children


def proc_tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    if proc_stat(root) is None:
        return []
    children = proc_children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            ticks += int(st[11]) + int(st[12])  # fields 14 and 15 of /proc/PID/stat
    return ticks / CLK_TCK


def start_time(pid: int) -> int | None:
    st = proc_stat(pid)
    return int(st[19]) if st else None  # field 22: start time, to detect PID reuse


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


def cpu_busy_ticks(cores: list[int]) -> dict[int, int]:
    """Busy (not idle, not iowait) jiffies of each core from /proc/stat."""
    out: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            vals = [int(v) for v in line.split()[1:]]
            out[int(name[3:])] = sum(vals[:8]) - vals[3] - vals[4]
    return out


def busy_seconds(b0: dict[int, int], b1: dict[int, int], cores: list[int]) -> float:
    """CPU time the cores were busy between two cpu_busy_ticks readings, in seconds."""
    return sum(b1.get(c, 0) - b0.get(c, 0) for c in cores) / CLK_TCK


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    return next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )


def other_load(cores: list[int], ours: Callable[[], float], seconds: float) -> float:
    """Percent of a core used on cores over the next seconds by anything but our processes
    (ours(): their CPU time, in seconds)."""
    b0, o0, t0 = cpu_busy_ticks(cores), ours(), time.monotonic()
    time.sleep(seconds)
    b1, o1, t1 = cpu_busy_ticks(cores), ours(), time.monotonic()
    return max(0.0, 100 * (busy_seconds(b0, b1, cores) - (o1 - o0)) / (t1 - t0))


def wait_quiet(args: argparse.Namespace, cores: list[int], ours: Callable[[], float]) -> float:
    """Wait (at most --quiet-wait s) until other work uses less than --quiet-pct of a core on
    cores; the seconds waited."""
    deadline = time.monotonic() + args.quiet_wait
    waited = 0.0
    while time.monotonic() < deadline:
        if other_load(cores, ours, 0.5) < args.quiet_pct:
            break
        waited += 0.5
    return waited


def least_disturbed(
    args: argparse.Namespace,
    cores: list[int],
    ours: Callable[[], float],
    measure: Callable[[float], dict[str, Any]],
    disturbed: Callable[[dict[str, Any], int], None],
) -> tuple[dict[str, Any], int]:
    """measure() on cores as quiet as we can get them; the least disturbed attempt (its
    "attempts": how many were made up to it) and how many were made in all.

    Other work on the machine shares our cores. Before each attempt, wait (wait_quiet) until it
    uses less than --quiet-pct of a core; measure(the seconds waited) returns the attempt's
    figures, "otherCpuPct" among them. If other work used more than that during the attempt,
    disturbed(figures, attempt index) is told and the measurement runs again, at most
    --phase-retries times.
    """
    best: dict[str, Any] | None = None
    for attempt in range(args.phase_retries + 1):
        r = measure(wait_quiet(args, cores, ours))
        r["attempts"] = attempt + 1
        if best is None or r["otherCpuPct"] < best["otherCpuPct"]:
            best = r
        if r["otherCpuPct"] < args.quiet_pct:
            break
        disturbed(r, attempt)
    assert best is not None
    return best, attempt + 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_pid() -> int | None:
    """PID of the local redis-server, found read-only in /proc (None when not visible)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "redis-server":
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found.append((f":{REDIS_PORT}" in cmdline, int(entry)))
    return max(found)[1] if found else None


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        b = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _RespReader:
    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise OSError(f"redis: {rest.decode()}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("redis closed the connection")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise OSError(f"redis: unexpected reply {line[:80]!r}")


def redis_delete_prefix(prefix: str, max_rounds: int = 100000) -> int:
    """Delete every key starting with prefix (SCAN MATCH + DEL over a raw socket)."""
    if not prefix or "*" in prefix or "?" in prefix or "[" in prefix:
        raise ValueError(f"refusing to delete keys for prefix {prefix!r}")
    deleted = 0
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as sock:
        rd = _RespReader(sock)
        sock.sendall(_resp("SELECT", str(REDIS_DB)))
        rd.read()
        cursor = "0"
        for _ in range(max_rounds):  # bounded
            sock.sendall(_resp("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"))
            cursor, keys = rd.read()
            if keys:
                sock.sendall(_resp("DEL", *keys))
                deleted += int(rd.read())
            if cursor == "0":
                break
    return deleted


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(NOFILE, soft), max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- processes

_STARTED: list[ManagedProcess] = []


class ManagedProcess:
    """A process we started, stopped by its PID (and its recorded descendants) at the end."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        stdin: Any = None,
        stdout: Any = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout if stdout is not None else self.log_file,
            stderr=self.log_file,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.known: dict[int, int | None] = {self.pid: start_time(self.pid)}
        _STARTED.append(self)

    def tree(self) -> list[int]:
        pids = proc_tree(self.pid)
        for pid in pids:
            if pid not in self.known:
                self.known[pid] = start_time(pid)
        return pids

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 12.0) -> None:
        self.tree()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not stop in {grace}s, killing it")
                self.proc.kill()
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        # descendants we saw (nginx workers): kill those still alive, if the PID is still theirs
        deadline = time.monotonic() + 3
        for pid, started in self.known.items():
            if pid == self.pid:
                continue
            while (
                start_time(pid) == started and started is not None and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            if start_time(pid) == started and started is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self in _STARTED:
            _STARTED.remove(self)
        self.log_file.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(grace: float = 5.0) -> None:
    """Stop every process we started and have not stopped yet, the last started first."""
    for mp in list(reversed(_STARTED)):
        try:
            mp.stop(grace=grace)
        except Exception as exc:
            log(f"stopping {mp.name}: {exc}")


def interrupt_on_sigterm() -> None:
    """SIGTERM ends a run as Ctrl-C does (KeyboardInterrupt), so that it stops what it started."""

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)


def exit_with(main: Callable[[], int]) -> None:
    """Exit with main()'s status; whatever ends it, every process started is stopped."""
    try:
        sys.exit(main())
    finally:
        with contextlib.suppress(Exception):
            stop_all()


def measure_until_interrupted(measure: Callable[[], None]) -> bool:
    """Run measure() to its end or until Ctrl-C or SIGTERM, then stop every process started;
    whether it was interrupted."""
    try:
        measure()
    except KeyboardInterrupt:
        log("interrupted: stopping everything we started")
        return True
    finally:
        stop_all()
    return False


# --------------------------------------------------------------------------- servers


NGINX_CONF = """\
# generated by bench/fanout.py
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
worker_rlimit_nofile {nofile};
load_module {module};

events {{
    worker_connections {conns};
    multi_accept on;
    use epoll;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    nchan_shared_memory_size 256M;

    server {{
        listen 127.0.0.1:{port} backlog={backlog};

        location = /healthz {{
            return 200 "ok\\n";
        }}

        location = /pub {{
            nchan_publisher;
            nchan_channel_id $arg_channel;
            nchan_message_buffer_length {buffer};
            nchan_message_timeout 120s;
        }}

        location = /sub {{
            nchan_subscriber websocket eventsource longpoll;
            nchan_channel_id $arg_channel;
            nchan_subscriber_timeout 0;
            nchan_websocket_ping_interval 0;
        }}

        # short polling (bench/shortpoll.py): answered at once, 304 when nothing is newer
        location = /poll {{
            nchan_subscriber intervalpoll;
            nchan_channel_id $arg_channel;
        }}
    }}
}}
"""


def nchan_module_path() -> str:
    try:
        out = subprocess.run(
            ["dpkg", "-L", "libnginx-mod-nchan"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit("libnginx-mod-nchan is not installed: run bench/setup.sh") from exc
    for line in out.splitlines():
        if line.endswith("ngx_nchan_module.so"):
            return line
    raise SystemExit("ngx_nchan_module.so not found in libnginx-mod-nchan")


@dataclass
class Server:
    target: str
    port: int
    tmp: Path
    mp: ManagedProcess
    version: str = ""
    # tidings-redis2: node B (node A is mp/port) and the Redis key prefix of this cell
    extra: list[ManagedProcess] = field(default_factory=list)
    extra_ports: list[int] = field(default_factory=list)
    redis_prefix: str = ""
    redis_keys_deleted: int | None = None
    redis_pid: int | None = None  # the local redis-server, for its CPU time (read-only)
    prefix: str = ""  # where the endpoints are: "/rt" for the mount

    @property
    def ports(self) -> list[int]:
        return [self.port, *self.extra_ports]

    @property
    def protocol(self) -> str:
        """What the load generator speaks to it: tidings or nchan."""
        return "nchan" if self.target == "nchan" else "tidings"

    def pids(self) -> list[int]:
        return [pid for mp in (self.mp, *self.extra) for pid in mp.tree()]

    def alive(self) -> bool:
        return all(mp.alive() for mp in (self.mp, *self.extra))

    def log_tail(self) -> str:
        return "\n".join(mp.log_tail() for mp in (self.mp, *self.extra))

    def stop(self) -> None:
        for mp in (*self.extra, self.mp):
            mp.stop()
        if self.redis_prefix:
            try:
                self.redis_keys_deleted = redis_delete_prefix(self.redis_prefix)
            except OSError as exc:
                log(f"deleting Redis keys {self.redis_prefix}*: {exc}")

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_kb(self.pids())


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_healthy(mp: ManagedProcess, port: int, timeout: float, prefix: str = "") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not mp.alive():
            return False
        if http_get_status(port, prefix + "/healthz") == 200:
            return True
        time.sleep(0.1)
    return False


def pinned(args: argparse.Namespace, cpu: str) -> list[str]:
    """Command prefix: pin to one core, and renice when asked (both exec, so the PID stays)."""
    prefix = ["taskset", "-c", cpu]
    if args.nice:
        prefix += ["nice", "-n", str(args.nice)]
    return prefix


def start_server(target: str, args: argparse.Namespace, workdir: Path) -> Server:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix=f"{target}-", dir=workdir))
    if target == "nchan":
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                tmp=tmp,
                port=port,
                module=args.nchan_module,
                nofile=args.nofile,
                conns=max(1024, args.nofile - 512),
                backlog=args.backlog,
                buffer=args.nchan_buffer,
            )
        )
        argv = [
            *pinned(args, args.server_cpu),
            args.nginx,
            "-p",
            str(tmp),
            "-c",
            str(conf),
            "-e",
            str(tmp / "error.log"),
        ]
        version = subprocess.run([args.nginx, "-v"], capture_output=True, text=True).stderr.strip()
    elif target == REDIS2:
        return start_redis2(args, port, tmp)
    elif target in UVICORN_APPS:
        return start_uvicorn(target, args, port, tmp)
    elif target == FLOOR:
        python = args.uvicorn_cmd.split()[0]  # the project's environment: uvloop, httptools
        argv = [*pinned(args, args.server_cpu), python, str(BENCH_DIR / "floor_server.py")]
        argv += [str(port), "--long-poll"]
        version = "bench/floor_server.py --long-poll (uvloop + httptools)"
    else:
        return start_tidings(target, args, port, tmp)
    mp = ManagedProcess(
        f"{target} server", argv, tmp / "server.log", stdin=subprocess.DEVNULL, cwd=tmp
    )
    if not wait_healthy(mp, port, args.start_timeout):
        tail = mp.log_tail()
        mp.stop(grace=5)
        raise RuntimeError(f"{target} did not become healthy on port {port}:\n{tail}")
    return Server(target, port, tmp, mp, version)


def start_uvicorn(target: str, args: argparse.Namespace, port: int, tmp: Path) -> Server:
    """A bench app under uvicorn (uvloop, httptools, one process), pinned to the server core."""
    module, prefix = UVICORN_APPS[target]
    argv = [
        *pinned(args, args.server_cpu),
        *args.uvicorn_cmd.split(),
        module,
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        args.uvicorn_ws,
        "--lifespan",
        # Channels' ProtocolTypeRouter routes http and websocket only and refuses lifespan
        "off" if target == CHANNELS else "on",
        "--backlog",
        str(args.backlog),
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "2",
    ]
    # The mount reads TIDINGS_* like `tidings serve`: keep the defaults (memory://) for both.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    mp = ManagedProcess(
        f"{target} server", argv, tmp / "server.log", stdin=subprocess.DEVNULL, env=env, cwd=tmp
    )
    if not wait_healthy(mp, port, args.start_timeout, prefix):
        tail = mp.log_tail()
        mp.stop(grace=5)
        raise RuntimeError(f"{target} did not become healthy on port {port}:\n{tail}")
    return Server(target, port, tmp, mp, f"{target} under uvicorn", prefix=prefix)


def workers_of(target: str) -> int:
    """The worker count of a tidings target: ``tidings-w2`` is ``tidings serve --workers 2``."""
    return int(target.removeprefix(WORKERS_PREFIX)) if target.startswith(WORKERS_PREFIX) else 1


def start_tidings(target: str, args: argparse.Namespace, port: int, tmp: Path) -> Server:
    """One `tidings serve`, of one or several workers, on memory:// or a fresh Redis prefix."""
    workers = workers_of(target)
    cpus = args.server_cpu if workers == 1 else args.workers_cpus
    argv = [
        *pinned(args, cpus),
        *args.tidings_cmd.split(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if target.startswith(WORKERS_PREFIX):
        argv += ["--workers", str(workers)]
    prefix = ""
    version = "tidings (working tree)"
    if args.tidings_broker == "redis":
        prefix = f"bench-{uuid.uuid4().hex[:12]}"
        argv += ["--broker", f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}?prefix={prefix}"]
        version += ", Redis broker"
    argv += args.tidings_args.split()
    mp = ManagedProcess(
        f"{target} server", argv, tmp / "server.log", stdin=subprocess.DEVNULL, cwd=tmp
    )
    server = Server(
        target,
        port,
        tmp,
        mp,
        version + (f", {workers} workers on cores {cpus}" if workers > 1 else ""),
        redis_prefix=prefix,
        redis_pid=find_redis_pid() if prefix else None,
    )
    if not wait_healthy(mp, port, args.start_timeout):
        tail = mp.log_tail()
        server.stop()
        raise RuntimeError(f"{target} did not become healthy on port {port}:\n{tail}")
    return server


def start_redis2(args: argparse.Namespace, port: int, tmp: Path) -> Server:
    """Two `tidings serve` nodes, both pinned to the server core, sharing a fresh Redis prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}?prefix={prefix}"
    mps: list[ManagedProcess] = []
    ports = [port, free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    server: Server | None = None
    try:
        for name, p in zip("AB", ports, strict=True):
            argv = [
                *pinned(args, args.server_cpu),
                *args.tidings_cmd.split(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                "--broker",
                broker,
                *args.tidings_args.split(),
            ]
            mps.append(
                ManagedProcess(
                    f"{REDIS2} node {name}",
                    argv,
                    tmp / f"server-{name}.log",
                    stdin=subprocess.DEVNULL,
                    cwd=tmp,
                )
            )
        server = Server(
            REDIS2,
            ports[0],
            tmp,
            mps[0],
            "tidings (working tree), 2 nodes, Redis broker",
            extra=mps[1:],
            extra_ports=ports[1:],
            redis_prefix=prefix,
            redis_pid=find_redis_pid(),
        )
        for mp, p in zip(mps, ports, strict=True):
            if not wait_healthy(mp, p, args.start_timeout):
                raise RuntimeError(
                    f"{mp.name} did not become healthy on port {p}:\n{mp.log_tail()}"
                )
        return server
    except BaseException:
        if server is not None:
            server.stop()
        else:
            for mp in mps:
                mp.stop(grace=5)
            with contextlib.suppress(OSError):
                redis_delete_prefix(prefix)
        raise


# --------------------------------------------------------------------------- load generator


class LoadGenError(RuntimeError):
    pass


class LineDriven:
    """A Node.js load generator driven one JSON line at a time over its stdin and stdout."""

    def __init__(self, mp: ManagedProcess) -> None:
        self.mp = mp
        assert self.mp.proc.stdout is not None
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.mp.proc.stdout, selectors.EVENT_READ)
        self._buf = b""

    def cmd(self, timeout: float, **msg: Any) -> dict[str, Any]:
        proc = self.mp.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError as exc:
            raise LoadGenError(f"load generator exited:\n{self.mp.log_tail()}") from exc
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadGenError(f"load generator did not answer {msg['cmd']} in {timeout}s")
            if not self._sel.select(timeout=min(left, 1.0)):
                if not self.mp.alive():
                    raise LoadGenError(f"load generator exited:\n{self.mp.log_tail()}")
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise LoadGenError(f"load generator exited:\n{self.mp.log_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise LoadGenError(f"load generator: {msg['cmd']}: {answer['error']}")
        return answer

    def stop(self) -> None:
        try:
            if self.mp.alive():
                self.cmd(5, cmd="quit")
        except (LoadGenError, OSError, ValueError):
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.mp.proc.wait(timeout=5)
        self._sel.close()
        self.mp.stop(grace=3)


class LoadGen(LineDriven):
    def __init__(self, server: Server, transport: str, args: argparse.Namespace):
        config = {
            "host": "127.0.0.1",
            "port": server.port,
            "target": server.protocol,
            "transport": transport,
            "channel": CHANNEL,
            "sampleEvery": args.sample_every,
            "pubConns": args.pub_conns,
            "payloadBytes": args.payload_bytes,
            "payloadKind": args.payload_kind,
            "deflate": server.target == DEFLATE,
            "pollTimeout": 30,
            "maxLifetimeS": 3600,
            "prefix": server.prefix,
        }
        flavour, ws_path = WS_FLAVOURS.get(server.target, ("tidings", None))
        config["wsFlavour"] = flavour
        if ws_path:
            config["wsPath"] = ws_path
        if len(server.ports) > 1:  # subscribers round-robin over the nodes, publisher on node A
            config["ports"] = server.ports
        argv = [*pinned(args, args.loadgen_cpu), args.node, str(LOADGEN), json.dumps(config)]
        super().__init__(
            ManagedProcess(
                f"loadgen {server.target}/{transport}",
                argv,
                server.tmp / f"loadgen-{transport}.log",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )

    def cpu(self) -> float:
        return cpu_seconds(self.mp.tree())


# --------------------------------------------------------------------------- one cell


def measure_phase(
    server: Server, lg: LoadGen, cores: list[int], timeout: float, **msg: Any
) -> dict[str, Any]:
    """Run one publishing phase; server CPU is the delta over the whole phase, drain included."""
    redis = [server.redis_pid] if server.redis_pid else []
    b0 = cpu_busy_ticks(cores)
    s0, l0, t0, k0 = server.cpu(), lg.cpu(), time.monotonic(), cpu_seconds(redis)
    r = lg.cmd(timeout, **msg)
    s1, l1, t1, k1 = server.cpu(), lg.cpu(), time.monotonic(), cpu_seconds(redis)
    b1 = cpu_busy_ticks(cores)
    wall = t1 - t0
    # CPU time on the two benchmark cores that was neither the server's nor the load
    # generator's: other processes on the machine disturbing the measurement. For
    # tidings-redis2, Redis (unpinned, part of the system under test) is not "other" either;
    # on a 2-core machine all of its CPU time is on the benchmark cores.
    busy = busy_seconds(b0, b1, cores)
    r["otherCpuPct"] = max(0.0, 100 * (busy - (s1 - s0) - (l1 - l0) - (k1 - k0)) / wall)
    delivered = int(r["received"])
    if redis:
        r["redisCpuS"] = k1 - k0
        r["redisCpuPct"] = 100 * (k1 - k0) / wall
        r["redisUsPerMsg"] = (k1 - k0) * 1e6 / delivered if delivered else None
    r["serverCpuS"] = s1 - s0
    r["serverCpuPct"] = 100 * (s1 - s0) / wall
    r["loadgenCpuPct"] = 100 * (l1 - l0) / wall
    r["usPerMsg"] = (s1 - s0) * 1e6 / delivered if delivered else None
    r["msgsPerS"] = delivered / (r["wallMs"] / 1000) if r["wallMs"] else None
    r["missing"] = max(0, int(r["expected"]) - delivered)
    r["bytesPerMsg"] = r["subBytes"] / delivered if delivered else None
    return r


def quiet_phase(
    server: Server,
    lg: LoadGen,
    cores: list[int],
    args: argparse.Namespace,
    timeout: float,
    **msg: Any,
) -> dict[str, Any]:
    """measure_phase on cores as quiet as we can get them (least_disturbed)."""
    redis = [server.redis_pid] if server.redis_pid else []

    def ours() -> float:  # the server's, the load generator's and Redis's CPU time
        return server.cpu() + lg.cpu() + cpu_seconds(redis)

    def measure(waited: float) -> dict[str, Any]:
        r = measure_phase(server, lg, cores, timeout, **msg)
        r["quietWaitS"] = waited
        return r

    def disturbed(r: dict[str, Any], attempt: int) -> None:
        log(
            f"  {msg['cmd']}: other processes used {r['otherCpuPct']:.0f}% of a core"
            + ("; running the phase again" if attempt < args.phase_retries else "")
        )

    best, attempts = least_disturbed(args, cores, ours, measure, disturbed)
    best["attempts"] = attempts
    return best


def publish_rate(args: argparse.Namespace, transport: str, n: int) -> float:
    base = args.long_poll_rate if transport == "long_poll" else args.rate
    return base * 1000 / n if args.rate_scaling == "deliveries" else base


def run_cell(
    target: str, transport: str, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    cell: dict[str, Any] = {"target": target, "transport": transport, "subs": n, "notes": []}
    server = start_server(target, args, workdir)
    cell["version"] = server.version
    lg: LoadGen | None = None
    try:
        lg = LoadGen(server, transport, args)
        hello = lg.cmd(30, cmd="hello")
        if not hello.get("ok"):
            raise LoadGenError(f"publisher connections did not open: {hello}")
        # A few subscribers first, so one-time costs (imports, first buffers, the channel)
        # are in the baseline; memory per connection is the marginal cost of the rest.
        warm = min(args.prewarm, n // 10)
        if warm:
            r = lg.cmd(120, cmd="connect", n=warm, window=args.window)
            if r["connected"] != warm:
                cell["notes"].append(
                    f"pre-warm: {r['connected']}/{warm} connected ({r['failReasons']})"
                )
        time.sleep(args.settle)
        rss0 = server.rss()
        t0 = time.monotonic()
        r = lg.cmd(300, cmd="connect", n=n - warm, window=args.window, timeoutMs=240000)
        cell["connectS"] = time.monotonic() - t0
        cell["connected"] = warm + int(r["connected"])
        if r["failed"] or r["connected"] != n - warm:
            cell["notes"].append(
                f"only {cell['connected']}/{n} subscribers connected: "
                f"{r['failReasons']} ({r['end']})"
            )
        time.sleep(args.settle)
        rss1 = server.rss()
        st = lg.cmd(10, cmd="status")
        cell["aliveIdle"] = st["alive"]
        if len(server.ports) > 1:
            names = dict(zip((str(p) for p in server.ports), "AB", strict=False))
            cell["alivePerNode"] = {
                names.get(k, k): v for k, v in st.get("alivePerPort", {}).items()
            }
            cell["redisPid"] = server.redis_pid
        opened = max(1, int(r["connected"]))
        cell["rssBeforeKb"], cell["rssAfterKb"] = rss0, rss1
        cell["memKbPerConn"] = (rss1 - rss0) / opened
        if not server.alive():
            raise RuntimeError(f"{target} exited while subscribers connected:\n{server.log_tail()}")

        w = lg.cmd(60, cmd="warmup", count=3, timeoutMs=15000)
        if not w["ok"]:
            cell["notes"].append(f"warm-up publishes not delivered to everyone: {w['rounds']}")

        server_cpus = args.server_cpu if workers_of(target) == 1 else args.workers_cpus
        cores = sorted({*(int(c) for c in server_cpus.split(",")), int(args.loadgen_cpu)})
        rate = publish_rate(args, transport, n)
        cell["rate"] = quiet_phase(
            server,
            lg,
            cores,
            args,
            args.duration + 60,
            cmd="rate",
            rate=rate,
            durationS=args.duration,
            idleMs=1500,
            drainTimeoutMs=20000,
        )
        cell["sat"] = quiet_phase(
            server,
            lg,
            cores,
            args,
            args.sat_duration + 60,
            cmd="saturate",
            inflight=args.inflight,
            maxPublishes=args.sat_max,
            durationS=args.sat_duration,
            stallMs=1000,
            idleMs=1500,
            drainTimeoutMs=20000,
        )
        final = lg.cmd(10, cmd="status")
        cell["final"] = final
        stats = final["stats"]
        if stats["closes"]:
            cell["notes"].append(f"subscriber connections closed by the server: {stats['closes']}")
        if stats["protoErrors"]:
            cell["notes"].append(f"protocol problems: {stats['protoErrors'][:3]}")
        bad_pub = {k: v for k, v in stats["pubStatus"].items() if not k.startswith("2")}
        if bad_pub:
            cell["notes"].append(f"publish answers other than 2xx: {bad_pub}")
        if stats["reconnects"]:
            cell["notes"].append(f"long-poll connections re-opened: {stats['reconnects']}")
        for ph in ("rate", "sat"):
            p = cell[ph]
            if p["missing"]:
                cell["notes"].append(
                    f"{ph}: {p['missing']} of {p['expected']} deliveries missing ({p['drain']})"
                )
            if p["loadgenCpuPct"] >= LOADGEN_HOT_PCT:
                cell["notes"].append(
                    f"{ph}: load generator at {p['loadgenCpuPct']:.0f}% of its core (server at "
                    f"{p['serverCpuPct']:.0f}%): it may be the bottleneck"
                )
            if p.get("stalls"):
                cell["notes"].append(f"{ph}: {p['stalls']} delivery stalls of 1 s")
        if not server.alive():
            raise RuntimeError(f"{target} exited during the run:\n{server.log_tail()}")
    finally:
        if lg is not None:
            lg.stop()
        server.stop()
        if server.redis_prefix:
            cell["redisPrefix"] = server.redis_prefix
            cell["redisKeysDeleted"] = server.redis_keys_deleted
        err = server.tmp / "error.log"
        if target == "nchan" and err.exists():
            crit = [
                ln
                for ln in err.read_text(errors="replace").splitlines()
                if "[emerg]" in ln or "[alert]" in ln or "[crit]" in ln
            ]
            if crit:
                cell["notes"].append(f"nginx error log: {crit[:3]}")
    return cell


def median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over repeated runs of one cell."""
    if len(runs) == 1:
        return runs[0]

    def merge(values: list[Any]) -> Any:
        if all(isinstance(v, dict) for v in values):
            keys = set().union(*values)
            return {k: merge([v.get(k) for v in values]) for k in keys}
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and len(nums) == len(values) and len(set(nums)) > 1:  # 1,000 stays 1,000
            return statistics.median(nums)
        return values[0]

    out = merge(runs)
    out["notes"] = list(dict.fromkeys(note for r in runs for note in r["notes"]))
    out["runs"] = len(runs)
    out["each"] = [{k: r[k] for k in ("memKbPerConn", "rate", "sat") if k in r} for r in runs]
    return out


# --------------------------------------------------------------------------- report


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return a / b


def rx(a: Any, b: Any) -> str:
    """a / b as a ratio, `1.23x`; `-` when there is none."""
    r = ratio(a, b)
    return fmt(r, 2) + ("x" if r is not None else "")


def cpu_target(transport: str, n: int) -> float:
    """The moderate-rate target against Nchan: 1.0x, but WebSocket 1.2x at 1,000."""
    return 1.2 if transport == "ws" and n <= 1000 else 1.0


MEM_TARGET_KB = {"sse": 3.0, "ws": 6.0}


def verdict(value: float | None, goal: float) -> str:
    return "-" if value is None else ("pass" if value <= goal else "FAIL")


# A run's cells by (target, transport, subscribers).
ByKey = dict[tuple[str, str, int], dict[str, Any]]
Cell = tuple[str, int]  # (transport, subscribers)


def table_head(head: str) -> list[str]:
    """A Markdown table's head row and the rule under it, one `---` per column of head."""
    return [head, "|" + " --- |" * (head.count("|") - 1)]


def section(title: str, intro: str, head: str) -> list[str]:
    """The start of a report section: its title, what it shows (when intro), the table head."""
    return [f"### {title}\n", *([intro] if intro else []), *table_head(head)]


def missing_run(lead: str, blanks: int) -> str:
    """The row of a cell without a run, or without the run it is compared with."""
    return f"{lead} | missing run |" + " |" * blanks


def compared(
    by_key: ByKey, cells: list[Cell], base: str, targets: Iterable[str]
) -> Iterator[tuple[str, str, int, dict[str, Any] | None, dict[str, Any] | None]]:
    """For every target, every cell of a transport it serves: (target, transport, subscribers,
    the base target's run of the cell, the target's run), either None when it is missing."""
    for target in targets:
        for transport, n in cells:
            if serves(target, transport):
                yield (
                    target,
                    transport,
                    n,
                    by_key.get((base, transport, n)),
                    by_key.get((target, transport, n)),
                )


def render(results: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    out = section(
        "Results",
        "",
        "| target | transport | subs | connected | idle KB/conn "
        "| rate: us/msg | rate: msg/s | rate: p50 ms | rate: p99 ms "
        "| sat: us/msg | sat: msg/s | sat: p50 ms | sat: p99 ms | server CPU % (rate/sat) "
        "| loadgen CPU % (rate/sat) | other load % (rate/sat) |",
    )
    for c in results:
        if "error" in c:
            out.append(
                f"| {c['target']} | {TRANSPORT_TITLE[c['transport']]} | {c['subs']:,} "
                f"| failed: {c['error'].splitlines()[0][:80]} |" + " |" * 12
            )
            continue
        r, s = c["rate"], c["sat"]
        hot = lambda p: " !" if p["loadgenCpuPct"] >= LOADGEN_HOT_PCT else ""  # noqa: E731
        out.append(
            f"| {c['target']} | {TRANSPORT_TITLE[c['transport']]} | {c['subs']:,} "
            f"| {fmt(int(c['connected']))} | {fmt(c['memKbPerConn'], 2)} "
            f"| {fmt(r['usPerMsg'], 2)} | {fmt(r['msgsPerS'])} | {fmt(r['p50ms'], 2)} "
            f"| {fmt(r['p99ms'], 2)} "
            f"| {fmt(s['usPerMsg'], 2)} | {fmt(s['msgsPerS'])} | {fmt(s['p50ms'], 2)} "
            f"| {fmt(s['p99ms'], 2)} | {r['serverCpuPct']:.0f} / {s['serverCpuPct']:.0f} "
            f"| {r['loadgenCpuPct']:.0f}{hot(r)} / {s['loadgenCpuPct']:.0f}{hot(s)} "
            f"| {r.get('otherCpuPct', 0):.0f} / {s.get('otherCpuPct', 0):.0f} |"
        )
    out.append("")

    by_key = {(c["target"], c["transport"], c["subs"]): c for c in results if "error" not in c}
    cells = sorted(
        {(c["transport"], c["subs"]) for c in results}, key=lambda k: (TRANSPORTS.index(k[0]), k[1])
    )
    if "tidings" in args.targets and "nchan" in args.targets:
        out.extend(render_nchan(by_key, cells))
    if "tidings" in args.targets and REDIS2 in args.targets:
        out.extend(render_redis2(by_key, cells))
    if "tidings" in args.targets and MOUNT in args.targets:
        out.extend(render_uvicorn(by_key, cells, args.targets))
    if "tidings" in args.targets and (set(PEERS) & set(args.targets)):
        out.extend(render_peers(by_key, cells, args.targets))
    several = [t for t in args.targets if t.startswith(WORKERS_PREFIX) and workers_of(t) > 1]
    if f"{WORKERS_PREFIX}1" in args.targets and several:
        out.extend(render_workers(by_key, cells, several))
    if "tidings" in args.targets and DEFLATE in args.targets:
        out.extend(render_deflate(by_key, cells))
    if FLOOR in args.targets:
        out.extend(render_floor(by_key, cells))

    notes = [(c, note) for c in results for note in c.get("notes", [])]
    notes += [(c, c["error"]) for c in results if "error" in c]
    if notes:
        out.append("### Notes\n")
        for c, note in notes:
            out.append(
                f"- {c['target']} {TRANSPORT_TITLE[c['transport']]} {c['subs']:,}: "
                f"{note.splitlines()[0][:400]}"
            )
        out.append("")
    return "\n".join(out)


def render_nchan(by_key: ByKey, cells: list[Cell]) -> list[str]:
    """tidings against nchan of the same run, with the targets Tidings is to meet."""
    out = section(
        "Tidings / Nchan",
        "",
        "| transport | subs | idle KB/conn | rate: us/msg | sat: us/msg | sat: msg/s "
        "| rate: p50 | rate: p99 | sat: p99 | CPU target | CPU at fixed rate "
        "| CPU at saturation | memory target | memory |",
    )
    for _, transport, n, g, t in compared(by_key, cells, "nchan", ["tidings"]):
        lead = f"| {TRANSPORT_TITLE[transport]} | {n:,}"
        if t is None or g is None:
            out.append(missing_run(lead, 11))
            continue
        goal = cpu_target(transport, n)
        mem_goal = MEM_TARGET_KB.get(transport)
        out.append(
            f"{lead} "
            f"| {rx(t['memKbPerConn'], g['memKbPerConn'])} "
            f"| {rx(t['rate']['usPerMsg'], g['rate']['usPerMsg'])} "
            f"| {rx(t['sat']['usPerMsg'], g['sat']['usPerMsg'])} "
            f"| {rx(t['sat']['msgsPerS'], g['sat']['msgsPerS'])} "
            f"| {rx(t['rate']['p50ms'], g['rate']['p50ms'])} "
            f"| {rx(t['rate']['p99ms'], g['rate']['p99ms'])} "
            f"| {rx(t['sat']['p99ms'], g['sat']['p99ms'])} "
            f"| <= {goal:.1f}x "
            f"| {verdict(ratio(t['rate']['usPerMsg'], g['rate']['usPerMsg']), goal)} "
            f"| {verdict(ratio(t['sat']['usPerMsg'], g['sat']['usPerMsg']), goal)} "
            f"| {'-' if mem_goal is None else f'<= {mem_goal:.0f} KB'} "
            f"| {'-' if mem_goal is None else verdict(t['memKbPerConn'], mem_goal)} |"
        )
    out.append("")
    return out


def render_floor(by_key: ByKey, cells: list[Cell]) -> list[str]:
    """The long-poll floor against Nchan, and Tidings against the floor, of the same run."""
    out = section(
        "The long-poll floor",
        "CPU per delivery at the fixed rate and at saturation, and latency p50 at the fixed "
        "rate, as ratios. The floor (bench/floor_server.py --long-poll) is uvloop + httptools "
        "holding every poll and writing one built answer per event: what a Python server on "
        "this event loop spends before any work of its own.\n",
        "| transport | subs | floor / Nchan: rate us/msg | floor / Nchan: sat us/msg "
        "| floor / Nchan: rate p50 | Tidings / floor: rate us/msg | Tidings / floor: sat us/msg "
        "| Tidings / floor: rate p50 |",
    )

    def ratios(top: dict[str, Any] | None, low: dict[str, Any] | None) -> str:
        if top is None or low is None:
            return " | - | - | -"
        return (
            f" | {rx(top['rate']['usPerMsg'], low['rate']['usPerMsg'])}"
            f" | {rx(top['sat']['usPerMsg'], low['sat']['usPerMsg'])}"
            f" | {rx(top['rate']['p50ms'], low['rate']['p50ms'])}"
        )

    for transport, n in cells:
        if serves(FLOOR, transport):
            floor = by_key.get((FLOOR, transport, n))
            nchan, tidings = (
                by_key.get(("nchan", transport, n)),
                by_key.get(("tidings", transport, n)),
            )
            row = f"| {TRANSPORT_TITLE[transport]} | {n:,}"
            out.append(row + ratios(floor, nchan) + ratios(tidings, floor) + " |")
    out.append("")
    return out


def render_redis2(by_key: ByKey, cells: list[Cell]) -> list[str]:
    """tidings-redis2 against single-node tidings of the same run."""
    out = section(
        "Two nodes through Redis / one node",
        "`tidings-redis2` / `tidings`: deliveries per second, latency and CPU per delivery "
        "(both nodes summed) as ratios; Redis's own CPU (not pinned, not in us/msg) as "
        "absolute numbers, rate / sat.\n",
        "| transport | subs | rate: msg/s | rate: p50 | rate: p99 | sat: msg/s | sat: p50 "
        "| sat: p99 | rate: us/msg | sat: us/msg | Redis CPU % | Redis us/msg | subs per node |",
    )
    for _, transport, n, t, r2 in compared(by_key, cells, "tidings", [REDIS2]):
        lead = f"| {TRANSPORT_TITLE[transport]} | {n:,}"
        if t is None or r2 is None:
            out.append(missing_run(lead, 10))
            continue
        rr, rs = r2["rate"], r2["sat"]
        per_node = r2.get("alivePerNode") or {}
        out.append(
            f"{lead} "
            f"| {rx(rr['msgsPerS'], t['rate']['msgsPerS'])} "
            f"| {rx(rr['p50ms'], t['rate']['p50ms'])} "
            f"| {rx(rr['p99ms'], t['rate']['p99ms'])} "
            f"| {rx(rs['msgsPerS'], t['sat']['msgsPerS'])} "
            f"| {rx(rs['p50ms'], t['sat']['p50ms'])} "
            f"| {rx(rs['p99ms'], t['sat']['p99ms'])} "
            f"| {rx(rr['usPerMsg'], t['rate']['usPerMsg'])} "
            f"| {rx(rs['usPerMsg'], t['sat']['usPerMsg'])} "
            f"| {fmt(rr.get('redisCpuPct'), 0)} / {fmt(rs.get('redisCpuPct'), 0)} "
            f"| {fmt(rr.get('redisUsPerMsg'), 3)} / {fmt(rs.get('redisUsPerMsg'), 3)} "
            f"| {' / '.join(f'{k} {fmt(int(v))}' for k, v in sorted(per_node.items())) or '-'} |"
        )
    out.append("")
    return out


MOUNT_CPU_TARGET = 3.0  # the mount's CPU per SSE delivery at 1,000 subscribers, x tidings serve


def render_uvicorn(by_key: ByKey, cells: list[Cell], targets: list[str]) -> list[str]:
    """The targets under uvicorn against `tidings serve` of the same run."""
    out = section(
        "Under uvicorn / `tidings serve`",
        "Each target under uvicorn divided by `tidings serve` (the `tidings` target) of the same "
        "run; below 1.0x is better except `msg/s`. Target: the mount's CPU per SSE delivery at "
        f"1,000 subscribers at most {MOUNT_CPU_TARGET:.0f}x `tidings serve`'s.\n",
        "| target | transport | subs | idle KB/conn | rate: us/msg | sat: us/msg | sat: msg/s "
        "| rate: p50 | rate: p99 | sat: p99 | CPU target | at fixed rate | at saturation |",
    )
    mounted = [t for t in (MOUNT,) if t in targets]
    for target, transport, n, t, u in compared(by_key, cells, "tidings", mounted):
        lead = f"| {target} | {TRANSPORT_TITLE[transport]} | {n:,}"
        if t is None or u is None:
            out.append(missing_run(lead, 9))
            continue
        judged = target == MOUNT and transport == "sse" and n == 1000
        goal = f"<= {MOUNT_CPU_TARGET:.0f}x" if judged else "-"

        def check(a: Any, b: Any, judged: bool = judged) -> str:
            return verdict(ratio(a, b), MOUNT_CPU_TARGET) if judged else "-"

        out.append(
            f"{lead} "
            f"| {rx(u['memKbPerConn'], t['memKbPerConn'])} "
            f"| {rx(u['rate']['usPerMsg'], t['rate']['usPerMsg'])} "
            f"| {rx(u['sat']['usPerMsg'], t['sat']['usPerMsg'])} "
            f"| {rx(u['sat']['msgsPerS'], t['sat']['msgsPerS'])} "
            f"| {rx(u['rate']['p50ms'], t['rate']['p50ms'])} "
            f"| {rx(u['rate']['p99ms'], t['rate']['p99ms'])} "
            f"| {rx(u['sat']['p99ms'], t['sat']['p99ms'])} "
            f"| {goal} "
            f"| {check(u['rate']['usPerMsg'], t['rate']['usPerMsg'])} "
            f"| {check(u['sat']['usPerMsg'], t['sat']['usPerMsg'])} |"
        )
    out.append("")
    return out


# What Tidings is to beat each Python peer by, peer / tidings of the same run (issue "Every
# core, every rate"): CPU per delivery at the fixed rate and at saturation, idle memory per
# connection.
PEER_TARGETS = {"rate": 3.0, "sat": 10.0, "mem": 10.0}
PEER_LIMITS = {
    SSE_STARLETTE: "no history: no resume (Last-Event-ID ignored), no poll, SSE only",
    FASTAPI_SSE: "no history: no resume (Last-Event-ID ignored), no poll, SSE only; the "
    "fan-out (a queue per stream) is the app's own code",
    SOCKETIO: "no history: a reconnecting client gets nothing it missed; no poll of history "
    "(Engine.IO long-polling carries live packets only); its own client protocol, not plain "
    "WebSocket/SSE",
    CHANNELS: "no history: no resume, no poll; WebSocket only; the in-memory layer is one "
    "process (Channels recommends it for tests)",
}


def render_peers(by_key: ByKey, cells: list[Cell], targets: list[str]) -> list[str]:
    """What Python teams use instead, against `tidings serve` of the same run."""
    out = section(
        "Python peers / Tidings",
        "Each peer under uvicorn divided by `tidings serve` (the `tidings` target) of the same "
        "run, on the transport it serves: how many times more CPU per delivery and idle memory "
        "per connection it needs (above 1.0x is Tidings' advantage). Targets: at least "
        f"{PEER_TARGETS['rate']:.0f}x at the fixed rate, {PEER_TARGETS['sat']:.0f}x at "
        f"saturation, {PEER_TARGETS['mem']:.0f}x idle memory. `sat: msg/s` is Tidings' "
        "deliveries per second over the peer's.\n",
        "| target | transport | subs | idle KB/conn (peer / tidings) | idle memory "
        "| rate: us/msg (peer / tidings) | rate: CPU | sat: us/msg (peer / tidings) | sat: CPU "
        "| sat: msg/s tidings / peer | rate: p99 ms (peer / tidings) | cannot |",
    )

    def cmp(a: Any, b: Any, goal: float) -> tuple[str, str]:
        r = ratio(a, b)
        if r is None:
            return "-", "-"
        return f"{fmt(a, 2)} / {fmt(b, 2)} = {fmt(r, 1)}x", "pass" if r >= goal else "FAIL"

    peers = [t for t in PEERS if t in targets]
    for target, transport, n, t, u in compared(by_key, cells, "tidings", peers):
        lead = f"| {target} | {TRANSPORT_TITLE[transport]} | {n:,}"
        if t is None or u is None:
            out.append(missing_run(lead, 8))
            continue
        mem, mem_ok = cmp(u["memKbPerConn"], t["memKbPerConn"], PEER_TARGETS["mem"])
        rate, rate_ok = cmp(u["rate"]["usPerMsg"], t["rate"]["usPerMsg"], PEER_TARGETS["rate"])
        sat, sat_ok = cmp(u["sat"]["usPerMsg"], t["sat"]["usPerMsg"], PEER_TARGETS["sat"])
        thr = ratio(t["sat"]["msgsPerS"], u["sat"]["msgsPerS"])
        out.append(
            f"{lead} | {mem} | {mem_ok} "
            f"| {rate} | {rate_ok} | {sat} | {sat_ok} "
            f"| {fmt(thr, 1) + 'x' if thr is not None else '-'} "
            f"| {fmt(u['rate']['p99ms'], 2)} / {fmt(t['rate']['p99ms'], 2)} "
            f"| {PEER_LIMITS[target]} |"
        )
    out.append("")
    return out


def render_workers(by_key: ByKey, cells: list[Cell], several: list[str]) -> list[str]:
    """tidings --workers N against --workers 1 of the same run."""
    out = section(
        "Several workers / one worker",
        "`tidings-wN` / `tidings-w1`: deliveries per second, latency and CPU per delivery "
        "(every worker and the supervisor summed) as ratios; the CPU the server and the load "
        "generator used, in % of one core, at saturation.\n",
        "| target | transport | subs | sat: msg/s | sat: p50 | sat: p99 | sat: us/msg "
        "| rate: us/msg | server CPU % (w1 / wN) | loadgen CPU % (w1 / wN) |",
    )
    for target, transport, n, one, many in compared(by_key, cells, f"{WORKERS_PREFIX}1", several):
        lead = f"| {target} | {TRANSPORT_TITLE[transport]} | {n:,}"
        if one is None or many is None:
            out.append(missing_run(lead, 0))
            continue
        s1, sn = one["sat"], many["sat"]
        out.append(
            f"{lead} "
            f"| {rx(sn['msgsPerS'], s1['msgsPerS'])} "
            f"| {rx(sn['p50ms'], s1['p50ms'])} | {rx(sn['p99ms'], s1['p99ms'])} "
            f"| {rx(sn['usPerMsg'], s1['usPerMsg'])} "
            f"| {rx(many['rate']['usPerMsg'], one['rate']['usPerMsg'])} "
            f"| {s1['serverCpuPct']:.0f} / {sn['serverCpuPct']:.0f} "
            f"| {s1['loadgenCpuPct']:.0f} / {sn['loadgenCpuPct']:.0f} |"
        )
    out.append("")
    return out


def render_deflate(by_key: ByKey, cells: list[Cell]) -> list[str]:
    """WebSocket with permessage-deflate (tidings-deflate) against without (tidings)."""
    out = section(
        "WebSocket: permessage-deflate / plain frames",
        "Bytes on the wire per delivery (WebSocket frames as the subscribers read them, "
        "headers included) and server CPU per delivery, with the subscribers negotiating "
        "permessage-deflate and without; the ratio is with / without.\n",
        "| subs | bytes/msg without | bytes/msg with | ratio | rate: us/msg without "
        "| rate: us/msg with | ratio | sat: us/msg without | sat: us/msg with | ratio "
        "| sat: msg/s without | sat: msg/s with | loadgen CPU % sat (without / with) |",
    )
    for _, _, n, p, d in compared(by_key, cells, "tidings", [DEFLATE]):
        if p is None or d is None:
            out.append(missing_run(f"| {n:,}", 11))
            continue
        out.append(
            f"| {n:,} | {fmt(p['sat'].get('bytesPerMsg'))} | {fmt(d['sat'].get('bytesPerMsg'))} "
            f"| {rx(d['sat'].get('bytesPerMsg'), p['sat'].get('bytesPerMsg'))} "
            f"| {fmt(p['rate']['usPerMsg'], 2)} | {fmt(d['rate']['usPerMsg'], 2)} "
            f"| {rx(d['rate']['usPerMsg'], p['rate']['usPerMsg'])} "
            f"| {fmt(p['sat']['usPerMsg'], 2)} | {fmt(d['sat']['usPerMsg'], 2)} "
            f"| {rx(d['sat']['usPerMsg'], p['sat']['usPerMsg'])} "
            f"| {fmt(p['sat']['msgsPerS'])} | {fmt(d['sat']['msgsPerS'])} "
            f"| {p['sat']['loadgenCpuPct']:.0f} / {d['sat']['loadgenCpuPct']:.0f} |"
        )
    out.append("")
    return out


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def fixed_rate_text(args: argparse.Namespace) -> str:
    if args.rate_scaling == "none":
        return (
            f"{args.rate:g} publishes/s (long poll {args.long_poll_rate:g}/s) whatever the "
            "number of subscribers"
        )
    parts = []
    for title, base in (("WebSocket and SSE", args.rate), ("long poll", args.long_poll_rate)):
        per = ", ".join(f"{base * 1000 / n:g}/s at {n:,}" for n in args.subs)
        parts.append(f"{title} {base * 1000:,.0f} deliveries/s (publishes {per} subscribers)")
    return "; ".join(parts)


def workers_text(args: argparse.Namespace) -> str:
    counts = [n for n in getattr(args, "workers", [1]) if n > 1]
    if not counts:
        return ""
    return (
        f" (servers of {', '.join(map(str, counts))} workers on cores "
        f"{getattr(args, 'workers_cpus', '0,1')}, broker {getattr(args, 'tidings_broker', '?')})"
    )


def header(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{k}: {v}" for k, v in meta["versions"].items())
    return (
        f"## Fan-out benchmark, {meta['date']}\n\n"
        f"`{meta['command']}`\n\n"
        f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}), {platform.system()} "
        f"{platform.release()}; server on core {args.server_cpu}"
        f"{workers_text(args)}, load generator on core "
        f"{args.loadgen_cpu}{f', both at nice {args.nice}' if getattr(args, 'nice', 0) else ''}. "
        f"Commit {meta['git']}. {versions}.\n\n"
        f"Fixed rate: {fixed_rate_text(args)} for {args.duration:g} s. Saturation: up to "
        f"{args.inflight} publishes in flight (published but not yet delivered to every "
        f"subscriber), at most {args.sat_max:,} publishes or {args.sat_duration:g} s. Payload "
        f"{payload_text(args)}. Latency from 1 in {args.sample_every} "
        f"subscribers. Each cell is a fresh server; {args.repeat} run(s) per cell "
        f"(median).\n"
    )


def payload_text(args: argparse.Namespace) -> str:
    if getattr(args, "payload_kind", "pad") == "json":
        return "a realistic order document of about 1 KB of JSON, different in every publish"
    return f"about {args.payload_bytes} bytes of JSON"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--targets",
        default="tidings,nchan",
        help="comma list of tidings, nchan, tidings-redis2 (two nodes through Redis), mount "
        "(Tidings inside a FastAPI app under uvicorn), sse-starlette (sse-starlette + "
        "broadcaster under uvicorn, SSE only), fastapi-sse (FastAPI's fastapi.sse, SSE only), "
        "socketio (python-socketio, WebSocket only), channels (Django Channels with the "
        "in-memory layer, WebSocket only), floor (bench/floor_server.py --long-poll: the least "
        "a Python server on uvloop + httptools spends, long poll only), tidings-deflate "
        "(tidings, its WebSocket "
        "subscribers negotiating permessage-deflate)",
    )
    p.add_argument(
        "--transports", default="ws,sse,long_poll", help="comma list of ws, sse, long_poll"
    )
    p.add_argument("--subs", default="1000,10000", help="comma list of subscriber counts")
    p.add_argument("--duration", type=float, default=10.0, help="fixed-rate phase, seconds")
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="fixed-rate publishes per second (at 1,000 subscribers, see --rate-scaling)",
    )
    p.add_argument(
        "--long-poll-rate",
        type=float,
        default=10.0,
        help="--rate for long poll, which costs a request per delivery",
    )
    p.add_argument(
        "--rate-scaling",
        choices=("deliveries", "none"),
        default="deliveries",
        help="deliveries: scale --rate by 1000/subs so every cell gets the same "
        "deliveries per second (50/s at 1,000 subs, 5/s at 10,000); none: --rate as is",
    )
    p.add_argument(
        "--sat-duration",
        type=float,
        default=None,
        help="saturation phase, seconds (default: --duration)",
    )
    p.add_argument(
        "--sat-max", type=int, default=100000, help="saturation: at most this many publishes"
    )
    p.add_argument(
        "--inflight",
        type=int,
        default=16,
        help="saturation: publishes in flight (not yet delivered to everyone)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the report shows medians")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to let memory settle")
    p.add_argument(
        "--prewarm", type=int, default=50, help="subscribers connected before the memory baseline"
    )
    p.add_argument(
        "--window", type=int, default=500, help="subscriber handshakes in progress at once"
    )
    p.add_argument("--sample-every", type=int, default=10, help="latency from 1 in N subscribers")
    p.add_argument("--payload-bytes", type=int, default=100)
    p.add_argument(
        "--payload-kind",
        choices=("pad", "json"),
        default="pad",
        help="pad: a counter and --payload-bytes of x; json: a realistic order document of "
        "about 1 KB whose ids, amounts and items change with every publish",
    )
    p.add_argument("--pub-conns", type=int, default=16, help="publisher keep-alive connections")
    p.add_argument("--backlog", type=int, default=4096, help="nginx listen backlog")
    p.add_argument("--nchan-buffer", type=int, default=32, help="nchan_message_buffer_length")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice value for the server and the load generator; negative (root only) keeps "
        "other work on the machine from disturbing the measurement",
    )
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=10.0,
        help="other processes' use of the benchmark cores (%% of a core) that counts as a "
        "disturbed phase",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="seconds to wait, before each phase, for the benchmark cores to be quiet",
    )
    p.add_argument(
        "--phase-retries",
        type=int,
        default=2,
        help="runs of a disturbed phase again, keeping the least disturbed attempt",
    )
    p.add_argument(
        "--workers",
        default="1",
        help="comma list of worker counts for the tidings target (`tidings serve --workers "
        "N`); more than one value, or one above 1, names the targets tidings-w1, tidings-w2...",
    )
    p.add_argument(
        "--tidings-broker",
        choices=("memory", "redis"),
        default="memory",
        help="broker of the tidings target; redis: 127.0.0.1:6379 with a fresh key prefix per "
        "cell (needed for more than one worker)",
    )
    p.add_argument(
        "--workers-cpus",
        default="0,1",
        help="cores a server of several workers is pinned to (taskset -c)",
    )
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument("--tidings-cmd", default=str(REPO_DIR / ".venv" / "bin" / "tidings"))
    p.add_argument("--tidings-args", default="", help="extra arguments for `tidings serve`")
    p.add_argument(
        "--uvicorn-cmd",
        default=f"{REPO_DIR / '.venv' / 'bin' / 'python'} -m uvicorn",
        help="how to run uvicorn, for the mount and the Python peer targets",
    )
    p.add_argument("--uvicorn-ws", default="websockets-sansio", help="uvicorn's --ws")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--nchan-module", default=None, help="default: from dpkg -L libnginx-mod-nchan")
    p.add_argument("--node", default=shutil.which("node") or "/usr/bin/node")
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "latest.md"))
    p.add_argument(
        "--from-json",
        default=None,
        metavar="PATH",
        help="measure nothing: write the report again from a saved results JSON",
    )
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.transports = [t for t in args.transports.split(",") if t]
    args.subs = [int(n) for n in args.subs.split(",") if n]
    bad = [t for t in args.targets if t not in TARGETS and not t.startswith(WORKERS_PREFIX)] + [
        t for t in args.transports if t not in TRANSPORTS
    ]
    if bad or not args.targets or not args.transports or not args.subs:
        p.error(f"bad --targets/--transports/--subs {bad}")
    if args.sat_duration is None:
        args.sat_duration = args.duration
    args.workers = [int(n) for n in str(args.workers).split(",") if n]
    if not args.workers or min(args.workers) < 1:
        p.error("--workers takes counts of 1 or more")
    if max(args.workers) > 1 and args.tidings_broker == "memory":
        p.error("more than one worker needs --tidings-broker redis (memory:// is one process)")
    if "tidings" in args.targets and args.workers != [1]:
        at = args.targets.index("tidings")
        args.targets[at : at + 1] = [f"{WORKERS_PREFIX}{n}" for n in args.workers]
    if "nchan" in args.targets and args.nchan_module is None:
        args.nchan_module = nchan_module_path()
    return args


def python_versions(args: argparse.Namespace, targets: list[str]) -> dict[str, str]:
    """Versions of the Python packages the uvicorn targets run on, from the interpreter that
    runs uvicorn."""
    names = ["uvicorn", "uvloop", "httptools", "websockets"]
    if MOUNT in targets:
        names.append("fastapi")
    if SSE_STARLETTE in targets:
        names += ["starlette", "sse-starlette", "broadcaster"]
    if FASTAPI_SSE in targets:
        names += ["fastapi", "starlette", "pydantic"]
    if SOCKETIO in targets:
        names += ["python-socketio", "python-engineio", "starlette"]
    if CHANNELS in targets:
        names += ["channels", "django"]
    names = list(dict.fromkeys(names))
    python = args.uvicorn_cmd.split()[0]
    script = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    try:
        out = subprocess.run(
            [python, "-c", script, *names], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"{python}: the uvicorn targets need {names}: run bench/setup.sh") from exc
    found: dict[str, str] = json.loads(out)
    return found


def log_cell(cell: dict[str, Any]) -> None:
    r, s = cell["rate"], cell["sat"]
    log(
        f"  connected {int(cell['connected'])} in {cell['connectS']:.1f}s, "
        f"{cell['memKbPerConn']:.2f} KB/conn; rate {fmt(r['usPerMsg'], 2)} us/msg "
        f"p50 {fmt(r['p50ms'], 2)} ms, server {r['serverCpuPct']:.0f}%, "
        f"loadgen {r['loadgenCpuPct']:.0f}%; sat {fmt(s['usPerMsg'], 2)} us/msg "
        f"{fmt(s['msgsPerS'])} msg/s, server {s['serverCpuPct']:.0f}%, "
        f"loadgen {s['loadgenCpuPct']:.0f}%"
    )
    for note in cell["notes"]:
        log(f"  note: {note.splitlines()[0][:300]}")


def rerender(path: Path, out_path: Path) -> int:
    """Write the report again from a saved latest.json, without measuring anything."""
    data = json.loads(path.read_text())
    saved = argparse.Namespace(**data["args"])
    results = data["results"]
    for cell in results:  # reports before the "other load" column carried it as notes
        cell["notes"] = [n for n in cell.get("notes", []) if "other processes used" not in n]
    body = render(results, saved, data["meta"])
    report = header(saved, data["meta"]) + "\n" + body
    print(report)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(report + "\n")
    (out_path.parent / "readme-table.md").write_text(body + "\n")
    log(f"wrote {out_path} and {out_path.parent / 'readme-table.md'} from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(Path(args.from_json), Path(args.out))
    nofile = args.nofile = raise_nofile()
    if nofile < max(args.subs) + 1000:
        log(f"warning: open files limit is {nofile}, below {max(args.subs) + 1000}")
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if hi - lo < max(args.subs) + 2000:
        log(f"warning: only {hi - lo} ephemeral ports for {max(args.subs)} subscribers")
    if not shutil.which("taskset"):
        raise SystemExit("taskset (util-linux) is required")
    interrupt_on_sigterm()
    versions = {
        "node": subprocess.run(
            [args.node, "--version"], capture_output=True, text=True
        ).stdout.strip()
    }
    if "nchan" in args.targets:
        versions["nginx"] = (
            subprocess.run([args.nginx, "-v"], capture_output=True, text=True)
            .stderr.strip()
            .split("/")[-1]
        )
        pkg = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        versions["nchan"] = pkg or "?"
    uvicorn_targets = [t for t in args.targets if t in UVICORN_APPS]
    if uvicorn_targets:
        versions.update(python_versions(args, uvicorn_targets))
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python3 bench/fanout.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "git": git_rev(),
        "versions": versions,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fanout-"))
    results: list[dict[str, Any]] = []
    log(f"work dir {workdir}; open files limit {nofile}")

    def measure() -> None:
        for transport in args.transports:
            for n in args.subs:
                targets = [t for t in args.targets if serves(t, transport)]
                runs: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
                try:
                    # the targets in turn, run after run: a machine whose speed drifts over
                    # minutes moves every target's runs alike, not one target's more
                    for k in range(args.repeat):
                        for target in targets:
                            log(f"{target} {transport} {n} subscribers (run {k + 1}/{args.repeat})")
                            runs[target].append(measured_cell(target, transport, n))
                finally:  # an interrupted group keeps the runs it finished
                    for target in targets:
                        done = runs[target]
                        ok = [r for r in done if "error" not in r]
                        if done:
                            results.append(median_cell(ok) if ok else done[-1])

    def measured_cell(target: str, transport: str, n: int) -> dict[str, Any]:
        try:
            cell = run_cell(target, transport, n, args, workdir)
        except (RuntimeError, LoadGenError, OSError) as exc:
            log(f"  failed: {exc}")
            failed = {"target": target, "transport": transport, "subs": n, "notes": []}
            return {**failed, "error": str(exc)}
        log_cell(cell)
        return cell

    interrupted = measure_until_interrupted(measure)

    if not results:
        return 1
    body = render(results, args, meta)
    report = header(args, meta) + "\n" + body
    if interrupted:
        report = "**Interrupted: partial results.**\n\n" + report
    print(report)
    out_path.write_text(report + "\n")
    (out_path.with_suffix(".json")).write_text(
        json.dumps(
            {"meta": meta, "args": {k: v for k, v in vars(args).items()}, "results": results},
            indent=1,
            default=str,
        )
    )
    (out_path.parent / "readme-table.md").write_text(body + "\n")
    if any("error" in c for c in results):
        log(f"keeping server and load generator logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    log(
        f"wrote {out_path}, {out_path.with_suffix('.json')} and "
        f"{out_path.parent / 'readme-table.md'}"
    )
    return 130 if interrupted else 0


if __name__ == "__main__":
    exit_with(main)
