"""The ``socketio`` bench target: python-socketio as its documentation shows for ASGI.

A ``socketio.AsyncServer(async_mode="asgi")`` wrapped in ``socketio.ASGIApp`` with a small
Starlette app beside it for the publish endpoint and the health check, under the same uvicorn
as the other uvicorn targets. A client names its channel in the connect packet's auth data
(``40{"channel": "bench"}``) and the ``connect`` handler puts it in that room; a publish is
``sio.emit("message", data, room=channel)``, sent as ``42["message", {...}]``. WebSocket only
(``transports=["websocket"]``, the load generator speaks Engine.IO v4 over WebSocket). It keeps
no history: a client that reconnects gets nothing it missed, and there is no poll of history
(Engine.IO's long-polling transport is a way to carry the same live packets, not a resume).
"""

from __future__ import annotations

from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"])


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
    if not auth or not isinstance(auth.get("channel"), str):
        return False  # refused: the client gets a CONNECT_ERROR packet
    await sio.enter_room(sid, auth["channel"])
    return True


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    await sio.emit("message", body["data"], room=body["channel"])
    return JSONResponse({"channel": body["channel"]})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


web = Starlette(
    routes=[Route("/api/publish", publish, methods=["POST"]), Route("/healthz", healthz)]
)
app = socketio.ASGIApp(sio, other_asgi_app=web)
