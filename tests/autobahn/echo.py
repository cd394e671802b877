"""``python -m tests.autobahn.echo --port 0``: a node whose ``/ws`` echoes, for Autobahn.

Settings come from ``TIDINGS_*`` like ``tidings serve``; it logs the same ``listening on``
line, so the tests start it as they start the real server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvloop

from tidings.config import load_settings
from tidings.server.uvloop.echo import EchoSocket
from tidings.server.uvloop.server import Server, announce


async def serve(port: int) -> None:
    settings = load_settings(flags={"port": port})
    server = Server(settings, socket_class=EchoSocket)
    announce(settings, await server.start())
    try:
        await asyncio.Event().wait()  # until the test stops the process
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="?", help="'serve', as tidings takes it")
    parser.add_argument("--port", type=int, default=0)
    logging.basicConfig(level=logging.INFO)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
