"""A chat room: Tidings mounted in a FastAPI app that mints the connection tokens.

The page signs in with a name, asks ``POST /token`` for a JWT (PyJWT, the mount's
``auth.token_secret``), and tidings.js connects over WebSocket with it: messages are published
by the browser itself, and presence says who is in the room.

    .venv/bin/python examples/chat/app.py --port 8000
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path
from typing import Annotated

import jwt
import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, StringConstraints

import tidings.asgi

HERE = Path(__file__).resolve().parent
ROOM = "chat:lobby"
TOKEN_SECONDS = 600  # short-lived: tidings.js asks /token again when the server refuses it

# One secret shared by the code that signs tokens (here) and the mount that checks them. In
# production it comes from your secret store; a fresh one per start is enough for the example.
os.environ.setdefault("TIDINGS_AUTH_TOKEN_SECRET", secrets.token_urlsafe(32))
SECRET = os.environ["TIDINGS_AUTH_TOKEN_SECRET"]

realtime = tidings.asgi.app(HERE / "tidings.toml")
app = FastAPI(lifespan=realtime.lifespan)
app.mount("/rt", realtime)  # /rt/ws, /rt/tidings.js, ...


class SignIn(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


@app.get("/")
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


@app.post("/token")
async def token(sign_in: SignIn) -> dict[str, str]:
    """A connection token for the room. A real app would take the user from its session;
    the example trusts the name it is given."""
    claims = {
        "sub": sign_in.name.casefold(),
        "exp": int(time.time()) + TOKEN_SECONDS,
        "channels": [ROOM],
        "publish": [ROOM],
        "info": {"name": sign_in.name},
    }
    return {"token": jwt.encode(claims, SECRET, algorithm="HS256")}


def main() -> None:
    parser = argparse.ArgumentParser(description="The chat example of Tidings.")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port)


if __name__ == "__main__":
    main()
