"""Job progress: the app starts a worker process, the worker publishes its progress with
``tidings.publish``, and the page shows a progress bar that survives reloads and network drops.

A FastAPI app with Tidings mounted at ``/rt``. ``POST /jobs`` publishes the job's first event
(queued) itself, starts ``worker.py`` and answers with the job's channel and that event's
cursor: the page follows the channel from there, so no step can slip by before it subscribes.

    .venv/bin/python examples/jobs/app.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse

import tidings.asgi

HERE = Path(__file__).resolve().parent

# Publishing needs one of these keys (the workers get it in their environment). In
# production it comes from your secret store; a fresh one per start is enough for the example.
os.environ.setdefault("TIDINGS_SERVER_API_KEYS", secrets.token_urlsafe(24))
API_KEY = os.environ["TIDINGS_SERVER_API_KEYS"].split(",")[0].strip()

realtime = tidings.asgi.app(HERE / "tidings.toml")
jobs: set[asyncio.Task[None]] = set()  # one per running worker


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with realtime:
        yield
        for job in jobs:  # the app is stopping: so are the workers it started
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


app = FastAPI(lifespan=lifespan)
app.mount("/rt", realtime)


@app.get("/")
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


@app.post("/jobs")
async def start_job(request: Request) -> dict[str, str]:
    job = secrets.token_urlsafe(12)
    channel = f"jobs:{job}"
    cursor = await realtime.publish(channel, {"step": 0, "percent": 0, "state": "queued"})
    host, port = request.scope["server"]  # this app's own address, wherever the page came from
    running = asyncio.create_task(run_worker(job, f"http://{host}:{port}/rt"))
    jobs.add(running)
    running.add_done_callback(jobs.discard)
    return {"job": job, "channel": channel, "cursor": cursor}


async def run_worker(job: str, url: str) -> None:
    """Run ``worker.py`` for ``job`` until it ends; cancelled, stop it."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "worker.py"),
        job,
        "--url",
        url,
        env={**os.environ, "JOBS_TIDINGS_API_KEY": API_KEY},
    )
    try:
        await worker.wait()
    finally:
        if worker.returncode is None:
            worker.terminate()
            await worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="The job progress example of Tidings.")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port)


if __name__ == "__main__":
    main()
