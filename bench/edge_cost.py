"""The Python cost of one delivery through the standalone edge, without sockets.

A node and its uvloop edge run in this process; every connection is an ``HttpConnection`` (or
the stream it becomes) on an in-memory transport that keeps what it is given. Requests are
fed as bytes, publishes go through ``POST /api/publish``, and the process CPU time is divided
by the deliveries (or requests). No system call is made per delivery, so the figure is the
server's own Python work: what the fan-out benchmark's us/msg holds besides the kernel's.
It is repeatable to a few per cent on a busy machine, where a fan-out run is not.

    python3 bench/edge_cost.py long_poll            # 1,000 held long polls, 30 publishes
    python3 bench/edge_cost.py ws --subs 1000 --rounds 100
    python3 bench/edge_cost.py poll_304             # short polls answered 304, one connection

Kinds: ``ws``, ``sse``, ``long_poll`` (us per delivery), ``poll_304``, ``poll_200`` (a short
poll with nothing new, with and without ``If-None-Match``; us per request), ``publish`` (``POST
/api/publish`` with no subscriber, ``--subs`` times ``--rounds`` of them; us per publish). Run
it with the project's environment (``.venv/bin/python``); ``PYTHONPATH=<other checkout>/src``
measures another version the same way.

``--browser`` gives every poll the twelve headers Chromium's ``fetch()`` sends besides ``Host``
(user agent, client hints, fetch metadata, ``Accept-*``, ``Referer``): a real client's request,
where the bare one carries ``Host`` alone.

``--instructions`` counts instead of timing: the process runs under valgrind's callgrind twice,
with 4 and with 14 rounds, and the difference of the instructions executed, divided by the
deliveries (or requests) of the 10 rounds between, is the cost of one, start-up left out. It
is about the same number on every run of the same code (to 0.2 % on one machine, 2.5 % on
another), whatever else the machine does, so a change of a few per cent shows (times here
vary by 10 to 15 per cent between runs); it is about 30 times slower, and instructions are
not time (a cache miss costs no instruction). Polls and publishes only: the ``ws`` and
``sse`` fan-outs follow the loop's timing (slices, heartbeats), and their counts vary by a
tenth.

    python3 bench/edge_cost.py long_poll --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time

import uvloop

from tidings.config import load_settings
from tidings.server.core.node import Node
from tidings.server.core.ops.static import StaticFiles
from tidings.server.uvloop.http import Edge, HttpConnection
from tidings.server.uvloop.memory import MemoryTransport

try:
    from tidings.server.collector import tune_collector
except ImportError:  # an older version (PYTHONPATH=...): its own place, or none
    try:
        from tidings.server.uvloop.collector import tune_collector  # type: ignore[no-redef]
    except ImportError:

        def tune_collector() -> None:
            pass


CURSOR = re.compile(rb"Tidings-Cursor: ([^\r]+)")
PAYLOAD = b'{"channel":"bench","data":{"bench_t":1,"seq":1,"pad":"' + b"x" * 60 + b'"}}'
PUBLISH = (
    b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD)
)
# What Chromium's fetch() sends besides Host, in its order: a poll "from a browser" (--browser).
BROWSER_HEADERS = (
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/156.0.0.0 Safari/537.36\r\n"
    b'sec-ch-ua: "Chromium";v="156", "Not)A;Brand";v="24"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: cors\r\n"
    b"Sec-Fetch-Dest: empty\r\n"
    b"Referer: http://127.0.0.1/app\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
)
WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_text(payload: bytes) -> bytes:
    """A client's masked WebSocket text frame (payload under 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def measure(kind: str, subs: int, rounds: int, browser: bool = False) -> str:
    # no heartbeat within a run: a fan-out writes those whose turn came, which are not deliveries
    settings = load_settings(environ={"TIDINGS_SERVER_HEARTBEAT_SECONDS": "864000"})
    node = Node(settings, asyncio.get_running_loop())
    edge = Edge(node, await StaticFiles.load())
    await node.start()
    tune_collector()  # as `tidings serve` does once listening
    try:
        return await _measure(edge, kind, subs, rounds, BROWSER_HEADERS if browser else b"")
    finally:
        await node.close()


