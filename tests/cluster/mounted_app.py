"""The host application the cluster tests run under uvicorn, as a user would write it: a
FastAPI app with Tidings mounted at ``/rt``, configured from ``TIDINGS_*`` (the broker from
``TIDINGS_SERVER_BROKER``), and an endpoint of its own that publishes in process."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import tidings.asgi

PREFIX = "/rt"

realtime = tidings.asgi.app()
app = FastAPI(lifespan=realtime.lifespan)
app.mount(PREFIX, realtime)


@app.post("/host/publish/{channel}")
async def publish(channel: str, data: dict[str, Any]) -> dict[str, str]:
    """The host's own route: ``await realtime.publish(...)``, no HTTP round trip to Tidings."""
    return {"id": await realtime.publish(channel, data)}
