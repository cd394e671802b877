"""The server's processes as Linux shows them: who listens on a port, their CPU time and RSS.

Only for a server on this machine. The PIDs come from ``--pid`` or from the listening socket:
its inode in ``/proc/net/tcp`` (and ``tcp6``), then the process whose ``/proc/PID/fd`` holds
``socket:[inode]``; every one found counts (``tidings serve --workers N`` shares one port).
CPU time is ``utime + stime`` of ``/proc/PID/stat``, RSS the resident pages of
``/proc/PID/statm``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerProcesses", "listening_pids"]

PROC = Path("/proc")
LISTEN = "0A"  # the TCP state in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == LISTEN and int(local.rpartition(":")[2], 16) == port:
                    inodes.add(inode)
    return inodes


def listening_pids(port: int) -> tuple[int, ...]:
    """The PIDs of the processes listening on ``port`` that this user may inspect."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        found.append(int(entry.name))
                        break
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class ServerProcesses:
    """The processes of one server: their CPU seconds and resident bytes, summed."""

    pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids:
            stat = (PROC / str(pid) / "stat").read_text()
            fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        pages = 0
        for pid in self.pids:
            pages += int((PROC / str(pid) / "statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