async def _measure(edge: Edge, kind: str, subs: int, rounds: int, extra: bytes) -> str:

    def connect() -> tuple[HttpConnection, MemoryTransport]:
        connection, transport = edge.protocol_factory(), MemoryTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        return connection, transport

    publisher, answers = connect()

    async def publish() -> None:
        publisher.data_received(PUBLISH)
        for _ in range(5):  # the fan-out runs on the next loop iterations
            await asyncio.sleep(0)

    if kind == "publish":
        total = subs * rounds
        started = time.process_time()
        for _ in range(total):
            await publish()
            answers.written.clear()
        spent = time.process_time() - started
        return f"publish: {spent * 1e6 / total:.2f} us per publish"

    if kind in ("poll_304", "poll_200"):
        await publish()
        connection, transport = connect()
        connection.data_received(b"GET /poll?channel=bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        found = CURSOR.search(b"".join(transport.written))
        assert found is not None, transport.written
        cursor = found.group(1)
        match = b'If-None-Match: "' + cursor + b'"\r\n' if kind == "poll_304" else b""
        request = b"GET /poll?channel=bench&since=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s\r\n" % (
            cursor,
            extra,
            match,
        )
        total = subs * rounds
        started = time.process_time()
        for _ in range(total):
            connection.data_received(request)
            transport.written.clear()
        spent = time.process_time() - started
        return f"{kind}: {spent * 1e6 / total:.2f} us per request"

    connections = [connect() for _ in range(subs)]
    if kind == "long_poll":
        for connection, _ in connections:
            connection.data_received(
                b"GET /poll?channel=bench&timeout=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )

        def poll_again() -> None:
            for connection, transport in connections:
                cursor = CURSOR.findall(b"".join(transport.written))[-1]
                transport.written.clear()
                connection.data_received(
                    b"GET /poll?channel=bench&timeout=30&since=%s HTTP/1.1\r\n"
                    b"Host: 127.0.0.1\r\n%s\r\n" % (cursor, extra)
                )

        await publish()
        poll_again()
        started = time.process_time()
        for _ in range(rounds):
            await publish()
            poll_again()
        spent = time.process_time() - started
        # what the loop above does besides the server's work: find the cursor, build a request
        started = time.process_time()
        for _ in range(rounds):
            for _connection, transport in connections:
                transport.written.append(b"HTTP/1.1 200 OK\r\nTidings-Cursor: abcdefgh.1\r\n\r\n")
                cursor = CURSOR.findall(b"".join(transport.written))[-1]
                transport.written.clear()
                _ = b"GET /poll?channel=bench&timeout=30&since=%s HTTP/1.1\r\n\r\n" % cursor
        driver = time.process_time() - started
        deliveries = rounds * subs
        return (
            f"{kind}: {(spent - driver) * 1e6 / deliveries:.2f} us per delivery "
            f"(the driver's {driver * 1e6 / deliveries:.2f} us taken off)"
        )

    for connection, _ in connections:
        if kind == "sse":
            connection.data_received(b"GET /sse?channel=bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        else:
            connection.data_received(WS_UPGRADE)
    await asyncio.sleep(0.05)
    if kind == "ws":
        frame = masked_text(b'{"op":"subscribe","channel":"bench","ref":1}')
        for _, transport in connections:
            transport.protocol.data_received(frame)
        await asyncio.sleep(0.05)
    await publish()
    for _, transport in connections:
        transport.written.clear()
    started = time.process_time()
    for _ in range(rounds):
        await publish()
    spent = time.process_time() - started
    writes = sum(len(transport.written) for _, transport in connections)
    assert writes == rounds * subs, f"{writes} writes for {rounds * subs} deliveries"
    return f"{kind}: {spent * 1e6 / writes:.3f} us per delivery"


COUNTED_ROUNDS = (4, 14)


def instructions(kind: str, subs: int, browser: bool = False) -> str:
    """Instructions per delivery (or request) of ``kind``, counted by callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    counts = []
    for rounds in COUNTED_ROUNDS:
        argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
        argv += [os.path.abspath(__file__), kind, "--subs", str(subs), "--rounds", str(rounds)]
        argv += ["--browser"] if browser else []
        run = subprocess.run([*argv, "--repeat", "1"], capture_output=True, text=True)
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise SystemExit(f"callgrind run failed ({run.returncode}):\n{run.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    each = (counts[1] - counts[0]) / ((COUNTED_ROUNDS[1] - COUNTED_ROUNDS[0]) * subs)
    units = {"poll_304": "request", "poll_200": "request", "publish": "publish"}
    unit = units.get(kind, "delivery")
    return f"{kind}: {each:,.0f} instructions per {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "kind", choices=("ws", "sse", "long_poll", "poll_304", "poll_200", "publish")
    )
    parser.add_argument("--subs", type=int, default=1000, help="connections (default 1000)")
    parser.add_argument("--rounds", type=int, default=30, help="publishes (default 30)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements (default 3)")
    parser.add_argument(
        "--browser",
        action="store_true",
        help="polls carry the twelve headers Chromium's fetch() adds to Host (long_poll, poll_*)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under callgrind instead of timing (see above)",
    )
    args = parser.parse_args()
    if args.instructions:
        if args.kind in ("ws", "sse"):
            parser.error("--instructions counts polls and publishes: ws and sse follow the loop")
        print(instructions(args.kind, args.subs, args.browser), flush=True)
        return
    for _ in range(args.repeat):
        print(uvloop.run(measure(args.kind, args.subs, args.rounds, args.browser)), flush=True)


if __name__ == "__main__":
    main()
