"""Files the server ships: the browser client at ``/tidings.js`` and the lab at ``/lab``.

Each file is read once, at the first request, and answered from memory with an ETag, so a
browser revalidates cheaply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from tidings.exceptions import NotFound
from tidings.server.http import HttpConnection
from tidings.server.request import Request

if TYPE_CHECKING:
    from tidings.server.app import App

CONTENT_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: bytes
    etag: bytes


_cache: dict[str, StaticFile] = {}


def load(name: str) -> StaticFile:
    """The packaged file ``tidings/static/<name>``; NotFound if it is not shipped."""
    cached = _cache.get(name)
    if cached is not None:
        return cached
    try:
        body = resources.files("tidings").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(f"{name} is not part of this installation") from None
    suffix = name[name.rfind(".") :]
    digest = hashlib.sha256(body).hexdigest()[:16].encode()
    loaded = StaticFile(body, CONTENT_TYPES.get(suffix, b"application/octet-stream"), digest)
    _cache[name] = loaded
    return loaded


def serve_file(connection: HttpConnection, request: Request, name: str) -> None:
    file = load(name)
    etag = b'"' + file.etag + b'"'
    headers = [(b"ETag", etag), (b"Cache-Control", b"no-cache")]
    if (request.header(b"if-none-match") or "").encode() == etag:
        connection.respond(304, b"", headers)
    else:
        connection.respond(200, file.body, headers, file.content_type)


def handle_client_script(app: App, connection: HttpConnection, request: Request) -> None:
    serve_file(connection, request, "tidings.js")


def handle_lab(app: App, connection: HttpConnection, request: Request) -> None:
    """The transport lab: one page comparing the four techniques live (``server.lab``)."""
    if not app.settings.server.lab:
        raise NotFound("the transport lab is off on this server (server.lab = false)")
    serve_file(connection, request, "lab.html")
