"""The host application the hypercorn tests serve: Starlette with Tidings mounted at ``/rt``.

- ``/?streams=N`` is a page that opens ``N`` ``EventSource`` streams on the channels
  ``stream-0`` ... ``stream-N-1`` and keeps in ``window`` how many opened and what each
  received, so that a browser test can wait on them.
- ``/streams`` says, for every SSE request and WebSocket that reached the mount, its scope's
  type, HTTP version and client port as the ASGI server put them there: one port for every
  stream means one connection, its streams multiplexed.

It runs as ``hypercorn tests.asgi.hypercorn_host:app``; Tidings reads its settings from
``TIDINGS_*`` as ``tidings.asgi.app()`` does in any host.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

import tidings.asgi
from tidings.asgi.types import Receive, Scope, Send

PREFIX = "/rt"

PAGE = """<!doctype html>
<title>streams</title>
<script>
  const count = Number(new URLSearchParams(location.search).get("streams"));
  window.opened = 0;
  window.received = {};
  window.sources = [];
  for (let index = 0; index < count; index++) {
    const source = new EventSource(`/rt/sse?channel=stream-${index}`);
    source.onopen = () => { window.opened += 1; };
    source.onmessage = (message) => { window.received[index] = JSON.parse(message.data); };
    window.sources.push(source);
  }
</script>
"""


class StreamLog:
    """In front of the mount: notes the HTTP version and client port of each stream."""

    def __init__(self, app: tidings.asgi.TidingsApp) -> None:
        self.app = app
        self.seen: list[dict[str, object]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path") in (f"{PREFIX}/sse", f"{PREFIX}/ws"):
            client = scope.get("client")
            port = client[1] if client else None
            seen = {"type": scope["type"], "http_version": scope["http_version"]}
            self.seen.append({**seen, "client_port": port})
        await self.app(scope, receive, send)


realtime = tidings.asgi.app()
stream_log = StreamLog(realtime)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def streams(request: Request) -> JSONResponse:
    return JSONResponse(stream_log.seen)


app = Starlette(
    routes=[Route("/", page), Route("/streams", streams), Mount(PREFIX, app=stream_log)],
    lifespan=realtime.lifespan,
)
