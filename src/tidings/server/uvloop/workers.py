"""``tidings serve --workers N``: N processes serving one port, and the supervisor over them.

The supervisor serves nothing itself. It binds the port once, without listening, with
``SO_REUSEPORT``: that holds the port (``--port 0`` becomes a real one before any worker
starts, and no other program can take it) and lets every worker bind the same port with
``SO_REUSEPORT`` too. The kernel then spreads new connections over the listening workers;
the supervisor's socket, which never listens, gets none. Each worker is a node of its own
on the shared broker (Redis or NATS), so an event published through any worker reaches the
subscribers of every worker, and a client that loses its worker resumes on another with
its cursor.

What the supervisor does:

- starts the workers (``python -m tidings.server.uvloop.worker``, each in a session of its
  own, so that a Ctrl-C in a terminal reaches the supervisor only, and each worker hears
  one signal, not two) and prints the ``listening on`` line once every one listens; a
  worker that fails at start-up stops the node with its exit status;
- restarts a worker that dies, after a jittered backoff, at most ``RESTARTS_PER_MINUTE``
  times a minute per worker (beyond that it waits for the minute to pass), saying so in the
  log each time;
- on SIGTERM or SIGINT sends SIGTERM to every worker, which drains, and exits once they
  have all exited; a second signal is passed on too (the workers stop waiting for slow
  clients); a worker still running ``KILL_SECONDS`` past the drain window is killed;
- relays the node's numbers. Each worker sends its figures once a second; twice a second
  the supervisor sends each worker the sum of the others' latest figures and of what dead
  workers counted, so that ``/metrics``, ``/readyz`` and ``/admin`` describe the whole node
  whichever worker answers (``core/peers.py``). Pipes to processes it started anyway need
  no run directory to clean up, no shared memory to size, and a dead worker's last figures
  are at hand when it dies.

If the supervisor itself is killed, every worker sees its stdin close, drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from dataclasses import replace

import orjson

from tidings.client.backoff import Backoff
from tidings.config import Settings
from tidings.server.core.figures import Figures
from tidings.server.core.peers import Peers
from tidings.server.drain import GRACE_SECONDS
from tidings.server.uvloop.server import announce
from tidings.server.uvloop.worker import CONTROL_LIMIT, WorkerPlan

log = logging.getLogger("tidings.server")

WORKER_COMMAND = (sys.executable, "-m", "tidings.server.uvloop.worker")
RELAY_SECONDS = 0.5
STALE_SECONDS = 3.0  # a worker silent this long is not ready
START_SECONDS = 30.0  # for a worker to listen, at start-up
KILL_SECONDS = 5.0  # past drain_seconds and its grace, a worker still running is killed
RESTARTS_PER_MINUTE = 5
RESTART_BACKOFF = Backoff(initial=0.5, maximum=10.0)


class Slot:
    """One of the N places a worker runs in; its process changes when it is restarted."""

    __slots__ = (
        "crashes",
        "figures",
        "index",
        "listener",
        "process",
        "ready",
        "reported_at",
        "restarts",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()  # the current process listens
        self.figures: Figures | None = None  # the current process's latest
        self.reported_at = 0.0
        self.crashes = 0  # in a row, for the backoff
        self.restarts: deque[float] = deque()  # times of restarts in the last minute
        self.listener: asyncio.Task[None] | None = None  # reads the current process's lines

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Workers:
    """The supervisor of one node's worker processes: ``await Workers(...).run()``."""

    def __init__(self, settings: Settings, log_level: str) -> None:
        self.settings = settings
        self.log_level = log_level
        self.slots = [Slot(index) for index in range(1, settings.server.workers + 1)]
        self.retired = Figures()  # what dead workers counted
        self.restarts = 0
        self.relay_failures = 0
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status (0 once every worker drained)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        held, port = reserve(self.settings.server.host, self.settings.server.port)
        server = replace(self.settings.server, port=port)
        self.settings = replace(self.settings, server=server)
        try:
            status = await self._start_all()
            if status:
                return status
            self._relay_once(loop.time())  # the workers sent their figures with "ready"
            announce(self.settings, port, len(self.slots))
            relay = loop.create_task(self._relay())
            keepers = [loop.create_task(self._keep(slot)) for slot in self.slots]
            await self._stopping.wait()
            status = await self._finish(keepers)
            relay.cancel()
            return status
        finally:
            for held_socket in held:
                held_socket.close()

    def _on_signal(self) -> None:
        self._stopping.set()
        self._signal_all(signal.SIGTERM)  # the second one tells the workers to hurry

    def _signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signum)

    async def _start_all(self) -> int:
        """Start every worker; 0 once all listen, else the failed worker's exit status."""
        for slot in self.slots:
            await self._spawn(slot)
        results = await asyncio.gather(*(self._started(slot) for slot in self.slots))
        failed = [
            (slot, status) for slot, status in zip(self.slots, results, strict=True) if status
        ]
        if not failed and not self._stopping.is_set():
            return 0
        self._signal_all(signal.SIGTERM)
        await self._reap(self.settings.server.drain_seconds + GRACE_SECONDS + KILL_SECONDS)
        if not failed:
            return 0  # stopped while starting
        slot, status = failed[0]
        log.error("worker %d did not start (exit status %d): the node stops", slot.index, status)
        return status

    async def _started(self, slot: Slot) -> int:
        """0 once ``slot``'s worker listens; its exit status if it ends first (1: too slow)."""
        assert slot.process is not None
        waits = {
            asyncio.ensure_future(slot.ready.wait()),
            asyncio.ensure_future(slot.process.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=START_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if slot.ready.is_set() or self._stopping.is_set():
            return 0
        if slot.process.returncode is None:
            log.error("worker %d did not listen within %g s", slot.index, START_SECONDS)
            return 1
        return slot.process.returncode or 1

    async def _spawn(self, slot: Slot) -> None:
        process = await asyncio.create_subprocess_exec(
            *WORKER_COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            limit=CONTROL_LIMIT,
        )
        assert process.stdin is not None
        plan = WorkerPlan(self.settings, slot.index, self.log_level)
        process.stdin.write(plan.to_line())
        slot.process = process
        slot.ready = asyncio.Event()
        slot.figures = None
        slot.listener = asyncio.get_running_loop().create_task(self._listen(slot, process))

    async def _listen(self, slot: Slot, process: asyncio.subprocess.Process) -> None:
        """Read one worker's messages until it closes its end."""
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            while line := await process.stdout.readline():
                try:
                    message = orjson.loads(line)
                    figures = Figures.from_json(orjson.dumps(message["figures"]))
                    if slot.process is process:
                        slot.figures, slot.reported_at = figures, loop.time()
                        if "ready" in message:
                            slot.ready.set()
                except (ValueError, TypeError, KeyError) as error:
                    log.error("worker %d sent a line that is not a message: %s", slot.index, error)
        except (OSError, ValueError) as error:  # ValueError: a line over CONTROL_LIMIT
            log.error("worker %d: its messages could not be read: %s", slot.index, error)
        except Exception:  # never end quietly: its figures would freeze without a word
            log.exception("worker %d: reading its messages failed", slot.index)

    async def _keep(self, slot: Slot) -> None:
        """Restart ``slot``'s worker whenever it dies, until the node stops."""
        while not self._stopping.is_set():
            try:
                await self._outlive(slot)
            except Exception:  # never end quietly: the node would lose a worker for good
                log.exception("worker %d: its supervision failed; carrying on", slot.index)
                await self._pause(RESTART_BACKOFF.maximum)

    async def _outlive(self, slot: Slot) -> None:
        """Wait for the worker to exit; unless the node is stopping, start it again."""
        process = slot.process
        assert process is not None
        started = asyncio.get_running_loop().time()
        status = await process.wait()
        if self._stopping.is_set():
            return
        self._retire(slot)
        loop = asyncio.get_running_loop()
        if loop.time() - started > 60:
            slot.crashes = 0
        delay = restart_delay(slot, loop.time())
        log.error(
            "worker %d (pid %d) %s; starting it again in %.1f s",
            slot.index,
            process.pid,
            describe_exit(status),
            delay,
        )
        if await self._pause(delay):
            return
        slot.crashes += 1
        slot.restarts.append(loop.time())
        self.restarts += 1
        await self._spawn(slot)
        if self._stopping.is_set() and slot.process is not None:
            slot.process.send_signal(signal.SIGTERM)  # the signal came while it was starting
            return
        if await self._started(slot) == 0 and not self._stopping.is_set():
            log.info("worker %d restarted (pid %s)", slot.index, slot.pid)

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the node stops; True if it stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    def _retire(self, slot: Slot) -> None:
        """A worker died: keep its counters in the node's totals, drop its gauges."""
        if slot.figures is not None:
            self.retired = self.retired + slot.figures.retired()
            slot.figures = None

    async def _relay(self) -> None:
        """Twice a second, tell every worker about the others."""
        while True:
            await asyncio.sleep(RELAY_SECONDS)
            try:
                self._relay_once(asyncio.get_running_loop().time())
            except Exception:  # never end quietly: the node's numbers would freeze
                self.relay_failures += 1
                log.exception("relaying the workers' figures failed; carrying on")

    def _relay_once(self, now: float) -> None:
        live = [slot for slot in self.slots if slot.running() and slot.ready.is_set()]
        for slot in live:
            process = slot.process
            assert process is not None and process.stdin is not None
            pipe = process.stdin.transport
            if pipe.is_closing() or pipe.get_write_buffer_size() > CONTROL_LIMIT:
                continue  # it is gone, or does not read: do not pile up what it won't read
            peers = peers_of(slot, live, self.retired, self.restarts, now)
            process.stdin.write(peers.to_json() + b"\n")

    async def _reap(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every worker to exit; kill those still running then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                await asyncio.wait_for(slot.process.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.error("worker %d (pid %d) outlived its drain: killed", slot.index, slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
                await slot.process.wait()

    async def _finish(self, keepers: list[asyncio.Task[None]]) -> int:
        """Wait for every worker's drain; kill the ones that outlast it. The exit status."""
        loop = asyncio.get_running_loop()
        window = self.settings.server.drain_seconds + GRACE_SECONDS + KILL_SECONDS
        deadline = loop.time() + window
        await asyncio.wait(keepers, timeout=window)  # after this, nothing is started again
        for keeper in keepers:
            keeper.cancel()
        await self._reap(max(0.0, deadline - loop.time()))
        failed = [s for s in self.slots if s.process is not None and s.process.returncode != 0]
        for slot in failed:
            assert slot.process is not None
            log.error("worker %d %s", slot.index, describe_exit(slot.process.returncode or 0))
        log.info("all %d workers stopped", len(self.slots))
        return 1 if failed else 0


def peers_of(slot: Slot, live: list[Slot], retired: Figures, restarts: int, now: float) -> Peers:
    """What ``slot``'s worker is told of the rest of the node."""
    others = [other for other in live if other is not slot]
    rest = retired
    for other in others:
        if other.figures is not None:
            rest = rest + other.figures
    return Peers(
        rest=rest,
        not_ready=next(filter(None, (not_ready(other, now) for other in others)), None),
        workers=len(live),
        restarts=restarts,
    )


def restart_delay(slot: Slot, now: float) -> float:
    """A backoff that grows with crashes in a row, within the restarts allowed a minute."""
    while slot.restarts and now - slot.restarts[0] > 60:
        slot.restarts.popleft()
    delay = RESTART_BACKOFF.delay(slot.crashes)
    if len(slot.restarts) >= RESTARTS_PER_MINUTE:
        wait = slot.restarts[0] + 60 - now
        log.error(
            "worker %d was restarted %d times in the last minute: waiting %.0f s",
            slot.index,
            len(slot.restarts),
            wait,
        )
        delay = max(delay, wait)
    return delay


def not_ready(slot: Slot, now: float) -> str | None:
    """Why a running worker is not ready to serve, or None."""
    figures = slot.figures
    if now - slot.reported_at > STALE_SECONDS:
        return f"worker {slot.index} has not reported for {now - slot.reported_at:.1f} s"
    if figures is None:
        return None  # it listens and has not sent its first figures yet
    if not figures.ready:
        return f"worker {slot.index} is draining"
    if figures.broker_up is False:
        return f"worker {slot.index} cannot reach the broker"
    return None


def describe_exit(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def reserve(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind ``host:port`` with ``SO_REUSEPORT`` and without listening: the workers' port.

    ``port`` 0 picks a free one, the same for every address of ``host``.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            held_socket = socket.socket(family, kind, proto)
            held.append(held_socket)
            held_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio
            held_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                held_socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            held_socket.bind((address[0], port, *address[2:]))
            port = held_socket.getsockname()[1]
    except OSError:
        for held_socket in held:
            held_socket.close()
        raise
    return held, port
