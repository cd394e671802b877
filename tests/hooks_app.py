"""A host application with cookie sessions, and the hooks through which it decides.

``POST /login?user=alice`` starts a session (the ``sid`` cookie). The hooks read the
forwarded ``Cookie`` header, find the session and answer as the application would: alice
may follow and publish in ``room:*``, bob only in ``room:bob``, a stranger nowhere. Other
hook paths misbehave on purpose: slow, redirecting, not JSON, wrong types.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import Future
from http.cookies import SimpleCookie
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse

ALLOWED = {"alice": ("room:",), "bob": ("room:bob",)}
INFO = {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}


class HookApp:
    """The application and what its hooks saw."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold_seconds = 0.0  # every hook call waits this long (a busy application)
        self.lifetime = 60.0
        self.app = self._build()

    def login(self, user: str) -> str:
        sid = secrets.token_urlsafe(16)
        self.sessions[sid] = user
        return f"sid={sid}"

    def user_of(self, call: dict[str, Any]) -> str | None:
        cookie = SimpleCookie(call.get("headers", {}).get("cookie", ""))
        morsel = cookie.get("sid")
        return None if morsel is None else self.sessions.get(morsel.value)

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/login")
        async def login(user: str, response: Response) -> dict[str, str]:
            sid = self.login(user).partition("=")[2]
            response.set_cookie("sid", sid, httponly=True)
            return {"user": user}

        @app.post("/hooks/{action}")
        async def hook(action: str, request: Request) -> Response:
            call = await request.json()
            self.calls.append(call)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.hold_seconds:
                    await asyncio.sleep(self.hold_seconds)
                return self._decide(action, call)
            finally:
                self.in_flight -= 1

        @app.post("/broken/slow")
        async def slow() -> dict[str, str]:
            await asyncio.sleep(5)
            return {"sub": "late"}

        @app.post("/broken/redirect")
        async def redirect() -> Response:
            return RedirectResponse("/hooks/subscribe", status_code=302)

        @app.post("/broken/not-json")
        async def not_json() -> Response:
            return PlainTextResponse("yes, fine")

        @app.post("/broken/wrong-types")
        async def wrong_types() -> Response:
            return JSONResponse({"sub": 42, "expires_at": "soon"})

        @app.post("/broken/error")
        async def error() -> Response:
            return PlainTextResponse("boom", status_code=500)

        return app

    def _decide(self, action: str, call: dict[str, Any]) -> Response:
        user = self.user_of(call)
        if user is None:
            return PlainTextResponse("who are you?", status_code=403)
        prefixes = ALLOWED[user]
        if action != "connect" and not all(
            channel.startswith(prefixes) for channel in call["channels"]
        ):
            return PlainTextResponse("not yours", status_code=403)
        answer = {"sub": user, "info": INFO[user], "expires_at": time.time() + self.lifetime}
        return JSONResponse(answer)


class RunningHookApp:
    def __init__(self, hooks: HookApp, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.hooks = hooks
        self.server = server
        self.thread = thread
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def start_hook_app() -> RunningHookApp:
    hooks = HookApp()
    config = uvicorn.Config(hooks.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    started: Future[int] = Future()

    def main() -> None:
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            task = asyncio.ensure_future(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                started.set_result(server.servers[0].sockets[0].getsockname()[1])
            else:
                started.set_exception(RuntimeError("the hook application did not start"))
            await task

        loop.run_until_complete(serve())
        loop.close()

    thread = threading.Thread(target=main, name="hook-app", daemon=True)
    thread.start()
    running = RunningHookApp(hooks, server, thread)
    running.port = started.result(timeout=20)
    return running
