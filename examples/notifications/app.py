"""Notifications: each user follows a private channel over Server-Sent Events.

A FastAPI app with its own cookie sessions and Tidings mounted at ``/rt``. The mount asks the
app (a subscribe hook) whether the session's user may follow ``inbox:<user>``: no token in
the page. The page keeps its cursor in localStorage, so after a reload, or a day away within
history, it shows exactly the notifications it missed.

    .venv/bin/python examples/notifications/app.py --port 8000
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import Cookie, FastAPI, HTTPException, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, StringConstraints

import tidings.asgi
from tidings.asgi import Allow, HookCall, HookFunctions

HERE = Path(__file__).resolve().parent
DECISION_SECONDS = 300  # how long the mount may reuse a yes before asking again

UserName = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9_-]{1,32}$")
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

sessions: dict[str, str] = {}  # session id -> user; your framework's sessions in a real app


def inbox(user: str) -> str:
    return f"inbox:{user}"


def user_of(cookie_header: str | None) -> str | None:
    """The user of the ``sid`` cookie in a raw ``Cookie`` header, if it names a session."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "sid":
            return sessions.get(value)
    return None


async def may_subscribe(call: HookCall) -> Allow | None:
    """A signed-in user may follow their own inbox, and nothing else."""
    user = user_of(dict(call.headers).get("cookie"))
    if user is not None and call.channels == (inbox(user),):
        return Allow(sub=user, info={"name": user}, expires_at=time.time() + DECISION_SECONDS)
    return None  # 403


realtime = tidings.asgi.app(HERE / "tidings.toml", hooks=HookFunctions(subscribe=may_subscribe))
app = FastAPI(lifespan=realtime.lifespan)
app.mount("/rt", realtime)


class SignIn(BaseModel):
    name: UserName


class Notification(BaseModel):
    to: UserName
    text: Text


@app.get("/")
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


@app.post("/login")
async def login(sign_in: SignIn, response: Response) -> dict[str, str]:
    sid = secrets.token_urlsafe(24)
    sessions[sid] = sign_in.name
    response.set_cookie("sid", sid, httponly=True, samesite="lax")
    return {"user": sign_in.name}


@app.get("/me")
async def me(sid: str | None = Cookie(default=None)) -> dict[str, str]:
    user = sessions.get(sid or "")
    if user is None:
        raise HTTPException(401, "not signed in")
    return {"user": user, "channel": inbox(user)}


@app.post("/notify")
async def notify(notification: Notification) -> dict[str, str]:
    """What the rest of your backend does when something happens to a user: publish, in
    process, to their inbox. The example lets anyone call it, to play both sides."""
    data = {"text": notification.text, "at": time.time()}
    return {"id": await realtime.publish(inbox(notification.to), data)}


def main() -> None:
    parser = argparse.ArgumentParser(description="The notifications example of Tidings.")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port)


if __name__ == "__main__":
    main()
