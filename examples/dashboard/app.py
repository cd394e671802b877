"""A live dashboard: numbers pushed every second, which still arrive behind a proxy that
blocks WebSocket and buffers Server-Sent Events, because tidings.js falls back to long polling.

One process runs the app (FastAPI, with Tidings mounted at ``/rt`` and a task publishing the
numbers) and, in front of it, the blocking proxy of ``blocking_proxy.py``. Open the proxy's
address to see the fallback, the app's own to see SSE.

    .venv/bin/python examples/dashboard/app.py --port 8000 --app-port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import blocking_proxy
import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse

import tidings.asgi

HERE = Path(__file__).resolve().parent
CHANNEL = "dashboard:shop"
log = logging.getLogger("dashboard")

realtime = tidings.asgi.app(HERE / "tidings.toml")


class Shop:
    """The numbers on the dashboard. Simulated here (a random walk); yours come from your
    database, your queue, your metrics."""

    def __init__(self) -> None:
        self.tick = 0
        self.orders = 120.0
        self.p95 = 180.0
        self.carts = 900.0

    def sample(self) -> dict[str, Any]:
        self.tick += 1
        self.orders = max(0.0, self.orders + random.uniform(-8, 8))
        self.p95 = min(900.0, max(80.0, self.p95 + random.uniform(-15, 15)))
        self.carts = max(0.0, self.carts + random.uniform(-30, 30))
        return {
            "tick": self.tick,
            "at": time.time(),
            "orders_per_minute": round(self.orders),
            "checkout_p95_ms": round(self.p95),
            "open_carts": round(self.carts),
        }


async def publish_every_second() -> None:
    """Publish the numbers once a second for the app's whole life; a failed publish (the
    broker away) is logged and the next second tries again."""
    shop = Shop()
    while True:
        try:
            await realtime.publish(CHANNEL, shop.sample())
        except Exception:
            log.exception("could not publish the dashboard's numbers")
        await asyncio.sleep(1)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with realtime:
        publisher = asyncio.create_task(publish_every_second())
        yield
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher


app = FastAPI(lifespan=lifespan)
app.mount("/rt", realtime)


@app.get("/")
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


async def serve(port: int, app_port: int) -> None:
    listener = socket.create_server(("127.0.0.1", app_port))  # bound now: its port is known
    upstream = listener.getsockname()[1]
    proxy = await blocking_proxy.start(port, upstream)
    shown = proxy.sockets[0].getsockname()[1]
    print(
        f"Dashboard behind the blocking proxy at http://127.0.0.1:{shown}/ "
        f"(the app itself at http://127.0.0.1:{upstream}/)",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    async with proxy:
        await server.serve(sockets=[listener])


def main() -> None:
    parser = argparse.ArgumentParser(description="The live dashboard example of Tidings.")
    parser.add_argument("--port", type=int, default=8000, help="the proxy's; 0 picks one")
    parser.add_argument("--app-port", type=int, default=0, help="the app's; 0 picks one")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.app_port))


if __name__ == "__main__":
    main()
