"""The ``fastapi-sse`` bench target: FastAPI's own Server-Sent Events (``fastapi.sse``).

A path operation with ``response_class=EventSourceResponse`` that ``yield``s, as FastAPI's
"Server-Sent Events (SSE)" tutorial shows, under the same uvicorn as the other uvicorn targets.
FastAPI's documentation shows no way to feed one event to many streams, so the fan-out is the
plainest in-process one: an ``asyncio.Queue`` per open stream, and a publish puts the event in
every queue of its channel. Each event is serialized once per publish and yielded as
``ServerSentEvent(raw_data=...)``, so FastAPI does not encode it again for every stream. SSE
only: it keeps no history, so a client cannot resume (``Last-Event-ID`` is ignored) and there
is nothing to poll.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

app = FastAPI()
streams: dict[str, set[asyncio.Queue[str]]] = {}


class Publish(BaseModel):
    channel: str
    data: Any


@app.get("/sse", response_class=EventSourceResponse)
async def sse(channel: str) -> AsyncIterable[ServerSentEvent]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    streams.setdefault(channel, set()).add(queue)
    try:
        while True:
            yield ServerSentEvent(raw_data=await queue.get())
    finally:
        subscribers = streams.get(channel)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del streams[channel]


@app.post("/api/publish")
async def publish(body: Publish) -> dict[str, str]:
    raw = json.dumps(body.data, separators=(",", ":"))
    for queue in streams.get(body.channel, ()):
        queue.put_nowait(raw)
    return {"channel": body.channel}


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok\n"
