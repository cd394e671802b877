"""One worker process of a node of several (``tidings serve --workers N``).

The supervisor (``workers.py``) starts ``python -m tidings.server.uvloop.worker`` and talks
to it over the worker's stdin and stdout, one line per message:

- supervisor to worker: first the ``WorkerPlan`` (pickled, base64), then, twice a second, the
  ``Peers`` as JSON: the rest of the node's figures and whether the other workers are ready;
- worker to supervisor: ``{"ready": port, "figures": ...}`` once it listens, then
  ``{"figures": ...}`` every second: its own numbers.

The worker listens on the node's port with ``SO_REUSEPORT``, like its siblings. SIGTERM or
SIGINT drains it as it drains a single server; a second one ends the drain. When its stdin
closes, the supervisor is gone (even killed): the worker drains and exits, rather than serve
on without anyone to restart it or to stop it. Its own stdout is pointed at stderr, so that
nothing printed by mistake can garble the supervisor's lines.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pickle
import signal
import sys
from dataclasses import dataclass

import orjson

from tidings.config import Settings
from tidings.exceptions import ConfigError
from tidings.server.collector import tune_collector
from tidings.server.core import logs
from tidings.server.core.figures import figures_of
from tidings.server.core.peers import Peers, PeersView
from tidings.server.uvloop.loop import install_loop
from tidings.server.uvloop.server import Server

log = logging.getLogger("tidings.server")

REPORT_SECONDS = 1.0
CONTROL_LIMIT = 1 << 20  # longest line from the supervisor (the node's figures)


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What a worker needs to know: the node's settings (its port chosen) and its number."""

    settings: Settings
    index: int
    log_level: str

    def to_line(self) -> bytes:
        return base64.b64encode(pickle.dumps(self)) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerPlan:
        # The line comes from our own parent process, over a pipe only it holds.
        plan = pickle.loads(base64.b64decode(line))
        if not isinstance(plan, cls):
            raise TypeError(f"expected a WorkerPlan, not {type(plan).__name__}")
        return plan


class Control:
    """The worker's end of the pipes to the supervisor."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, message: dict[str, object]) -> None:
        """Send a line, unless the supervisor is gone or has not read the lines before it."""
        writer = self.writer
        if not writer.is_closing() and writer.get_write_buffer_size() < CONTROL_LIMIT:
            writer.write(orjson.dumps(message) + b"\n")

    async def follow(self, peers: PeersView, gone: asyncio.Event) -> None:
        """Keep ``peers`` up to date until the supervisor closes the pipe, then set ``gone``."""
        try:
            while line := await self._next_line():
                try:
                    peers.latest = Peers.from_json(line)
                except (ValueError, TypeError) as error:
                    log.error("the supervisor sent a line that is not peers (%s); ignored", error)
        except Exception:  # never end quietly: without the pipe, the worker must not go on
            log.exception("reading the supervisor's messages failed")
        gone.set()

    async def _next_line(self) -> bytes:
        """The next line; b"" once the pipe is closed. A line over CONTROL_LIMIT is skipped."""
        while True:
            try:
                return await self.reader.readline()
            except ValueError as error:
                log.error("the supervisor sent a line too long to read (%s); skipped", error)


async def open_control(stdin: int, stdout: int) -> Control:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CONTROL_LIMIT)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin, "rb", buffering=0)
    )
    writer, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(stdout, "wb", buffering=0)
    )
    return Control(reader, writer)


async def serve(plan: WorkerPlan, stdin: int, stdout: int) -> None:
    """Serve until a signal or the supervisor's end, then drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    peers = PeersView()
    server = Server(plan.settings, peers=peers, reuse_port=True)

    def on_signal() -> None:
        if stop.is_set():
            server.hurry()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    control = await open_control(stdin, stdout)
    port = await server.start()
    tune_collector()
    node = server.node
    assert node is not None

    def report(**more: object) -> None:
        control.send({**more, "figures": orjson.Fragment(figures_of(node, True).to_json())})

    node.hub.timers.every(REPORT_SECONDS, report)
    supervisor_gone = asyncio.Event()
    following = loop.create_task(control.follow(peers, supervisor_gone))
    report(ready=port)  # with its figures: the node's numbers are whole once it listens
    log.info("worker %d serving (pid %d)", plan.index, os.getpid())
    waits = [loop.create_task(event.wait()) for event in (stop, supervisor_gone)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if supervisor_gone.is_set() and not stop.is_set():
            log.warning("worker %d: the supervisor is gone; draining", plan.index)
            stop.set()
    finally:
        for task in waits:
            task.cancel()
        await server.stop()  # the peers stay up to date while the clients leave
        following.cancel()


def main() -> int:
    """``python -m tidings.server.uvloop.worker``: read the plan on stdin, then serve."""
    stdout = os.dup(1)  # the supervisor's pipe, kept apart
    os.dup2(2, 1)  # a stray print() goes to the log, not into the supervisor's messages
    plan = WorkerPlan.from_line(sys.stdin.buffer.readline())
    logs.configure(plan.log_level, plan.settings.server.log_format, worker=plan.index)
    install_loop()
    try:
        asyncio.run(serve(plan, sys.stdin.fileno(), stdout))
    except ConfigError as error:
        print(f"tidings: worker {plan.index}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"tidings: worker {plan.index}: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the plan is unpickled as
    # tidings.server.uvloop.worker.WorkerPlan, which must be the class main() checks.
    from tidings.server.uvloop import worker

    sys.exit(worker.main())
