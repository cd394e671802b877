"""Helpers for the tests of ``tidings serve --workers N``: the node, its worker PIDs, and which
worker holds a given connection (read from ``/proc``, as the kernel sees it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from tests.cluster.support import FAST_ENV
from tests.serve_process import ServeProcess

SERVING = re.compile(r"worker (\d+) serving \(pid (\d+)\)")
PROC = Path("/proc")


class WorkersNode(ServeProcess):
    """``tidings serve --port 0 --workers N --broker URL --log-level info``."""

    def __init__(self, broker: str, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.workers = workers
        super().__init__(
            "--no-lab",
            "--workers",
            str(workers),
            "--broker",
            broker,
            "--log-level",
            "info",
            env={**FAST_ENV, **(env or {})},
        )

    def worker_pids(self) -> dict[int, int]:
        """Worker number -> PID of its latest process, from the workers' own log lines."""
        return {int(number): int(pid) for number, pid in SERVING.findall(self.logs())}

    def wait_listening(self, timeout: float = 20.0) -> WorkersNode:
        """The node's ``listening`` line, then every worker's own ``serving`` line: the
        workers write to the same stderr as the supervisor, and may come after it."""
        super().wait_listening(timeout)
        self.wait_serving(lambda pids: len(pids) == self.workers, "every worker serving")
        return self

    def wait_serving(
        self, condition: Callable[[dict[int, int]], bool], what: str, timeout: float = 30.0
    ) -> dict[int, int]:
        """Wait until the workers' ``serving`` lines satisfy ``condition``; their PIDs."""
        with self._logged:
            if not self._logged.wait_for(lambda: condition(self.worker_pids()), timeout):
                raise AssertionError(f"{what}: not within {timeout} s:\n{self.logs()}")
        return self.worker_pids()


def _connection_inodes(server_port: int, client_port: int) -> set[str]:
    """Inodes of the server's end of the connection from ``client_port`` to ``server_port``."""
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rpartition(":")[2], 16) == server_port
                    and int(remote.rpartition(":")[2], 16) == client_port
                    and inode != "0"
                ):
                    found.add(f"socket:[{inode}]")
    return found


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's end of that connection (None: none, yet)."""
    sockets = _connection_inodes(server_port, client_port)
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in (PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        return pid
    return None


async def scrape(port: int, pids: list[int]) -> tuple[str, int | None]:
    """``GET /metrics`` on a fresh connection: the body, and the worker that answered."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        # Still open (keep-alive): the kernel still shows which process holds its end.
        return body.decode(), socket_owner(port, client_port, pids)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def metric(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels, as written) in a scrape."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in the scrape"
    return float(match[1])
