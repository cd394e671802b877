"""The ``sse-starlette`` bench target: what an application writes without Tidings.

sse-starlette's ``EventSourceResponse`` over the ``broadcaster`` package's in-memory backend,
as both projects' documentation shows, in a Starlette app under the same uvicorn as the
``mount`` target. It answers the load generator's Tidings-shaped requests
(``GET /sse?channel=``, ``POST /api/publish {"channel", "data"}``) so the same load runs
against it. SSE only: it keeps no history, so a client cannot resume (``Last-Event-ID`` is
ignored) and there is nothing to poll.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcaster import Broadcast
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

broadcast = Broadcast("memory://")


async def events(channel: str) -> AsyncIterator[dict[str, str]]:
    async with broadcast.subscribe(channel=channel) as subscriber:
        async for event in subscriber:
            yield {"data": event.message}


async def sse(request: Request) -> EventSourceResponse:
    return EventSourceResponse(events(request.query_params["channel"]))


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    await broadcast.publish(channel=body["channel"], message=json.dumps(body["data"]))
    return JSONResponse({"channel": body["channel"]})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    try:
        yield
    finally:
        await broadcast.disconnect()


app = Starlette(
    routes=[
        Route("/sse", sse),
        Route("/api/publish", publish, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
