#!/usr/bin/env python3
"""Short polling throughput: Tidings against Nchan's intervalpoll and a bare Python floor.

For every target and path this starts the server pinned to core 0 and runs wrk pinned to core 1
(`wrk -t1 -c64`, keep-alive connections, a fixed duration) against one short-poll URL, and
reports polls per second and the server's CPU time per poll (from /proc, the server's own
process). Three paths:

- `200`: a poll that is caught up (Tidings: `GET /poll?channel=bench&since=<cursor>`, answered
  `200 {"events": [], "cursor": ...}`; Nchan: `GET /poll?channel=bench` with no condition,
  answered with the one message the channel holds; floor: a fixed 200 of the same size);
- `304`: the same poll with `If-None-Match: <ETag>` (and, for Nchan, `If-Modified-Since`), which
  is answered `304 Not Modified` with no body;
- `200-stale`: the same conditional poll with an ETag that no longer matches (Nchan: and a
  `If-Modified-Since` of 1970), answered as `200` is: the request of `304`, the answer of
  `200`. Between `304` and `200` the requests differ too (a header more to parse); between
  `304` and `200-stale` only the answers do.

Targets: `tidings` (`tidings serve`, memory broker), `nchan` (nginx with the Nchan module, one
worker, `nchan_subscriber intervalpoll`), `floor` (bench/floor_server.py: uvloop + httptools
answering a fixed 304 or 200, the least a Python server does per request). Before each
measurement one request checks the status and the size of the answer, and after it the bytes
wrk read per request must match that size, so a wrong answer cannot pass for a fast one.

Standard library only besides wrk. Every process it starts is stopped by its PID; all traffic
goes to 127.0.0.1. Each measurement is bounded by --duration; the whole run by the number of
targets, paths and --repeat.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import fanout
import wrkbench
from fanout import BENCH_DIR, REPO_DIR, ManagedProcess, fmt, log

CHANNEL = "bench"
TARGETS = ("tidings", "nchan", "floor")
PATHS = ("200", "304", "200-stale")
STALE_ETAG = '"stale.1"'
STALE_SINCE = "Thu, 01 Jan 1970 00:00:00 GMT"
# The targets for the 304 path: at least this share of Nchan's polls/s, and within
# this share of the bare floor's.
NCHAN_SHARE = 0.5
FLOOR_SHARE = 0.9


# --------------------------------------------------------------------------- servers


class Target:
    """A running server and the request that is one poll on each path."""

    def __init__(self, name: str, port: int, mp: ManagedProcess, tmp: Path) -> None:
        self.name, self.port, self.mp, self.tmp = name, port, mp, tmp
        self.url = ""
        self.headers: dict[str, dict[str, str]] = {}

    def pids(self) -> list[int]:
        return self.mp.tree()

    def cpu(self) -> float:
        return fanout.cpu_seconds(self.pids())

    def stop(self) -> None:
        self.mp.stop()


def start_floor(args: argparse.Namespace, workdir: Path) -> Target:
    port = fanout.free_port()
    tmp = Path(tempfile.mkdtemp(prefix="floor-", dir=workdir))
    argv = [
        *fanout.pinned(args, args.server_cpu),
        args.python,
        str(BENCH_DIR / "floor_server.py"),
        str(port),
    ]
    mp = ManagedProcess("floor server", argv, tmp / "server.log", stdin=subprocess.DEVNULL)
    if not fanout.wait_healthy(mp, port, args.start_timeout):
        tail = mp.log_tail()
        mp.stop(grace=5)
        raise RuntimeError(f"floor did not start on port {port}:\n{tail}")
    t = Target("floor", port, mp, tmp)
    t.url = f"http://127.0.0.1:{port}/poll?channel={CHANNEL}"
    t.headers = {
        "200": {},
        "304": {"If-None-Match": '"jP28yEAX.1"'},
        "200-stale": {"If-None-Match": STALE_ETAG},
    }
    return t


def publish(port: int, path: str, body: bytes) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        if not 200 <= r.status < 300:
            raise RuntimeError(f"publish to {path} answered {r.status}")


def start_target(name: str, args: argparse.Namespace, workdir: Path) -> Target:
    if name == "floor":
        return start_floor(args, workdir)
    server = fanout.start_server(name, args, workdir)
    t = Target(name, server.port, server.mp, server.tmp)
    base = f"http://127.0.0.1:{server.port}"
    payload = {"bench_t": 0, "seq": 0, "pad": "x" * 60}
    if name == "tidings":
        publish(
            server.port, "/api/publish", json.dumps({"channel": CHANNEL, "data": payload}).encode()
        )
        with urllib.request.urlopen(f"{base}/poll?channel={CHANNEL}", timeout=5) as r:
            cursor, etag = r.headers["Tidings-Cursor"], r.headers["ETag"]
        if not cursor or not etag:
            raise RuntimeError("tidings: a poll answered without Tidings-Cursor or ETag")
        t.url = f"{base}/poll?channel={CHANNEL}&since={urllib.parse.quote(cursor, safe='')}"
        t.headers = {
            "200": {},
            "304": {"If-None-Match": etag},
            "200-stale": {"If-None-Match": STALE_ETAG},
        }
    else:  # nchan: one message in the channel; a poll without conditions gets it
        publish(server.port, f"/pub?channel={CHANNEL}", json.dumps(payload).encode())
        t.url = f"{base}/poll?channel={CHANNEL}"
        with urllib.request.urlopen(t.url, timeout=5) as r:
            lm, etag = r.headers["Last-Modified"], r.headers["ETag"]
        if not lm or not etag:
            raise RuntimeError("nchan: intervalpoll answered without Last-Modified or ETag")
        t.headers = {
            "200": {},
            "304": {"If-Modified-Since": lm, "If-None-Match": etag},
            "200-stale": {"If-Modified-Since": STALE_SINCE, "If-None-Match": STALE_ETAG},
        }
    return t


def probe(port: int, url: str, headers: dict[str, str]) -> tuple[int, int]:
    """Status and size in bytes (head and body) of one answer, read over a raw socket."""
    path = url.split(str(port), 1)[1]
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"{url}: connection closed before the answer's head")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            if name.strip().lower() == b"transfer-encoding":
                raise RuntimeError(f"{url}: chunked answer, expected a fixed length")
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, len(head) + 4 + length


# --------------------------------------------------------------------------- wrk

WRK_REQS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(B|KB|MB|GB|TB) read")
BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
BYTES_TOLERANCE = 0.03  # wrk prints what it read with two decimals
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_PCT = re.compile(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(out: str) -> dict[str, Any]:
    m = WRK_REQS.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * wrkbench.UNIT_S[m.group(3)]
    read = float(m.group(4)) * BYTE_UNITS[m.group(5)]
    non2xx = WRK_NON2XX.search(out)
    errors = WRK_ERRORS.search(out)
    pct = {f"p{p}ms": float(v) * wrkbench.UNIT_S[u] * 1000 for p, v, u in WRK_PCT.findall(out)}
    return {
        "requests": requests,
        "seconds": seconds,
        "bytesPerAnswer": read / requests if requests else None,
        "non2xx3xx": int(non2xx.group(1)) if non2xx else 0,
        "socketErrors": sum(int(g) for g in errors.groups()) if errors else 0,
        **pct,
    }


def measure(t: Target, path: str, args: argparse.Namespace, cores: list[int]) -> dict[str, Any]:
    headers = t.headers[path]
    status, size = probe(t.port, t.url, headers)
    want = 304 if path == "304" else 200
    if status != want:
        raise RuntimeError(f"{t.name} {path}: the probe was answered {status}")
    argv = [
        *fanout.pinned(args, args.wrk_cpu),
        args.wrk,
        "-t1",
        f"-c{args.connections}",
        f"-d{args.duration:g}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(t.url)

    def measure_once(_waited: float) -> dict[str, Any]:
        run = wrkbench.run_wrk(
            f"wrk {t.name} {path}", argv, t.tmp, f"wrk-{path}.out", t.cpu, cores, args.duration
        )
        if run.returncode != 0:
            raise RuntimeError(f"wrk exited {run.returncode}: {run.log_tail}")
        r = parse_wrk(run.text)
        r.update(run.cpu(r["seconds"]))
        r["pollsPerS"] = r["requests"] / r["seconds"]
        r["usPerPoll"] = run.server_s * 1e6 / r["requests"] if r["requests"] else None
        r["answerBytes"] = size
        r["status"] = status
        return r

    def disturbed(r: dict[str, Any], _attempt: int) -> None:
        log(f"  other processes used {r['otherCpuPct']:.0f}% of a core during the run")

    # on cores as quiet as we can get them, as fanout.py measures its phases
    r, _ = fanout.least_disturbed(args, cores, t.cpu, measure_once, disturbed)
    bad = r["non2xx3xx"] + r["socketErrors"]
    if bad:
        raise RuntimeError(
            f"{t.name} {path}: {r['non2xx3xx']} bad answers, {r['socketErrors']} socket errors"
        )
    per = r["bytesPerAnswer"]
    if per is None or abs(per - size) > BYTES_TOLERANCE * size:
        raise RuntimeError(
            f"{t.name} {path}: wrk read {fmt(per)} bytes per answer, the probe's answer has {size}"
        )
    status_after, size_after = probe(t.port, t.url, headers)
    if (status_after, size_after) != (status, size):
        raise RuntimeError(
            f"{t.name} {path}: answer changed during the run: {status}/{size} B -> "
            f"{status_after}/{size_after} B"
        )
    return r


# --------------------------------------------------------------------------- report


def versus(tr: dict[str, Any], other: dict[str, Any] | None, key: str) -> str:
    """Tidings' value of key over another target's, as a ratio."""
    if other is None or "error" in other:
        return "-"
    v = fanout.ratio(tr[key], other[key])
    return "-" if v is None else f"{v:.2f}x"


def meets(tr: dict[str, Any], path: str, other: dict[str, Any] | None, share: float) -> str:
    """pass when Tidings' 304 polls/s are at least share of the other target's."""
    if path != "304" or other is None or "error" in other:
        return "-"
    v = fanout.ratio(tr["pollsPerS"], other["pollsPerS"])
    return "-" if v is None else ("pass" if v >= share else "FAIL")


def render(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    out = ["### Results\n"]
    out.append(
        "| target | path | polls/s | us CPU per poll | server CPU % | wrk CPU % | p50 ms | p99 ms "
        "| answer bytes | other load % |"
    )
    out.append("|" + " --- |" * 10)
    for name in args.targets:
        for path in args.paths:
            r = results.get(name, {}).get(path)
            if r is None or "error" in r:
                err = (r or {}).get("error", "missing run").splitlines()[0][:100]
                out.append(f"| {name} | {path} | failed: {err} |" + " |" * 7)
                continue
            out.append(
                f"| {name} | {path} | {fmt(r['pollsPerS'])} | {fmt(r['usPerPoll'], 2)} "
                f"| {r['serverCpuPct']:.0f} | {r['wrkCpuPct']:.0f} | {fmt(r.get('p50ms'), 2)} "
                f"| {fmt(r.get('p99ms'), 2)} | {r['answerBytes']} | {r['otherCpuPct']:.0f} |"
            )
    out.append("")
    t = results.get("tidings", {})
    if t:
        out.append("### Tidings / peers\n")
        out.append(
            f"Targets for the 304 path: at least {NCHAN_SHARE:.1f}x Nchan's polls/s, at least "
            f"{FLOOR_SHARE:.1f}x the floor's, and the cheapest of Tidings' answers.\n"
        )
        out.append(
            "| path | polls/s / Nchan | polls/s / floor | us per poll / Nchan "
            "| us per poll / floor | vs Nchan | vs floor |"
        )
        out.append("|" + " --- |" * 7)
        for path in args.paths:
            tr = t.get(path)
            n = results.get("nchan", {}).get(path)
            f = results.get("floor", {}).get(path)
            if tr is None or "error" in tr:
                continue
            rx = partial(versus, tr)
            goal = partial(meets, tr, path)

            out.append(
                f"| {path} | {rx(n, 'pollsPerS')} | {rx(f, 'pollsPerS')} | {rx(n, 'usPerPoll')} "
                f"| {rx(f, 'usPerPoll')} | {goal(n, NCHAN_SHARE)} | {goal(f, FLOOR_SHARE)} |"
            )
        out.append("")
        if all(p in t and "error" not in t[p] for p in ("200", "304")):
            c200, c304 = t["200"]["usPerPoll"], t["304"]["usPerPoll"]
            out.append(
                f"Tidings' 304 costs {fmt(c304, 2)} us of CPU per poll against {fmt(c200, 2)} us "
                f"for the caught-up 200 ({'cheaper' if c304 < c200 else 'NOT cheaper'}).\n"
            )
        if all(p in t and "error" not in t[p] for p in ("304", "200-stale")):
            c304, stale = t["304"]["usPerPoll"], t["200-stale"]["usPerPoll"]
            out.append(
                f"To the same conditional request, the 304 costs {fmt(c304, 2)} us against "
                f"{fmt(stale, 2)} us for a 200 ({'cheaper' if c304 < stale else 'NOT cheaper'}).\n"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--targets", default="tidings,nchan,floor", help="comma list of tidings, nchan, floor"
    )
    p.add_argument("--paths", default="200,304,200-stale", help="comma list of 200, 304, 200-stale")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per measurement")
    p.add_argument("--connections", type=int, default=64, help="wrk -c: keep-alive connections")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the report shows medians")
    wrkbench.add_server_arguments(p)
    p.add_argument("--quiet-pct", type=float, default=10.0)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--phase-retries", type=int, default=1)
    p.add_argument("--python", default=str(REPO_DIR / ".venv" / "bin" / "python"))
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "shortpoll.md"))
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.paths = [x for x in args.paths.split(",") if x]
    bad = [t for t in args.targets if t not in TARGETS] + [x for x in args.paths if x not in PATHS]
    if bad or not args.targets or not args.paths:
        p.error(f"bad --targets/--paths {bad}")
    wrkbench.server_settings(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = wrkbench.prepare(args)
    workdir = Path(tempfile.mkdtemp(prefix="shortpoll-"))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def measure_cells() -> None:
        for k in range(args.repeat):
            for name in args.targets:
                log(f"{name} (run {k + 1}/{args.repeat})")
                try:
                    t = start_target(name, args, workdir)
                except (RuntimeError, OSError) as exc:
                    log(f"  failed to start: {exc}")
                    for path in args.paths:
                        runs.setdefault(name, {}).setdefault(path, []).append({"error": str(exc)})
                    continue
                try:
                    for path in args.paths:
                        try:
                            r = measure(t, path, args, cores)
                            log(
                                f"  {path}: {fmt(r['pollsPerS'])} polls/s, "
                                f"{fmt(r['usPerPoll'], 2)} us/poll, "
                                f"server {r['serverCpuPct']:.0f}%, "
                                f"wrk {r['wrkCpuPct']:.0f}%, other {r['otherCpuPct']:.0f}%"
                            )
                        except (RuntimeError, OSError) as exc:
                            log(f"  {path} failed: {exc}")
                            r = {"error": str(exc)}
                        runs.setdefault(name, {}).setdefault(path, []).append(r)
                finally:
                    t.stop()

    interrupted = fanout.measure_until_interrupted(measure_cells)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, paths in runs.items():
        for path, rs in paths.items():
            ok = [r for r in rs if "error" not in r]
            if not ok:
                results.setdefault(name, {})[path] = rs[-1]
                continue
            merged = wrkbench.medians(ok)
            merged["runs"] = len(ok)
            merged["each"] = [
                {k: r[k] for k in ("pollsPerS", "usPerPoll", "otherCpuPct")} for r in ok
            ]
            results.setdefault(name, {})[path] = merged
    versions = subprocess.run([args.wrk, "--version"], capture_output=True, text=True).stdout
    header = wrkbench.header("Short polling", "shortpoll.py", argv, args) + (
        f"{versions.splitlines()[0].split(' Copyright')[0] if versions else 'wrk'}. "
        f"`wrk -t1 -c{args.connections} -d{args.duration:g}s` per cell; {args.repeat} run(s) "
        "per cell (median).\n"
    )
    report = header + "\n" + render(results, args)
    failed = any("error" in r for paths in results.values() for r in paths.values())
    return wrkbench.write_report(args, report, results, interrupted, failed, workdir)


if __name__ == "__main__":
    fanout.exit_with(main)
