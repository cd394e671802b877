"""The host application of the ``mount`` bench target: a FastAPI app with Tidings mounted
at ``/rt``, written as README "Inside your app" shows. fanout.py serves it with uvicorn
(uvloop, httptools, one worker) pinned to the server core, as it pins ``tidings serve``.

With ``BENCH_MOUNT_TUNE_COLLECTOR=1`` in its environment, the app calls
``tidings.asgi.tune_collector()`` once started, as docs/asgi.md shows ("The garbage
collector"): the same run with and without it measures what the call saves.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import tidings.asgi

PREFIX = "/rt"

realtime = tidings.asgi.app()


@asynccontextmanager
async def lifespan(web: FastAPI) -> AsyncIterator[None]:
    async with realtime:
        if os.environ.get("BENCH_MOUNT_TUNE_COLLECTOR") == "1":
            tidings.asgi.tune_collector()
        yield


app = FastAPI(lifespan=lifespan)
app.mount(PREFIX, realtime)
