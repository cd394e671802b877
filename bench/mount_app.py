"""The host application of the ``mount`` bench target: a FastAPI app with Tidings mounted
at ``/rt``, written as README "Inside your app" shows. fanout.py serves it with uvicorn
(uvloop, httptools, one worker) pinned to the server core, as it pins ``tidings serve``.
"""

from fastapi import FastAPI

import tidings.asgi

PREFIX = "/rt"

realtime = tidings.asgi.app()
app = FastAPI(lifespan=realtime.lifespan)
app.mount(PREFIX, realtime)
