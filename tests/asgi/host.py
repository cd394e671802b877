"""``uvicorn tests.asgi.host:app``: a FastAPI app with Tidings mounted at ``/rt``, for tests
that need the mount in a process of its own (signals, clusters)."""

from __future__ import annotations

from fastapi import FastAPI

import tidings.asgi

realtime = tidings.asgi.app()  # settings from TIDINGS_* in the environment
app = FastAPI(lifespan=realtime.lifespan)
app.mount("/rt", realtime)


@app.post("/send")
async def send(channel: str, n: int) -> dict[str, str]:
    return {"id": await realtime.publish(channel, {"n": n})}
