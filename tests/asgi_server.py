"""The mount under uvicorn, as the tests run it: a FastAPI app with Tidings at a prefix.

``start_mounted`` gives the same handle as ``tests.conftest.start_server`` (URL, the node,
``call`` to inspect it, ``stop``), with every URL under the prefix, so a test written for
``tidings serve`` runs unchanged against the mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.conftest import RunningServer
from tidings.asgi import TidingsApp
from tidings.config import Settings
from tidings.server.core.node import Node
from tidings.server.core.routes import Routes

PREFIX = "/rt"


class MountedEdge:
    """What tests read of a standalone server's edge: its routes."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes


class MountedServer:
    """The ``server`` attribute of the handle: the mounted app, started by its lifespan."""

    def __init__(self, tidings_app: TidingsApp, uvicorn_server: uvicorn.Server) -> None:
        self.app = tidings_app
        self.uvicorn = uvicorn_server
        self.port = 0

    @property
    def node(self) -> Node | None:
        return self.app.node

    @property
    def edge(self) -> MountedEdge | None:
        return None if self.app.routes is None else MountedEdge(self.app.routes)

    async def stop(self) -> None:
        """Drain the node, as the host application's shutdown would, then stop uvicorn."""
        await self.app.stop()
        self.uvicorn.should_exit = True


class RunningMount(RunningServer):
    """The handle of ``tests.conftest``, for the mount: uvicorn stops its own loop."""

    def stop(self) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=20)
        self.thread.join(timeout=20)


def host_app(tidings_app: TidingsApp) -> FastAPI:
    """A FastAPI application of its own, with Tidings mounted under the prefix."""
    host = FastAPI(lifespan=tidings_app.lifespan)

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    host.mount(PREFIX, tidings_app)
    return host


def start_mounted(settings: Settings) -> RunningMount:
    """Serve the host app with uvicorn on 127.0.0.1:0 in a thread; return once it listens."""
    tidings_app = TidingsApp(settings)
    return serve_in_thread(host_app(tidings_app), tidings_app)


def serve_in_thread(host: Any, tidings_app: TidingsApp) -> RunningMount:
    """Serve ``host`` (with ``tidings_app`` mounted at the prefix) with uvicorn on
    127.0.0.1:0 in a thread; return once it listens."""
    settings = tidings_app.settings
    config = uvicorn.Config(
        host,
        host="127.0.0.1",
        port=0,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        log_level="warning",
        lifespan="on",
        proxy_headers=False,  # the node reads X-Forwarded-For itself (server.trusted_proxies)
        timeout_graceful_shutdown=int(settings.server.drain_seconds) + 2,
    )
    server = uvicorn.Server(config)
    mounted = MountedServer(tidings_app, server)
    started: Future[asyncio.AbstractEventLoop] = Future()

    async def serve() -> None:
        await server.serve()

    def main() -> None:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        task = loop.create_task(serve())

        def check() -> None:
            if server.started:
                mounted.port = server.servers[0].sockets[0].getsockname()[1]
                started.set_result(loop)
            elif task.done():
                started.set_exception(RuntimeError("uvicorn did not start"))
            else:
                loop.call_later(0.01, check)

        loop.call_soon(check)
        loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=main, name="tidings-mount", daemon=True)
    thread.start()
    loop = started.result(timeout=20)
    return RunningMount(mounted, loop, thread, PREFIX)  # type: ignore[arg-type]
